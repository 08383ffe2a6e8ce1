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

/// Promotes the challenger when it scores strictly higher than the champion
/// (or there is none, or it could not be scored on this split) and, when
/// `popularity` is given, strictly higher than the popularity baseline on the
/// same split.
pub fn decide(
    metric: PromoteMetric,
    k: usize,
    challenger: f64,
    champion: Option<Standing>,
    popularity: Option<f64>,
) -> Decision {
    let name = metric.name();
    match (champion, popularity) {
        (Some(c), _) if challenger <= c.score => Decision {
            promote: false,
            why: format!(
                "kept champion v{}: {name}@{k} {challenger:.4} ≤ {:.4} on the same held-out data",
                c.id, c.score
            ),
        },
        (c, Some(p)) if challenger <= p => Decision {
            promote: false,
            why: match c {
                Some(c) => format!(
                    "kept champion v{}: {name}@{k} {challenger:.4} ≤ popularity {p:.4} on the same held-out data",
                    c.id
                ),
                None => format!(
                    "not promoted: {name}@{k} {challenger:.4} ≤ popularity {p:.4} on the same held-out data; popularity serves until a model beats it"
                ),
            },
        },
        (Some(c), _) => Decision {
            promote: true,
            why: format!(
                "promoted: {name}@{k} {challenger:.4} > champion v{} {:.4} on the same held-out data{}",
                c.id,
                c.score,
                beats(popularity)
            ),
        },
        (None, _) => Decision {
            promote: true,
            why: format!(
                "promoted: first model ({name}@{k} {challenger:.4}{})",
                beats(popularity)
            ),
        },
    }
}

fn beats(popularity: Option<f64>) -> String {
    popularity.map_or_else(String::new, |p| format!(" > popularity {p:.4}"))
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
        let up = decide(PromoteMetric::Ndcg, 10, 0.26, c, None);
        assert!(up.promote);
        assert_eq!(
            up.why,
            "promoted: ndcg@10 0.2600 > champion v4 0.2500 on the same held-out data"
        );
        let tie = decide(PromoteMetric::Ndcg, 10, 0.25, c, None);
        assert!(!tie.promote && tie.why.starts_with("kept champion v4"));
        assert!(!decide(PromoteMetric::Map, 5, 0.1, c, None).promote);
        let first = decide(PromoteMetric::Recall, 10, 0.01, None, None);
        assert!(first.promote && first.why == "promoted: first model (recall@10 0.0100)");
    }

    #[test]
    fn a_model_must_also_beat_popularity() {
        let first = decide(PromoteMetric::Ndcg, 10, 0.106, None, Some(0.124));
        assert!(!first.promote);
        assert_eq!(
            first.why,
            "not promoted: ndcg@10 0.1060 ≤ popularity 0.1240 on the same held-out data; \
             popularity serves until a model beats it"
        );
        let c = Some(Standing { id: 4, score: 0.10 });
        let over_champion = decide(PromoteMetric::Ndcg, 10, 0.11, c, Some(0.12));
        assert!(!over_champion.promote);
        assert!(
            over_champion.why.contains("≤ popularity 0.1200"),
            "{}",
            over_champion.why
        );
        let both = decide(PromoteMetric::Ndcg, 10, 0.13, c, Some(0.12));
        assert!(both.promote);
        assert_eq!(
            both.why,
            "promoted: ndcg@10 0.1300 > champion v4 0.1000 on the same held-out data > popularity 0.1200"
        );
        let tie = decide(PromoteMetric::Ndcg, 10, 0.12, None, Some(0.12));
        assert!(!tie.promote, "a tie is not a win");
        assert!(decide(PromoteMetric::Ndcg, 10, 0.2, None, Some(0.12)).promote);
    }
}
