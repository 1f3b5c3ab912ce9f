//! `farm-manifest.json`: the release's identity. Canonical JSON (sorted
//! keys, two-space indent, trailing newline) of the inputs and every output
//! digest, with a top-level `digest` over everything else. Run-to-run facts
//! (timings, cache hits, memory) go to `farm-metrics.json` instead.
//! Spec: `spec/manifest.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

pub const MANIFEST_FILE: &str = "farm-manifest.json";
pub const METRICS_FILE: &str = "farm-metrics.json";
pub const SCHEMA: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema: u32,
    pub project: ProjectInfo,
    pub hermetic: bool,
    /// The `--env` the build ran for.
    pub environment: String,
    /// A `--dev` build (sourcemaps, no minification): not a release.
    pub dev: bool,
    pub source_date_epoch: u64,
    pub inputs: Inputs,
    /// By output name: `frontend`, `backend`, `openapi`, `models`, …
    pub outputs: BTreeMap<String, Output>,
    /// `sha256:` over the canonical JSON of this object without `digest`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProjectInfo {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Inputs {
    /// sha256 of farm.lock's bytes.
    pub lock: String,
    /// sha256 of farm.toml's bytes.
    pub farm_toml: String,
    /// Tree digest of each source snapshot, by name (`frontend`, `backend`).
    pub sources: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Output {
    /// Path in the output directory.
    pub path: String,
    /// Tree digest (spec/tree-digest.md) of that path.
    pub digest: String,
    /// Bytes of file contents.
    pub size: u64,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Manifest {
    fn canonical_without_digest(&self) -> Vec<u8> {
        let mut m = self.clone();
        m.digest.clear();
        // serde_json maps are sorted (no `preserve_order`), so this is canonical.
        let v = serde_json::to_value(&m).expect("manifest serialises");
        serde_json::to_vec(&v).expect("json")
    }

    pub fn compute_digest(&self) -> String {
        format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(self.canonical_without_digest()))
        )
    }

    pub fn seal(&mut self) {
        self.digest = self.compute_digest();
    }

    /// The file's bytes: sorted keys, pretty, trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let v = serde_json::to_value(self).expect("manifest serialises");
        let mut out = serde_json::to_vec_pretty(&v).expect("json");
        out.push(b'\n');
        out
    }
}

/// Chrome trace-event JSON of the steps (opens in Perfetto and chrome://tracing).
pub fn trace_json(events: &[TraceEvent]) -> String {
    let evs: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "name": e.name, "cat": if e.cached { "cached" } else { "run" }, "ph": "X",
                "ts": e.start_us, "dur": e.dur_us, "pid": 1, "tid": e.lane,
                "args": {"key": e.key, "cached": e.cached},
            })
        })
        .collect();
    let mut s =
        serde_json::to_string_pretty(&serde_json::json!({"traceEvents": evs, "displayTimeUnit": "ms"})).expect("json");
    s.push('\n');
    s
}

#[derive(Debug, Clone)]
pub struct TraceEvent {
    pub name: String,
    pub key: String,
    pub start_us: u64,
    pub dur_us: u64,
    pub lane: usize,
    pub cached: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let mut outputs = BTreeMap::new();
        outputs.insert(
            "frontend".to_string(),
            Output {
                path: "frontend".into(),
                digest: "sha256:00".into(),
                size: 3,
                metadata: Default::default(),
            },
        );
        Manifest {
            schema: SCHEMA,
            project: ProjectInfo {
                name: "a".into(),
                version: "1".into(),
            },
            hermetic: true,
            environment: "production".into(),
            dev: false,
            source_date_epoch: 315532800,
            inputs: Inputs {
                lock: "sha256:11".into(),
                farm_toml: "sha256:22".into(),
                sources: BTreeMap::new(),
            },
            outputs,
            digest: String::new(),
        }
    }

    #[test]
    fn digest_covers_everything_but_itself_and_bytes_are_pinned() {
        let mut m = sample();
        m.seal();
        let bytes = m.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        // Pinned: the exact serialisation is part of the format.
        assert!(
            text.starts_with("{\n  \"dev\": false,\n  \"digest\": \"sha256:"),
            "{text}"
        );
        assert!(text.ends_with("}\n"));
        assert!(
            text.find("\"hermetic\"").unwrap() < text.find("\"inputs\"").unwrap(),
            "keys sorted"
        );
        let back: Manifest = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.compute_digest(), back.digest);
        let mut changed = m.clone();
        changed.outputs.get_mut("frontend").unwrap().size = 4;
        assert_ne!(
            changed.compute_digest(),
            m.digest,
            "any field change changes the digest"
        );
        let edited = String::from_utf8(bytes).unwrap().replace("\"size\": 3", "\"size\": 4");
        let e: Manifest = serde_json::from_str(&edited).unwrap();
        assert_ne!(e.compute_digest(), e.digest, "an edit is detectable");
    }
}
