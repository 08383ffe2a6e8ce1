//! The engagement decision tree, grown node by node with linfa-trees.

use linfa_trees::DecisionTree;

use super::*;

/// A decision tree grown one node at a time, each split chosen by linfa-trees on
/// that node's rows alone. (linfa-trees 0.8 grows the whole tree over row masks
/// and, when deciding whether the next sorted value differs, looks at the next
/// sample of the whole data set even when that sample is outside the node: the
/// boundary between two values is then skipped, so inside a node most splits on
/// discrete features — buffering, skipped — are never tried. A depth-1 tree on
/// the node's own rows has no mask, so every boundary is tried, at the midpoint
/// between neighbouring values as scikit-learn does.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TreeNode {
    Leaf {
        engaged: bool,
        samples: u32,
    },
    Split {
        feature: u8,
        threshold: f64,
        left: Box<TreeNode>,
        right: Box<TreeNode>,
    },
}

impl TreeNode {
    pub(super) fn grow(
        x: &Array2<f64>,
        y: &[bool],
        rows: Vec<usize>,
        depth: usize,
        max_depth: usize,
    ) -> Result<TreeNode, ClassifyError> {
        let pos = rows.iter().filter(|&&i| y[i]).count();
        let leaf = TreeNode::Leaf {
            // The majority class; ties go to "not engaged" (class 0), as scikit-learn.
            engaged: pos * 2 > rows.len(),
            samples: rows.len() as u32,
        };
        if depth >= max_depth || pos == 0 || pos == rows.len() {
            return Ok(leaf);
        }
        let ds = Dataset::new(
            x.select(Axis(0), &rows),
            rows.iter()
                .map(|&i| usize::from(y[i]))
                .collect::<Array1<usize>>(),
        );
        let stump = DecisionTree::params().max_depth(Some(1)).fit(&ds)?;
        // linfa prunes a split whose two sides predict the same class, but keeps
        // its feature, threshold and impurity decrease: the split is taken when
        // it lowers impurity at all (as scikit-learn), the children may then
        // separate the classes further.
        let (feature, threshold, gain) = stump.root_node().split();
        if gain <= 0.0 {
            return Ok(leaf);
        }
        let (left, right): (Vec<usize>, Vec<usize>) = rows
            .into_iter()
            .partition(|&i| x[[i, feature]] <= threshold);
        if left.is_empty() || right.is_empty() {
            return Ok(leaf);
        }
        let left = TreeNode::grow(x, y, left, depth + 1, max_depth)?;
        let right = TreeNode::grow(x, y, right, depth + 1, max_depth)?;
        // Two leaves that say the same thing are one leaf (predictions unchanged).
        if let (
            TreeNode::Leaf {
                engaged: a,
                samples: na,
            },
            TreeNode::Leaf {
                engaged: b,
                samples: nb,
            },
        ) = (&left, &right)
        {
            if a == b {
                return Ok(TreeNode::Leaf {
                    engaged: *a,
                    samples: na + nb,
                });
            }
        }
        Ok(TreeNode::Split {
            feature: feature as u8,
            threshold,
            left: Box::new(left),
            right: Box::new(right),
        })
    }

    pub fn predict(&self, row: &[f64]) -> bool {
        let mut node = self;
        loop {
            match node {
                TreeNode::Leaf { engaged, .. } => return *engaged,
                TreeNode::Split {
                    feature,
                    threshold,
                    left,
                    right,
                } => {
                    node = if row
                        .get(usize::from(*feature))
                        .is_some_and(|v| v <= threshold)
                    {
                        left
                    } else {
                        right
                    }
                }
            }
        }
    }

    /// (depth, leaves)
    pub fn shape(&self) -> (usize, usize) {
        match self {
            TreeNode::Leaf { .. } => (0, 1),
            TreeNode::Split { left, right, .. } => {
                let (dl, ll) = left.shape();
                let (dr, lr) = right.shape();
                (1 + dl.max(dr), ll + lr)
            }
        }
    }
}
