//! yarn.lock of yarn 2, 3 and 4 ("Berry", `__metadata.version` 4 to 8): YAML
//! keyed by the descriptors each entry resolves (`"react@npm:^18.2.0,
//! react@npm:^18.3.1"`), with `resolution` (`react@npm:18.3.1`),
//! `dependencies`, `bin`, `conditions` and `checksum`.
//!
//! Berry's `checksum` is the digest of the zip yarn stores in its cache,
//! not of the npm tarball, so it cannot verify a download. Registry
//! packages come out [`super::Unpinned`]; `JsInstall::pin_from_registry`
//! takes each tarball's `dist.integrity` from the registry at lock time,
//! and farm.lock pins it from then on. Only `npm:` resolutions (and yarn's
//! built-in compatibility patches of them) are read; git, file, link,
//! portal, exec, URL and user `patch:` resolutions are refused.

use std::collections::BTreeMap;

use yaml_serde::Value;

use super::hoist::{hoist, Content, Graph, Node, Package};
use super::{check_bins, split_name_at, tarball_url, JsInstall, JsLockKind, TARGET_CPU, TARGET_LIBC, TARGET_OS};
use crate::error::{yaml_error, LockReadError};
use crate::names::{is_npm_name, is_version, join_inside};

struct Entry<'a> {
    key: &'a str,
    map: &'a yaml_serde::Mapping,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn get_str(map: &yaml_serde::Mapping, k: &str) -> Option<String> {
    map.get(k).and_then(text)
}

fn get_map<'a>(map: &'a yaml_serde::Mapping, k: &str) -> Option<&'a yaml_serde::Mapping> {
    map.get(k).and_then(|v| v.as_mapping())
}

/// `%xx` decoding for the parts of Berry locators that are URL-encoded.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Evaluates a `conditions` string (`os=linux & cpu=x64`, `|` for either).
fn conditions_hold(cond: &str) -> bool {
    cond.split('|').any(|alt| {
        alt.split('&').all(|term| match term.trim().split_once('=') {
            Some(("os", v)) => v.trim() == TARGET_OS,
            Some(("cpu", v)) => v.trim() == TARGET_CPU,
            Some(("libc", v)) => v.trim() == TARGET_LIBC,
            _ => true,
        })
    })
}

/// What a resolution resolves to.
enum Resolved {
    Registry {
        name: String,
        version: String,
        archive: Option<String>,
    },
    Workspace {
        name: String,
        path: String,
    },
}

struct Reader<'a> {
    file: &'a str,
    registry: &'a str,
    entries: Vec<Entry<'a>>,
    by_descriptor: BTreeMap<String, usize>,
    workspaces_by_name: BTreeMap<String, usize>,
    graph: Graph,
    ids: BTreeMap<usize, Option<usize>>,
    pending: Vec<(usize, usize)>,
}

/// Reads a Berry yarn.lock; registry packages come out unpinned (see the module docs).
pub fn parse_yarn_berry(file: &str, text: &str, registry: &str) -> Result<JsInstall, LockReadError> {
    let doc: BTreeMap<String, Value> = yaml_serde::from_str(text).map_err(|e| yaml_error(file, e))?;
    let meta = doc
        .get("__metadata")
        .and_then(|m| m.as_mapping())
        .ok_or_else(|| LockReadError::syntax(file, None, "has no `__metadata` block; not a yarn Berry lockfile"))?;
    let version = get_str(meta, "version").unwrap_or_else(|| "(missing)".into());
    match version.parse::<u32>() {
        Ok(4..=8) => {}
        _ => {
            return Err(LockReadError::Version {
                file: file.into(),
                found: format!("__metadata.version {version}"),
                supported: "versions 4 to 8 (yarn 2 to 4)".into(),
                hint: "; hint: run `yarn install` with yarn 4 to rewrite it".into(),
            })
        }
    }
    let mut r = Reader {
        file,
        registry,
        entries: Vec::new(),
        by_descriptor: BTreeMap::new(),
        workspaces_by_name: BTreeMap::new(),
        graph: Graph::default(),
        ids: BTreeMap::new(),
        pending: Vec::new(),
    };
    for (key, v) in &doc {
        if key == "__metadata" {
            continue;
        }
        let map = v
            .as_mapping()
            .ok_or_else(|| LockReadError::entry(file, format!("entry `{key}`"), "is not a mapping of fields"))?;
        let idx = r.entries.len();
        r.entries.push(Entry { key, map });
        for d in key.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            r.by_descriptor.insert(d.to_string(), idx);
        }
    }
    // Workspaces: the importers, and links in the root node_modules.
    for idx in 0..r.entries.len() {
        if let Resolved::Workspace { name, path } = r.resolution(idx)? {
            r.workspaces_by_name.insert(name.clone(), idx);
            if !path.is_empty() {
                r.graph.nodes.push(Node {
                    ident: format!("link:{path}"),
                    content: Content::Link(path.clone()),
                    deps: BTreeMap::new(),
                });
                let id = r.graph.nodes.len() - 1;
                r.graph.root_links.insert(name, id);
                r.ids.insert(idx, Some(id));
            }
        }
    }
    let workspaces: Vec<usize> = r.workspaces_by_name.values().copied().collect();
    for idx in workspaces {
        let Resolved::Workspace { path, .. } = r.resolution(idx)? else {
            continue;
        };
        let deps = r.dependencies(idx)?;
        r.graph.importers.insert(path, deps);
    }
    while let Some((id, idx)) = r.pending.pop() {
        let deps = r.dependencies(idx)?;
        r.graph.nodes[id].deps = deps;
    }
    hoist(file, &r.graph, JsInstall::new(JsLockKind::YarnBerry, true))
}

impl<'a> Reader<'a> {
    fn err(&self, idx: usize, m: String) -> LockReadError {
        LockReadError::entry(self.file, format!("entry `{}`", self.entries[idx].key), m)
    }

    fn resolution(&self, idx: usize) -> Result<Resolved, LockReadError> {
        let e = &self.entries[idx];
        let res = get_str(e.map, "resolution").ok_or_else(|| self.err(idx, "has no `resolution`".into()))?;
        let (name, rest) = split_name_at(&res)
            .ok_or_else(|| self.err(idx, format!("`resolution` {res:?} is not `name@protocol:…`")))?;
        // `::` parameters may carry an encoded URL; they are not shown.
        let shown = farm_lockfiles::redact::redact_url(res.split("::").next().unwrap_or(&res));
        let refuse = |what: &str| {
            self.err(
                idx,
                format!(
                    "resolves to {what} ({shown:?}); farm locks registry (`npm:`) packages and workspaces only (hint: publish it to your registry, or make it a workspace)"
                ),
            )
        };
        if let Some(path) = rest.strip_prefix("workspace:") {
            let path = if path == "." { "" } else { path };
            let path = join_inside("", path)
                .ok_or_else(|| self.err(idx, format!("workspace path {path:?} is outside the project")))?;
            return Ok(Resolved::Workspace {
                name: name.to_string(),
                path,
            });
        }
        let npm = if let Some(v) = rest.strip_prefix("npm:") {
            (name.to_string(), v.to_string())
        } else if let Some(p) = rest.strip_prefix("patch:") {
            // `typescript@patch:typescript@npm%3A5.4.5#optional!builtin<compat/typescript>::version=…`:
            // yarn's built-in patches only adapt packages to Plug'n'Play; node_modules installs use the package as published.
            let (inner, patch) = p.split_once('#').unwrap_or((p, ""));
            let builtin = ["optional!builtin<", "~builtin<", "builtin<"]
                .iter()
                .any(|b| patch.starts_with(b));
            if !builtin {
                return Err(refuse("a patched package (`patch:`)"));
            }
            let inner = percent_decode(inner);
            let (real, inner_rest) = split_name_at(&inner).ok_or_else(|| refuse("a patch of an unknown package"))?;
            let v = inner_rest
                .strip_prefix("npm:")
                .ok_or_else(|| refuse("a patch of a non-registry package"))?;
            (real.to_string(), v.to_string())
        } else {
            let kind = rest.split(':').next().unwrap_or(rest);
            return Err(refuse(&format!("a `{kind}:` source")));
        };
        let (real_name, v) = npm;
        // `1.2.3::__archiveUrl=<encoded>` records a tarball URL of another registry.
        let (version, params) = v.split_once("::").unwrap_or((&v, ""));
        let archive = params
            .split('&')
            .find_map(|kv| kv.strip_prefix("__archiveUrl="))
            .map(percent_decode);
        Ok(Resolved::Registry {
            name: real_name,
            version: version.to_string(),
            archive,
        })
    }

    /// The entry a `name: range` dependency of entry `idx` resolves to.
    fn lookup(&self, idx: usize, name: &str, range: &str) -> Result<usize, LockReadError> {
        let mut candidates = vec![format!("{name}@{range}")];
        if !range.contains(':') {
            candidates.push(format!("{name}@npm:{range}"));
        }
        for c in &candidates {
            if let Some(&i) = self.by_descriptor.get(c) {
                return Ok(i);
            }
        }
        if range.starts_with("workspace:") {
            if let Some(&i) = self.workspaces_by_name.get(name) {
                return Ok(i);
            }
        }
        Err(self.err(
            idx,
            format!("dependency `{name}@{range}` has no entry in the lockfile; hint: run `yarn install` to repair it"),
        ))
    }

    fn dependencies(&mut self, idx: usize) -> Result<BTreeMap<String, usize>, LockReadError> {
        let e = &self.entries[idx];
        let mut out = BTreeMap::new();
        let Some(deps) = get_map(e.map, "dependencies") else {
            return Ok(out);
        };
        let meta = get_map(e.map, "dependenciesMeta");
        for (k, v) in deps {
            let (Some(name), Some(range)) = (text(k), text(v)) else {
                return Err(self.err(idx, "`dependencies` must map names to ranges".into()));
            };
            if !is_npm_name(&name) {
                return Err(self.err(idx, format!("dependency {name:?} is not a valid npm package name")));
            }
            let optional = meta
                .and_then(|m| get_map(m, &name))
                .and_then(|m| m.get("optional"))
                .and_then(|o| o.as_bool())
                .unwrap_or(false);
            let child = self.lookup(idx, &name, &range)?;
            if let Some(id) = self.node(child, optional)? {
                out.insert(name, id);
            }
        }
        Ok(out)
    }

    fn node(&mut self, idx: usize, optional: bool) -> Result<Option<usize>, LockReadError> {
        if let Some(&id) = self.ids.get(&idx) {
            return Ok(id);
        }
        let e = &self.entries[idx];
        let map = e.map;
        let conditions = get_str(map, "conditions");
        if conditions.as_deref().is_some_and(|c| !conditions_hold(c)) {
            self.ids.insert(idx, None);
            return Ok(None);
        }
        let (name, version, archive) = match self.resolution(idx)? {
            Resolved::Registry { name, version, archive } => (name, version, archive),
            Resolved::Workspace { .. } => {
                // The root workspace as someone's dependency: nothing to install.
                self.ids.insert(idx, None);
                return Ok(None);
            }
        };
        if !is_npm_name(&name) {
            return Err(self.err(idx, format!("{name:?} is not a valid npm package name")));
        }
        if !is_version(&version) {
            return Err(self.err(idx, format!("version {version:?} is not a package version")));
        }
        let url = tarball_url(self.registry, &name, &version, archive.as_deref())
            .map_err(|m| self.err(idx, format!("`__archiveUrl` {m}")))?;
        let bins = match get_map(map, "bin") {
            Some(b) => {
                let mut m = BTreeMap::new();
                for (k, v) in b {
                    if let (Some(k), Some(v)) = (text(k), text(v)) {
                        m.insert(k, v);
                    }
                }
                Some(check_bins(&m).map_err(|m| self.err(idx, m))?)
            }
            None => None,
        };
        self.graph.nodes.push(Node {
            ident: format!("{name}@{version}"),
            content: Content::Package(Package {
                name,
                version,
                url,
                integrity: None,
                bins,
                platform_unknown: optional && conditions.is_none(),
            }),
            deps: BTreeMap::new(),
        });
        let id = self.graph.nodes.len() - 1;
        self.ids.insert(idx, Some(id));
        self.pending.push((id, idx));
        Ok(Some(id))
    }
}
