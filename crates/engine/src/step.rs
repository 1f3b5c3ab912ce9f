//! What a step is, how its action key is computed, and what the action
//! cache records for it. The key and the record are specified in
//! spec/engine.md; a change to either bumps `KEY_VERSION`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use farm_store::{Store, StoreEntry};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

pub use farm_project::StepId;

use crate::build::BuildEnv;

/// Bumped when the meaning of a step key changes, so old cache entries miss.
const KEY_VERSION: &str = concat!("farm-step-v1 farm-", env!("CARGO_PKG_VERSION"));

/// The outputs of finished steps, by step.
pub type StepOutputs = BTreeMap<StepId, StoreEntry>;

/// An in-process step: fills its output directory from store entries,
/// given the outputs of the steps it takes inputs from.
pub type InProcessFn = Box<dyn Fn(&Path, &StepOutputs) -> Result<()> + Send + Sync>;

pub struct Step {
    pub id: StepId,
    /// Steps that must finish first.
    pub after: Vec<StepId>,
    /// Steps whose outputs are inputs of this one (part of its key); each is also in `after`.
    pub inputs_from: Vec<StepId>,
    pub action: StepAction,
}

pub enum StepAction {
    /// A shell script run by the executor (the sandbox, or the host without --hermetic).
    Script {
        script: String,
        inputs: Vec<StoreEntry>,
        extra_env: Vec<(String, String)>,
    },
    /// Trusted in-process assembly from store entries (no tools run).
    InProcess { key_parts: Vec<String>, run: InProcessFn },
}

impl Step {
    /// A script step with no step inputs yet.
    pub fn script(
        id: StepId,
        after: Vec<StepId>,
        script: String,
        inputs: Vec<StoreEntry>,
        extra_env: Vec<(String, String)>,
    ) -> Step {
        Step {
            id,
            after,
            inputs_from: vec![],
            action: StepAction::Script {
                script,
                inputs,
                extra_env,
            },
        }
    }

    /// SHA-256 over the canonical JSON of everything the step can see
    /// (spec/engine.md, "Action key").
    pub fn key(&self, env: &BuildEnv, deps: &StepOutputs) -> StepKey {
        let deps: BTreeMap<&str, String> = deps.iter().map(|(k, e)| (k.as_str(), e.file_name())).collect();
        let desc = match &self.action {
            StepAction::Script {
                script,
                inputs,
                extra_env,
            } => {
                let mut ins: Vec<String> = inputs.iter().map(|e| e.file_name()).collect();
                if let Some(tc) = &env.toolchain {
                    ins.extend(tc.inputs.iter().map(|e| e.file_name()));
                    ins.push(format!("root={}", tc.root.file_name()));
                }
                ins.sort();
                let mut desc = serde_json::json!({
                    "v": KEY_VERSION, "name": self.id, "hermetic": env.hermetic, "script": script,
                    "inputs": ins, "env": extra_env, "host": env.host_tools,
                    "source_date_epoch": env.source_date_epoch, "variation": env.variation,
                    "deps": deps,
                });
                // Which secret files the step sees, never their values: a
                // new secret value reuses the cached output.
                if let Some(s) = env.secrets.as_ref().filter(|_| sees_secrets(&self.id)) {
                    desc["secrets"] = s.names().into();
                }
                desc
            }
            StepAction::InProcess { key_parts, .. } => {
                serde_json::json!({"v": KEY_VERSION, "name": self.id, "parts": key_parts, "deps": deps})
            }
        };
        StepKey(hex::encode(sha2::Sha256::digest(
            serde_json::to_vec(&desc).expect("json"),
        )))
    }
}

/// Whether the step gets the `--secret` files: the steps that build the
/// app (frontend, backend, custom steps), not farm's own.
pub fn sees_secrets(id: &StepId) -> bool {
    matches!(id, StepId::Frontend | StepId::Backend | StepId::Custom(_))
}

/// `a, b, c` for messages.
pub fn join_ids(ids: &[StepId]) -> String {
    ids.iter().map(StepId::as_str).collect::<Vec<_>>().join(", ")
}

/// A step's action key: 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepKey(pub String);

impl StepKey {
    /// The row of the store's action cache that holds this step's record.
    fn cache_row(&self) -> String {
        format!("step:{}", self.0)
    }

    /// The first 16 hex digits, for file names.
    pub fn short(&self) -> &str {
        &self.0[..16.min(self.0.len())]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What the action cache records for a step key (spec/engine.md, "Action record").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The output's store entry file name (`<digest>-out-<step>`).
    pub entry: String,
    /// The log of the run that made it. Stored relative to the store's
    /// root (`logs/<step>-<key>.log`), never as a host path; absolute here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

impl ActionRecord {
    /// The record for `key` whose entry is still in the store.
    pub fn lookup(store: &Store, key: &StepKey) -> Result<Option<(ActionRecord, StoreEntry)>> {
        Self::lookup_row(store, &key.cache_row())
    }

    pub fn store(&self, store: &Store, key: &StepKey) -> Result<()> {
        self.store_row(store, &key.cache_row())
    }

    /// Records under an arbitrary action-cache row (composed store entries use their own rows).
    pub fn lookup_row(store: &Store, row: &str) -> Result<Option<(ActionRecord, StoreEntry)>> {
        let Some(v) = store.action_get(row)? else {
            return Ok(None);
        };
        // A record of another shape (an older farm) is a miss, not an error.
        let Ok(mut record) = serde_json::from_value::<ActionRecord>(v) else {
            return Ok(None);
        };
        record.log = record.log.map(|l| store.root().join(l));
        Ok(store.entry(&record.entry)?.map(|e| (record, e)))
    }

    pub fn store_row(&self, store: &Store, row: &str) -> Result<()> {
        store.action_put(row, &serde_json::to_value(self.portable(store.root()))?)?;
        Ok(())
    }

    /// This record as the action cache keeps it: the log relative to the
    /// store's root, or left out when it is anywhere else.
    fn portable(&self, root: &Path) -> ActionRecord {
        ActionRecord {
            entry: self.entry.clone(),
            log: self
                .log
                .as_deref()
                .and_then(|l| l.strip_prefix(root).ok())
                .filter(|l| !l.as_os_str().is_empty())
                .map(Path::to_path_buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_record_bytes_are_pinned() {
        let r = ActionRecord {
            entry: "ab-out-frontend".into(),
            log: Some("/home/u/.cache/farm/logs/frontend.log".into()),
        }
        .portable(Path::new("/home/u/.cache/farm"));
        assert_eq!(
            serde_json::to_value(&r).unwrap().to_string(),
            r#"{"entry":"ab-out-frontend","log":"logs/frontend.log"}"#,
            "no host path in the action cache"
        );
        let elsewhere = ActionRecord {
            entry: "ab-out-frontend".into(),
            log: Some("/elsewhere/frontend.log".into()),
        };
        assert_eq!(elsewhere.portable(Path::new("/home/u/.cache/farm")).log, None);
        let bare = ActionRecord {
            entry: "ab-x".into(),
            log: None,
        };
        assert_eq!(serde_json::to_value(&bare).unwrap().to_string(), r#"{"entry":"ab-x"}"#);
    }

    /// The store's action cache holds the log relative to the store (no host
    /// path); a lookup gives it back where it is.
    #[test]
    fn the_action_cache_holds_logs_relative_to_the_store() {
        let home = tempfile::tempdir().unwrap();
        let store = Store::open(home.path()).unwrap();
        let e = store
            .build_entry("x", "output", |d| {
                std::fs::write(d.join("f"), "1")?;
                Ok(())
            })
            .unwrap();
        let log = store.logs_dir().join("x-0123456789abcdef.log");
        ActionRecord {
            entry: e.file_name(),
            log: Some(log.clone()),
        }
        .store_row(&store, "step:t")
        .unwrap();
        let raw = store.action_get("step:t").unwrap().unwrap();
        assert_eq!(raw["log"], "logs/x-0123456789abcdef.log");
        assert!(!raw.to_string().contains(&*home.path().to_string_lossy()), "{raw}");
        let (back, _) = ActionRecord::lookup_row(&store, "step:t").unwrap().unwrap();
        assert_eq!(back.log, Some(log));
    }
}
