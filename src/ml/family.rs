//! The recommender families the trainer tries, behind one type: implicit ALS,
//! EASE, item-kNN and popularity, each fitted on a user × item matrix and
//! scoring every item for a user from their row (ALS) or their history (the
//! item × item families, which need no per-user state: a new event changes the
//! next list at once).

use serde::{Deserialize, Serialize};

use super::als::{AlsError, AlsModel, AlsParams};
use super::ease::{EaseError, EaseModel, EaseParams};
use super::knn::{KnnError, KnnModel, KnnParams};
use super::sparse::Csr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Als,
    Ease,
    Knn,
    Popularity,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Als, Family::Ease, Family::Knn, Family::Popularity];
    /// The families the daemon's search may try (popularity is the baseline
    /// every candidate must beat, not a challenger).
    pub const SEARCHED: [Family; 3] = [Family::Als, Family::Ease, Family::Knn];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Als => "als",
            Family::Ease => "ease",
            Family::Knn => "knn",
            Family::Popularity => "popularity",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One family's hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "family", rename_all = "lowercase")]
pub enum Params {
    Als(AlsParams),
    Ease(EaseParams),
    Knn(KnnParams),
    Popularity,
}

impl Params {
    pub fn family(&self) -> Family {
        match self {
            Params::Als(_) => Family::Als,
            Params::Ease(_) => Family::Ease,
            Params::Knn(_) => Family::Knn,
            Params::Popularity => Family::Popularity,
        }
    }

    /// A short human form: `als f32 λ0.1 α1 it15 wr`.
    pub fn describe(&self) -> String {
        match self {
            Params::Als(p) => format!(
                "als f{} λ{} α{} it{}{}",
                p.factors,
                round3(p.regularization),
                round3(p.alpha),
                p.iterations,
                if p.weighted_regularization { " wr" } else { "" }
            ),
            Params::Ease(p) => format!(
                "ease {} λ{} items≤{}",
                p.input.as_str(),
                round3(p.lambda),
                p.max_items
            ),
            Params::Knn(p) => format!(
                "knn {} k{} shrink{}",
                p.weighting.as_str(),
                p.neighbours,
                round3(p.shrink)
            ),
            Params::Popularity => "popularity".into(),
        }
    }
}

fn round3(x: f32) -> f32 {
    if x == 0.0 {
        return 0.0;
    }
    let m = 10f32.powi(2 - x.abs().log10().floor() as i32);
    (x * m).round() / m
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error(transparent)]
    Als(#[from] AlsError),
    #[error(transparent)]
    Ease(#[from] EaseError),
    #[error(transparent)]
    Knn(#[from] KnnError),
}

/// A fitted model of any family.
#[derive(Debug, Clone)]
pub enum Fitted {
    Als(AlsModel),
    Ease(EaseModel),
    Knn(KnnModel),
    /// Training users per item.
    Popularity(Vec<f32>),
}

impl Fitted {
    /// Every item's score for row `u` of the matrix the model was fitted on,
    /// whose items are `history` with implicit-feedback `weights`.
    pub fn scores_into(&self, u: usize, history: &[u32], weights: &[f32], out: &mut Vec<f32>) {
        match self {
            Fitted::Als(m) => m.scores_into(u, out),
            Fitted::Ease(m) => m.scores_into(history, weights, out),
            Fitted::Knn(m) => m.scores_into(history, out),
            Fitted::Popularity(p) => {
                out.clear();
                out.extend_from_slice(p);
            }
        }
    }
}

/// Fits `params` on `train` (user × item implicit-feedback weights).
pub fn fit(params: &Params, train: &Csr) -> Result<Fitted, FitError> {
    Ok(match params {
        Params::Als(p) => {
            let p = p.clone().check()?;
            Fitted::Als(super::als::fit(&p, train, |_, _| {})?)
        }
        Params::Ease(p) => Fitted::Ease(super::ease::fit(p, train)?),
        Params::Knn(p) => Fitted::Knn(super::knn::fit(p, train)?),
        Params::Popularity => {
            let mut pop = vec![0f32; train.cols];
            for (&c, &v) in train.indices.iter().zip(&train.values) {
                if v > 0.0 {
                    pop[c as usize] += 1.0;
                }
            }
            Fitted::Popularity(pop)
        }
    })
}

/// Scores `model` (fitted on `train`) on `test` with the shared ranking metrics.
pub fn evaluate(
    model: &Fitted,
    train: &Csr,
    test: &Csr,
    k: usize,
    genres: Option<&super::metrics::Genres>,
) -> super::metrics::RankingMetrics {
    super::metrics::evaluate_with_genres(train, test, k, genres, |u, s| {
        let (history, weights) = if u < train.rows {
            train.row(u)
        } else {
            (&[][..], &[][..])
        };
        model.scores_into(u, history, weights, s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_parameters_describe_themselves() {
        for f in Family::ALL {
            assert_eq!(Family::parse(f.as_str()), Some(f));
        }
        assert_eq!(Family::parse("svd"), None);
        let p = Params::Als(AlsParams {
            factors: 32,
            regularization: 0.123456,
            alpha: 4.0,
            weighted_regularization: true,
            ..AlsParams::default()
        });
        assert_eq!(p.describe(), "als f32 λ0.123 α4 it15 wr");
        let json = serde_json::to_string(&Params::Ease(EaseParams::default())).unwrap();
        assert!(json.contains("\"family\":\"ease\""), "{json}");
        let back: Params = serde_json::from_str(&json).unwrap();
        assert_eq!(back.family(), Family::Ease);
    }
}
