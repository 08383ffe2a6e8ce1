//! Whether a challenger replaces the champion: a pure decision on their scores
//! on the same held-out split, with the words that explain it.

use serde::{Deserialize, Serialize};

/// Held-out metric that decides promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromoteMetric {
    Ndcg,
    Map,
    Precision,
    Recall,
}

impl PromoteMetric {
    pub fn name(self) -> &'static str {
        match self {
            PromoteMetric::Ndcg => "ndcg",
            PromoteMetric::Map => "map",
            PromoteMetric::Precision => "precision",
            PromoteMetric::Recall => "recall",
        }
    }
}

/// A champion's score on the challenger's split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    pub id: u64,
    pub score: f64,
}

/// What the evaluator decides for a challenger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub promote: bool,
    /// Why, in words (recorded with the version).
    pub why: String,
}

/// Promotes the challenger when there is no champion (or it could not be
/// scored on this split), or when the challenger scores strictly higher.
pub fn decide(
    metric: PromoteMetric,
    k: usize,
    challenger: f64,
    champion: Option<Standing>,
) -> Decision {
    let name = metric.name();
    match champion {
        Some(c) if challenger > c.score => Decision {
            promote: true,
            why: format!(
                "promoted: {name}@{k} {challenger:.4} > champion v{} {:.4} on the same held-out data",
                c.id, c.score
            ),
        },
        Some(c) => Decision {
            promote: false,
            why: format!(
                "kept champion v{}: {name}@{k} {challenger:.4} ≤ {:.4} on the same held-out data",
                c.id, c.score
            ),
        },
        None => Decision {
            promote: true,
            why: format!("promoted: first model ({name}@{k} {challenger:.4})"),
        },
    }
}

/// The metric of `m` that promotion compares.
pub fn score(m: &super::metrics::RankingMetrics, metric: PromoteMetric) -> f64 {
    match metric {
        PromoteMetric::Ndcg => m.ndcg,
        PromoteMetric::Map => m.map,
        PromoteMetric::Precision => m.precision,
        PromoteMetric::Recall => m.recall,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_strictly_better_challenger_replaces_the_champion() {
        let c = Some(Standing { id: 4, score: 0.25 });
        let up = decide(PromoteMetric::Ndcg, 10, 0.26, c);
        assert!(up.promote);
        assert_eq!(
            up.why,
            "promoted: ndcg@10 0.2600 > champion v4 0.2500 on the same held-out data"
        );
        let tie = decide(PromoteMetric::Ndcg, 10, 0.25, c);
        assert!(!tie.promote && tie.why.starts_with("kept champion v4"));
        assert!(!decide(PromoteMetric::Map, 5, 0.1, c).promote);
        let first = decide(PromoteMetric::Recall, 10, 0.01, None);
        assert!(first.promote && first.why == "promoted: first model (recall@10 0.0100)");
    }
}
