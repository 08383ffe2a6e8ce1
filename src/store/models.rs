//! Model versions: metadata (parameters, data, timings, metrics) and the serving
//! bundle of each, and which version is the champion — written in one batch.

use serde::{Deserialize, Serialize};

use super::{keys, Store, StoreError};

/// One trained model as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    pub id: u64,
    pub kind: String,
    pub created_ms: i64,
    pub params: serde_json::Value,
    /// What it was trained on (stored events, pairs, users, items).
    pub data: serde_json::Value,
    pub timings: serde_json::Value,
    /// Held-out metrics of the model and of the popularity baseline.
    pub metrics: serde_json::Value,
    pub baseline: serde_json::Value,
    /// Why it was or was not promoted.
    pub decision: String,
}

fn id_key(prefix: &[u8], id: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&id.to_be_bytes());
    k
}

impl Store {
    /// The next free model id.
    pub fn next_model_id(&self) -> Result<u64, StoreError> {
        Ok(match self.tree.scan_prefix(keys::MODEL_META).last() {
            Some(item) => {
                let (k, _) = item?;
                u64::from_be_bytes(k[keys::MODEL_META.len()..].try_into().unwrap_or([0; 8])) + 1
            }
            None => 1,
        })
    }

    /// Records a version and its bundle; makes it the champion when `promote`.
    pub fn add_model(
        &self,
        meta: &ModelVersion,
        bundle: &[u8],
        promote: bool,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let json = serde_json::to_vec(meta).map_err(|e| StoreError::Corrupt {
            key: format!("model {}", meta.id),
            message: e.to_string(),
        })?;
        batch.insert(id_key(keys::MODEL_META, meta.id), json);
        batch.insert(id_key(keys::MODEL_BUNDLE, meta.id), bundle);
        if promote {
            batch.insert(keys::MODEL_CHAMPION, &meta.id.to_be_bytes());
        }
        self.tree.apply_batch(batch)?;
        self.db.flush()?;
        Ok(())
    }

    /// Makes an existing version the champion (promote, rollback).
    pub fn set_champion(&self, id: u64) -> Result<(), StoreError> {
        if self.tree.get(id_key(keys::MODEL_META, id))?.is_none() {
            return Err(StoreError::Corrupt {
                key: format!("model {id}"),
                message: "no such model version; list them with `models`".into(),
            });
        }
        self.tree.insert(keys::MODEL_CHAMPION, &id.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    pub fn models(&self) -> Result<Vec<ModelVersion>, StoreError> {
        self.tree
            .scan_prefix(keys::MODEL_META)
            .map(|item| {
                let (k, v) = item?;
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    pub fn champion_id(&self) -> Result<Option<u64>, StoreError> {
        Ok(self
            .tree
            .get(keys::MODEL_CHAMPION)?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes))
    }

    pub fn champion(&self) -> Result<Option<ModelVersion>, StoreError> {
        let Some(id) = self.champion_id()? else {
            return Ok(None);
        };
        Ok(self.models()?.into_iter().find(|m| m.id == id))
    }

    /// The serving bundle of a version, as stored.
    pub fn model_bundle(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(id_key(keys::MODEL_BUNDLE, id))?
            .map(|v| v.to_vec()))
    }
}
