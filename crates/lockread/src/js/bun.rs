//! bun.lock, bun's text lockfile (JSONC: comments and trailing commas),
//! `lockfileVersion` 0 and 1.
//!
//! `packages` keys are paths through the installed tree by package name:
//! `react` is `node_modules/react`, `send/ms` is
//! `node_modules/send/node_modules/ms`, and a key under a workspace's name
//! (`@app/legacy/react`) is inside that workspace's own node_modules. Each
//! value is an array whose first item is `name@resolution`: registry
//! packages are `[ident, registry, info, integrity]` (registry `""` is the
//! default one), workspaces `[name@workspace:path]`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::{
    check_bins, node_modules_of, npm_package, parse_integrity, runs_on_target, split_name_at, tarball_url, JsInstall,
    JsLink, JsLockKind,
};
use crate::error::{json_error, LockReadError};
use crate::names::{check_download_url, install_path_name, is_inside_relative, is_npm_name, is_version, join_inside};

#[derive(Deserialize)]
struct BunLock {
    #[serde(rename = "lockfileVersion", default)]
    lockfile_version: Option<Value>,
    #[serde(default)]
    workspaces: BTreeMap<String, Value>,
    #[serde(default)]
    packages: BTreeMap<String, Vec<Value>>,
}

/// JSONC to JSON: comments become spaces (newlines kept, so serde_json's
/// line numbers still point into the file) and trailing commas are dropped.
pub(crate) fn strip_jsonc(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                out.push(b'"');
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        out.push(b[i]);
                        i += 1;
                    }
                    out.push(b[i]);
                    i += 1;
                }
                if i < b.len() {
                    out.push(b'"');
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    out.push(b' ');
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                out.extend_from_slice(b"  ");
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
                if i < b.len() {
                    out.extend_from_slice(b"  ");
                    i += 2;
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    // Trailing commas: a `,` followed only by whitespace before `}` or `]`.
    let mut in_string = false;
    let mut escaped = false;
    for j in 0..out.len() {
        let c = out[j];
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            continue;
        }
        if c == b'"' {
            in_string = true;
        } else if c == b',' {
            let next = out[j + 1..].iter().find(|c| !c.is_ascii_whitespace());
            if matches!(next, Some(b'}') | Some(b']')) {
                out[j] = b' ';
            }
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// `a/@s/b/c` → `["a", "@s/b", "c"]`.
fn key_names(key: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut parts = key.split('/');
    while let Some(p) = parts.next() {
        let name = if p.starts_with('@') {
            format!("{p}/{}", parts.next()?)
        } else {
            p.to_string()
        };
        if !is_npm_name(&name) {
            return None;
        }
        out.push(name);
    }
    (!out.is_empty()).then_some(out)
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// Reads a bun.lock; its keys already give the hoisted layout.
pub fn parse_bun_lock(file: &str, text: &str, registry: &str) -> Result<JsInstall, LockReadError> {
    let lock: BunLock = serde_json::from_str(&strip_jsonc(text)).map_err(|e| json_error(file, e))?;
    let version = lock
        .lockfile_version
        .as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "(missing)".into());
    if !matches!(version.as_str(), "0" | "1") {
        return Err(LockReadError::Version {
            file: file.into(),
            found: format!("lockfileVersion {version}"),
            supported: "lockfileVersion 0 and 1".into(),
            hint: "; hint: update farm, or write the lock with a bun release farm knows".into(),
        });
    }
    for dir in lock.workspaces.keys() {
        if !is_inside_relative(dir) {
            return Err(LockReadError::entry(
                file,
                format!("workspace `{dir}`"),
                "is not a directory inside the project",
            ));
        }
    }
    let mut out = JsInstall::new(JsLockKind::Bun, true);
    let mut keys: Vec<(&String, Vec<String>)> = Vec::new();
    for key in lock.packages.keys() {
        let names = key_names(key).ok_or_else(|| {
            LockReadError::entry(
                file,
                format!("package `{key}`"),
                "is not a path of valid npm package names",
            )
        })?;
        keys.push((key, names));
    }
    // Parents before children.
    keys.sort_by(|a, b| a.1.len().cmp(&b.1.len()).then(a.0.cmp(b.0)));
    // key → the directory its own dependencies are installed under
    let mut location: BTreeMap<String, String> = BTreeMap::new();
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    for (key, names) in keys {
        let what = format!("package `{key}`");
        let err = |m: String| LockReadError::entry(file, what.clone(), m);
        let arr = &lock.packages[key];
        let parent_key = names[..names.len() - 1].join("/");
        if skipped.contains(&parent_key) {
            skipped.insert(key.clone());
            continue;
        }
        let parent_loc = if names.len() == 1 {
            String::new()
        } else {
            location
                .get(&parent_key)
                .cloned()
                .ok_or_else(|| err(format!("is nested under `{parent_key}`, which is not in `packages`")))?
        };
        let install_name = names.last().expect("non-empty");
        let path = format!("{}/{install_name}", node_modules_of(&parent_loc));
        install_path_name(&path).map_err(|m| err(format!("install path `{path}` {m}")))?;
        let ident = arr
            .first()
            .and_then(|v| v.as_str())
            .ok_or_else(|| err("has no `name@resolution` as its first item".into()))?;
        let (name, res) = split_name_at(ident).ok_or_else(|| err(format!("{ident:?} is not `name@resolution`")))?;
        if !is_npm_name(name) {
            return Err(err(format!("{name:?} is not a valid npm package name")));
        }
        if let Some(dir) = res.strip_prefix("workspace:") {
            let target = join_inside("", dir)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| err(format!("workspace path {dir:?} is outside the project")))?;
            out.links.push(JsLink {
                path,
                target: target.clone(),
            });
            location.insert(key.clone(), target);
            continue;
        }
        if res.starts_with("root:") {
            location.insert(key.clone(), String::new());
            continue;
        }
        let refused = ["link:", "file:", "git+", "git:", "github:", "http:", "https:"]
            .iter()
            .find(|p| res.starts_with(**p));
        if let Some(p) = refused {
            return Err(err(format!(
                "resolves to a `{}` source ({:?}); farm locks registry packages and workspaces only (hint: publish it to your registry, or make it a workspace)",
                p.trim_end_matches(':'),
                farm_lockfiles::redact::redact_url(res)
            )));
        }
        let version = res;
        if !is_version(version) {
            return Err(err(format!("version {version:?} is not a package version")));
        }
        if arr.len() != 4 {
            return Err(err(format!(
                "a registry package has 4 items [ident, registry, info, integrity], found {}",
                arr.len()
            )));
        }
        let info = arr[2].as_object().cloned().unwrap_or_default();
        let os = string_list(info.get("os"));
        let cpu = string_list(info.get("cpu"));
        let libc = string_list(info.get("libc"));
        if !runs_on_target(&os, &cpu, &libc) {
            skipped.insert(key.clone());
            continue;
        }
        let reg = arr[1].as_str().unwrap_or_default();
        let url = if reg.ends_with(".tgz") {
            tarball_url(registry, name, version, Some(reg)).map_err(|m| err(format!("registry {m}")))?
        } else {
            // Another registry for this package; the configured one serves farm's fetches.
            if !reg.is_empty() {
                check_download_url(reg).map_err(|m| err(format!("registry {m}")))?;
            }
            tarball_url(registry, name, version, None).map_err(&err)?
        };
        let integrity = parse_integrity(arr[3].as_str())
            .map_err(|m| err(format!("{m}; hint: run `bun install` so bun records it")))?;
        let bins = match info.get("bin") {
            Some(Value::Object(m)) => m
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect(),
            Some(Value::String(s)) => {
                BTreeMap::from([(name.rsplit('/').next().unwrap_or(name).to_string(), s.clone())])
            }
            _ => BTreeMap::new(),
        };
        let bins = check_bins(&bins).map_err(&err)?;
        if !bins.is_empty() {
            out.bins.insert(path.clone(), bins);
        }
        location.insert(key.clone(), path.clone());
        out.packages.push(npm_package(path, name, version, url, integrity));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonc_comments_and_trailing_commas_go_strings_stay() {
        let text = "{\n // c\n \"a\": \"x // not a comment, }\",\n /* b\n */ \"b\": [1, 2,],\n}";
        let v: Value = serde_json::from_str(&strip_jsonc(text)).unwrap();
        assert_eq!(v["a"], "x // not a comment, }");
        assert_eq!(v["b"], serde_json::json!([1, 2]));
        assert_eq!(strip_jsonc(text).lines().count(), text.lines().count());
    }
}
