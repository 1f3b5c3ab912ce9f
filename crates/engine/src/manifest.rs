//! `farm-manifest.json`: the release's identity. Canonical JSON (sorted
//! keys, two-space indent, trailing newline) of the inputs and every output
//! digest, with a top-level `digest` over everything else. Run-to-run facts
//! (timings, cache hits, memory) go to `farm-metrics.json` instead.
//! Spec: `spec/manifest.md`.

use std::collections::BTreeMap;

use farm_formats::canonical_json;
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
        canonical_json::to_vec(&m).expect("a manifest holds only strings, integers and JSON values")
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

    /// The file's bytes: sorted keys, two-space indent, trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        canonical_json::to_vec_pretty(self).expect("a manifest holds only strings, integers and JSON values")
    }
}

/// `farm-metrics.json` from the scheduler's metrics: each step's `log` is
/// named relative to FARM_HOME (`logs/<step>-<key>.log`), never by its host
/// path; a log elsewhere is left out.
pub fn metrics_without_host_paths(mut metrics: serde_json::Value, farm_home: &std::path::Path) -> serde_json::Value {
    let homes = [
        farm_home.to_path_buf(),
        std::path::absolute(farm_home).unwrap_or_default(),
    ];
    if let Some(steps) = metrics.get_mut("steps").and_then(|s| s.as_object_mut()) {
        for record in steps.values_mut() {
            let Some(r) = record.as_object_mut() else { continue };
            let log = r.get("log").and_then(|l| l.as_str()).map(std::path::Path::new);
            let rel = log
                .and_then(|l| homes.iter().find_map(|h| l.strip_prefix(h).ok()))
                .filter(|l| l.is_relative() && !l.as_os_str().is_empty())
                .map(|l| l.display().to_string());
            match rel {
                Some(rel) => r.insert("log".into(), rel.into()),
                None => r.remove("log"),
            };
        }
    }
    metrics
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

    /// Metrics name logs relative to FARM_HOME; a log elsewhere is dropped,
    /// so no host path reaches farm-metrics.json.
    #[test]
    fn metrics_hold_no_host_paths() {
        let home = std::path::Path::new("/home/u/.cache/farm");
        let m = serde_json::json!({"total_ms": 1, "steps": {
            "frontend": {"log": "/home/u/.cache/farm/logs/frontend-0123.log", "cached": false},
            "lint": {"log": "/somewhere/else.log"},
            "backend": {"log": null}
        }});
        let out = metrics_without_host_paths(m, home);
        assert_eq!(out["steps"]["frontend"]["log"], "logs/frontend-0123.log");
        assert!(out["steps"]["lint"].get("log").is_none());
        assert!(out["steps"]["backend"].get("log").is_none());
        assert!(!out.to_string().contains("/home/u") && !out.to_string().contains("/somewhere"));
    }

    /// A manifest with every kind of field, including `metadata` written in
    /// non-sorted order.
    fn small() -> Manifest {
        let mut m = sample();
        m.inputs.sources.insert("frontend".into(), "sha256:33".into());
        let out = m.outputs.get_mut("frontend").unwrap();
        out.metadata = serde_json::from_str(r#"{"zeta":1,"alpha":{"b":true,"a":["y","x"]},"Upper":null}"#).unwrap();
        m.seal();
        m
    }

    /// The format, byte for byte. These are the bytes farm wrote before
    /// canonical JSON had its own module (through `serde_json::Value`, whose
    /// maps sort while serde_json's `preserve_order` is off); a dependency
    /// turning that feature on must not change them, and neither may
    /// anything else short of a new `SCHEMA`.
    #[test]
    fn bytes_and_digest_are_pinned() {
        let m = small();
        assert_eq!(
            String::from_utf8(m.canonical_without_digest()).unwrap(),
            r#"{"dev":false,"environment":"production","hermetic":true,"inputs":{"farm_toml":"sha256:22","lock":"sha256:11","sources":{"frontend":"sha256:33"}},"outputs":{"frontend":{"digest":"sha256:00","metadata":{"Upper":null,"alpha":{"a":["y","x"],"b":true},"zeta":1},"path":"frontend","size":3}},"project":{"name":"a","version":"1"},"schema":1,"source_date_epoch":315532800}"#
        );
        assert_eq!(
            m.digest,
            "sha256:5e7bcc10f8dee673baba89b14824e88185051c4ea0c06af914df1e612f89d0fc"
        );
        assert_eq!(
            String::from_utf8(m.to_bytes()).unwrap(),
            r#"{
  "dev": false,
  "digest": "sha256:5e7bcc10f8dee673baba89b14824e88185051c4ea0c06af914df1e612f89d0fc",
  "environment": "production",
  "hermetic": true,
  "inputs": {
    "farm_toml": "sha256:22",
    "lock": "sha256:11",
    "sources": {
      "frontend": "sha256:33"
    }
  },
  "outputs": {
    "frontend": {
      "digest": "sha256:00",
      "metadata": {
        "Upper": null,
        "alpha": {
          "a": [
            "y",
            "x"
          ],
          "b": true
        },
        "zeta": 1
      },
      "path": "frontend",
      "size": 3
    }
  },
  "project": {
    "name": "a",
    "version": "1"
  },
  "schema": 1,
  "source_date_epoch": 315532800
}
"#
        );
    }
}
