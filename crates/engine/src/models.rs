//! The models output: an Ollama models directory laid out from the locked
//! manifests and blobs (`manifests/<host>/<namespace>/<name>/<tag>` byte for
//! byte, `blobs/sha256-<hex>`), plus the app's AI config with secrets removed.

use std::path::Path;

use anyhow::{Context as _, Result};
use farm_lockfiles::Lock;
use farm_store::Store;

/// Keys that hold secrets, compared lower-case with `-` and `_` removed.
const SECRET_KEYS: [&str; 7] = [
    "apikey",
    "clientsecret",
    "privatekey",
    "token",
    "password",
    "secret",
    "accesstoken",
];

pub fn is_secret_key(key: &str) -> bool {
    let k: String = key
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    SECRET_KEYS.contains(&k.as_str()) || k.ends_with("token") || k.ends_with("secret") || k.ends_with("password")
}

/// Removes every secret-looking field, at any depth; returns their JSON paths.
pub fn strip_secrets(v: &mut serde_json::Value, path: &str, removed: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let p = format!("{path}.{k}");
                if is_secret_key(&k) {
                    map.remove(&k);
                    removed.push(p);
                } else if let Some(child) = map.get_mut(&k) {
                    strip_secrets(child, &p, removed);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                strip_secrets(item, &format!("{path}[{i}]"), removed);
            }
        }
        _ => {}
    }
}

/// Writes the models directory into `dir` (an empty directory).
pub fn write_models_dir(
    store: &Store,
    lock: &Lock,
    host: &str,
    ai_config: Option<(&Path, &str)>,
    dir: &Path,
) -> Result<Vec<String>> {
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs)?;
    for m in &lock.models {
        let (ns, name) = m
            .repository
            .split_once('/')
            .unwrap_or(("library", m.repository.as_str()));
        let manifest_dir = dir.join("manifests").join(host).join(ns).join(name);
        std::fs::create_dir_all(&manifest_dir)?;
        let manifest = store
            .artifact(&m.manifest.digest.to_string())?
            .with_context(|| format!("model {} is not in the store\nhint: run `farm fetch`", m.reference))?;
        std::fs::copy(&manifest.path, manifest_dir.join(&m.tag))?;
        for blob in std::iter::once(&m.config).chain(m.layers.iter()) {
            let e = store.artifact(&blob.digest.to_string())?.with_context(|| {
                format!(
                    "blob {} of model {} is not in the store\nhint: run `farm fetch`",
                    blob.digest, m.reference
                )
            })?;
            let to = blobs.join(format!("{}-{}", blob.digest.algorithm.name(), blob.digest.hex()));
            if !to.exists() {
                std::fs::copy(&e.path, &to)?;
            }
        }
    }
    let mut removed = Vec::new();
    if let Some((cfg, text)) = ai_config {
        let mut v: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("{}: not valid JSON", cfg.display()))?;
        strip_secrets(&mut v, "$", &mut removed);
        // serde_json's map is sorted, so this is canonical.
        let mut out = serde_json::to_string_pretty(&v)?;
        out.push('\n');
        std::fs::write(dir.join("ai-config.json"), out)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_removed_at_any_depth_and_the_rest_kept() {
        let mut v = serde_json::json!({
            "providers": {"openai": {"apiKey": "sk-1", "url": "u", "client_secret": "x"},
                          "ollama": {"url": "http://ollama:11434"}},
            "auth": [{"privateKey": "k", "name": "a"}, {"refreshToken": "t"}],
            "password": "p", "defaultModel": "m", "tokenizer": "keep"
        });
        let mut removed = Vec::new();
        strip_secrets(&mut v, "$", &mut removed);
        let text = v.to_string();
        for secret in ["sk-1", "\"x\"", "\"k\"", "\"t\"", "\"p\""] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("ollama:11434") && text.contains("defaultModel") && text.contains("tokenizer"));
        assert_eq!(removed.len(), 5, "{removed:?}");
    }
}
