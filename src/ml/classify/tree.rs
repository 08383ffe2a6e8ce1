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
        /// Engaged rows among `samples` (older stored trees have none: 0).
        #[serde(default)]
        positive: u32,
    },
    Split {
        feature: u8,
        threshold: f64,
        left: Box<TreeNode>,
        right: Box<TreeNode>,
    },
}

/// How a tree grows: its deepest level, the fewest rows a split may leave on
/// either side, and whether two sibling leaves of the same majority class
/// become one (right for a classifier; a scorer keeps their shares apart).
#[derive(Debug, Clone, Copy)]
pub struct GrowRule {
    pub max_depth: usize,
    pub min_leaf: usize,
    pub merge: bool,
}

/// The rows `rows` of `x`, copied row by row (`select` stacks them one view
/// at a time, a third of a node's time).
fn gather(x: &Array2<f64>, rows: &[usize]) -> Array2<f64> {
    let f = x.ncols();
    let mut out = Array2::zeros((rows.len(), f));
    for (mut to, &i) in out.rows_mut().into_iter().zip(rows) {
        to.assign(&x.row(i));
    }
    out
}

impl TreeNode {
    pub(super) fn grow(
        x: &Array2<f64>,
        y: &[bool],
        rows: Vec<usize>,
        depth: usize,
        max_depth: usize,
    ) -> Result<TreeNode, ClassifyError> {
        let rule = GrowRule {
            max_depth,
            min_leaf: 1,
            merge: true,
        };
        TreeNode::grow_with(x, y, rows, depth, &rule)
    }

    pub fn grow_with(
        x: &Array2<f64>,
        y: &[bool],
        rows: Vec<usize>,
        depth: usize,
        rule: &GrowRule,
    ) -> Result<TreeNode, ClassifyError> {
        let pos = rows.iter().filter(|&&i| y[i]).count();
        let leaf = TreeNode::Leaf {
            // The majority class; ties go to "not engaged" (class 0), as scikit-learn.
            engaged: pos * 2 > rows.len(),
            samples: rows.len() as u32,
            positive: pos as u32,
        };
        if depth >= rule.max_depth
            || pos == 0
            || pos == rows.len()
            || rows.len() < 2 * rule.min_leaf.max(1)
        {
            return Ok(leaf);
        }
        let ds = Dataset::new(
            gather(x, &rows),
            rows.iter()
                .map(|&i| usize::from(y[i]))
                .collect::<Array1<usize>>(),
        );
        let stump = DecisionTree::params()
            .max_depth(Some(1))
            .min_weight_leaf(rule.min_leaf.max(1) as f32)
            .fit(&ds)?;
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
        if left.len() < rule.min_leaf.max(1) || right.len() < rule.min_leaf.max(1) {
            return Ok(leaf);
        }
        // The two sides share nothing: grown in parallel (each stump still
        // sorts its node's rows, as linfa-trees does).
        let (left, right) = rayon::join(
            || TreeNode::grow_with(x, y, left, depth + 1, rule),
            || TreeNode::grow_with(x, y, right, depth + 1, rule),
        );
        let (left, right) = (left?, right?);
        // Two leaves that say the same thing are one leaf (predictions unchanged).
        if let (
            true,
            TreeNode::Leaf {
                engaged: a,
                samples: na,
                positive: pa,
            },
            TreeNode::Leaf {
                engaged: b,
                samples: nb,
                positive: pb,
            },
        ) = (rule.merge, &left, &right)
        {
            if a == b {
                return Ok(TreeNode::Leaf {
                    engaged: *a,
                    samples: na + nb,
                    positive: pa + pb,
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
        match self.leaf(row) {
            TreeNode::Leaf { engaged, .. } => *engaged,
            TreeNode::Split { .. } => false,
        }
    }

    /// The engaged share of the leaf `row` falls in (Laplace-smoothed).
    pub fn score(&self, row: &[f64]) -> f64 {
        match self.leaf(row) {
            TreeNode::Leaf {
                samples, positive, ..
            } => (f64::from(*positive) + 1.0) / (f64::from(*samples) + 2.0),
            TreeNode::Split { .. } => 0.5,
        }
    }

    fn leaf(&self, row: &[f64]) -> &TreeNode {
        let mut node = self;
        loop {
            match node {
                TreeNode::Leaf { .. } => return node,
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
