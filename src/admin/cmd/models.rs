//! Models: `train`, `evaluate`, and `models` (list, show, promote, rollback,
//! import).

use serde::{Deserialize, Serialize};

use crate::actors::messages::{EvaluateChampion, ImportModel, SetChampion, TrainNow};
use crate::admin::context::{blocking, Admin};
use crate::admin::error::{CommandError, RequestError};
use crate::ml::{ChampionEvaluation, ModelVersion, TrainOutcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ModelsAction {
    #[default]
    List,
    Show,
    Promote,
    Rollback,
    /// Factors trained elsewhere (`dir`: what spark/train_als.py wrote).
    Import,
}

/// `models [ACTION] [ID]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Models {
    #[serde(default)]
    #[arg(value_enum, default_value = "list")]
    pub action: ModelsAction,
    /// A version (show, promote).
    pub id: Option<u64>,
    /// The factors' directory, as the daemon sees it (import).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub dir: Option<String>,
}

/// Every version and the champion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub champion: Option<u64>,
    pub models: Vec<ModelVersion>,
}

/// One version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShown {
    pub model: ModelVersion,
    pub champion: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChampionSet {
    pub champion: u64,
}

/// What `models` answers, by action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelsReply {
    Imported(Box<crate::ml::import::ImportReport>),
    Shown(Box<ModelShown>),
    List(ModelList),
    Champion(ChampionSet),
}

pub async fn train(a: &Admin) -> Result<TrainOutcome, CommandError> {
    Ok(a.train.send(TrainNow).await??)
}

pub async fn evaluate(a: &Admin) -> Result<ChampionEvaluation, CommandError> {
    Ok(a.evaluate.send(EvaluateChampion).await??)
}

pub async fn models(a: &Admin, req: Models) -> Result<ModelsReply, CommandError> {
    match req.action {
        ModelsAction::List | ModelsAction::Show => {
            let view = a.view.clone();
            let (models, champion) = blocking(move || {
                Ok::<_, CommandError>((crate::ml::version::versions(&view)?, view.champion_id()?))
            })
            .await??;
            if req.action == ModelsAction::Show {
                let id = req.id.or(champion).ok_or_else(|| a.no_champion())?;
                let model = models.into_iter().find(|m| m.id == id).ok_or_else(|| {
                    CommandError::NotFound(format!("no model version {id}; `models` lists them"))
                })?;
                return Ok(ModelsReply::Shown(Box::new(ModelShown {
                    model,
                    champion: Some(id) == champion,
                })));
            }
            if models.is_empty() {
                return Err(CommandError::NoModel {
                    min_events: a.cfg.models.min_events,
                });
            }
            Ok(ModelsReply::List(ModelList { champion, models }))
        }
        ModelsAction::Promote => {
            let id = req.id.ok_or(RequestError::Needs(
                "promote needs `id`: `models` lists the versions",
            ))?;
            if let Some(c) = &a.cluster {
                c.check_trainer("promote")?;
            }
            let champion = a.set_champion.send(SetChampion(Some(id))).await??;
            Ok(ModelsReply::Champion(ChampionSet { champion }))
        }
        ModelsAction::Rollback => {
            if let Some(c) = &a.cluster {
                c.check_trainer("rollback")?;
            }
            let champion = a.set_champion.send(SetChampion(None)).await??;
            Ok(ModelsReply::Champion(ChampionSet { champion }))
        }
        ModelsAction::Import => {
            let dir = req.dir.ok_or(RequestError::Needs(
                "import needs `dir`: the directory spark/train_als.py wrote (meta.json, users/, items/)",
            ))?;
            crate::admin::bounds::text(
                "dir",
                Some(&dir),
                true,
                crate::admin::bounds::MAX_PATH_BYTES,
            )?;
            if let Some(c) = &a.cluster {
                c.check_trainer("import")?;
            }
            let report = a.import_model.send(ImportModel(dir.into())).await??;
            Ok(ModelsReply::Imported(Box::new(report)))
        }
    }
}
