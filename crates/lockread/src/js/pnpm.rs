//! pnpm-lock.yaml, lockfileVersion 6.x and 9.0.
//!
//! `importers` (or, in a single-project v6 lock, the top-level
//! `dependencies`) hold each project's direct dependencies by directory;
//! v6 keys packages `/name@version(peers)` and keeps resolution and
//! dependencies together, v9 keys them `name@version`, with resolution in
//! `packages` and dependencies per peer variant in `snapshots`. A
//! `resolution` with only `integrity` is a tarball of the registry.

use std::collections::BTreeMap;

use serde::Deserialize;
use yaml_serde::Value;

use super::hoist::{hoist, Content, Graph, Node, Package};
use super::isolated::{isolated, PnpmLayout, PnpmNode};
use super::{parse_integrity, runs_on_target, split_name_at, tarball_url, JsInstall, JsLockKind};
use crate::error::{yaml_error, LockReadError};
use crate::names::{is_inside_relative, is_npm_name, is_version, join_inside};

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Importer {
    #[serde(default)]
    dependencies: BTreeMap<String, Value>,
    #[serde(default)]
    dev_dependencies: BTreeMap<String, Value>,
    #[serde(default)]
    optional_dependencies: BTreeMap<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PnpmLock {
    #[serde(default)]
    lockfile_version: Option<Value>,
    #[serde(default)]
    importers: BTreeMap<String, Importer>,
    /// A single-project v6 lock has its importer at the top level.
    #[serde(flatten)]
    root: Importer,
    #[serde(default)]
    packages: BTreeMap<String, PackageInfo>,
    #[serde(default)]
    snapshots: BTreeMap<String, Snapshot>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PackageInfo {
    #[serde(default)]
    resolution: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    os: Vec<String>,
    #[serde(default)]
    cpu: Vec<String>,
    #[serde(default)]
    libc: Vec<String>,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    has_bin: bool,
    #[serde(default)]
    dependencies: BTreeMap<String, Value>,
    #[serde(default)]
    optional_dependencies: BTreeMap<String, Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Snapshot {
    #[serde(default)]
    dependencies: BTreeMap<String, Value>,
    #[serde(default)]
    optional_dependencies: BTreeMap<String, Value>,
    #[serde(default)]
    optional: bool,
}

/// A YAML scalar as text (`18.3.1` stays a string; numbers are printed back).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// An importer dependency is `{specifier, version}`; package dependencies are the version alone.
fn dep_version(v: &Value) -> Option<String> {
    match v {
        Value::Mapping(m) => m.get("version").and_then(scalar),
        other => scalar(other),
    }
}

struct Reader<'a> {
    file: &'a str,
    registry: &'a str,
    v9: bool,
    lock: &'a PnpmLock,
    graph: Graph,
    /// snapshot key → node (None: skipped, for another platform)
    ids: BTreeMap<String, Option<usize>>,
    pending: Vec<(usize, String)>,
    /// Package node → its key and `hasBin`, for the isolated layout.
    meta: BTreeMap<usize, PnpmNode>,
}

/// Reads a pnpm-lock.yaml (v6/v9) and lays its packages out as pnpm does by
/// default (`.pnpm`, see [`PnpmLayout`]).
pub fn parse_pnpm_lock(file: &str, text: &str, registry: &str) -> Result<JsInstall, LockReadError> {
    parse_pnpm_lock_with(file, text, registry, PnpmLayout::default())
}

/// Reads a pnpm-lock.yaml (v6/v9) laid out with the given settings: pnpm's
/// isolated `.pnpm` layout, or npm's hoisted one for `node-linker=hoisted`.
pub fn parse_pnpm_lock_with(
    file: &str,
    text: &str,
    registry: &str,
    settings: PnpmLayout,
) -> Result<JsInstall, LockReadError> {
    let lock: PnpmLock = yaml_serde::from_str(text).map_err(|e| yaml_error(file, e))?;
    let version = lock
        .lockfile_version
        .as_ref()
        .and_then(scalar)
        .unwrap_or_else(|| "(missing)".into());
    let v9 = match version.split('.').next() {
        Some("6") => false,
        Some("9") => true,
        _ => {
            return Err(LockReadError::Version {
                file: file.into(),
                found: format!("lockfileVersion {version}"),
                supported: "lockfileVersion 6.x and 9.0".into(),
                hint: "; hint: run `pnpm install` with pnpm 8 or newer to rewrite it".into(),
            })
        }
    };
    let mut r = Reader {
        file,
        registry,
        v9,
        lock: &lock,
        graph: Graph::default(),
        ids: BTreeMap::new(),
        pending: Vec::new(),
        meta: BTreeMap::new(),
    };
    let single = BTreeMap::from([(".".to_string(), &lock.root)]);
    let importers: BTreeMap<String, &Importer> = if lock.importers.is_empty() {
        single
    } else {
        lock.importers.iter().map(|(k, v)| (k.clone(), v)).collect()
    };
    for (dir, imp) in importers {
        let dir_rel = if dir == "." {
            String::new()
        } else {
            dir.trim_start_matches("./").to_string()
        };
        if !is_inside_relative(&dir_rel) {
            return Err(LockReadError::entry(
                file,
                format!("importer `{dir}`"),
                "is not a directory inside the project",
            ));
        }
        let mut deps = BTreeMap::new();
        for (map, optional) in [
            (&imp.dependencies, false),
            (&imp.dev_dependencies, false),
            (&imp.optional_dependencies, true),
        ] {
            for (alias, v) in map {
                let what = format!("importer `{dir}` dependency `{alias}`");
                let value =
                    dep_version(v).ok_or_else(|| LockReadError::entry(file, what.clone(), "has no `version`"))?;
                if let Some(id) = r.reference(Some(&dir_rel), alias, &value, optional, &what)? {
                    deps.insert(alias.clone(), id);
                }
            }
        }
        r.graph.importers.insert(dir_rel, deps);
    }
    while let Some((id, key)) = r.pending.pop() {
        let (deps, optional_deps) = r.dependencies_of(&key);
        for (map, optional) in [(deps, false), (optional_deps, true)] {
            for (alias, v) in map {
                let what = format!("package `{key}` dependency `{alias}`");
                let value = scalar(v).ok_or_else(|| LockReadError::entry(file, what.clone(), "is not a version"))?;
                if let Some(child) = r.reference(None, alias, &value, optional, &what)? {
                    r.graph.nodes[id].deps.insert(alias.clone(), child);
                }
            }
        }
    }
    let out = JsInstall::new(JsLockKind::Pnpm, false);
    if settings.hoisted {
        hoist(file, &r.graph, out)
    } else {
        isolated(file, &r.graph, &r.meta, settings, out)
    }
}

impl<'a> Reader<'a> {
    fn dependencies_of(&self, key: &str) -> (&'a BTreeMap<String, Value>, &'a BTreeMap<String, Value>) {
        let lock = self.lock;
        if self.v9 {
            match lock.snapshots.get(key) {
                Some(s) => (&s.dependencies, &s.optional_dependencies),
                None => empty_pair(),
            }
        } else {
            match lock.packages.get(key) {
                Some(p) => (&p.dependencies, &p.optional_dependencies),
                None => empty_pair(),
            }
        }
    }

    /// The node a dependency reference names; `importer` is the directory
    /// `link:` paths are relative to (only importers may link).
    fn reference(
        &mut self,
        importer: Option<&str>,
        alias: &str,
        value: &str,
        optional: bool,
        what: &str,
    ) -> Result<Option<usize>, LockReadError> {
        let err = |m: String| LockReadError::entry(self.file, what, m);
        if !is_npm_name(alias) {
            return Err(err(format!("{alias:?} is not a valid npm package name")));
        }
        if let Some(path) = value.strip_prefix("link:") {
            let Some(dir) = importer else {
                return Err(err(format!(
                    "is a `link:` to {path:?} inside a package; farm links only workspace projects"
                )));
            };
            let target = join_inside(dir, path).filter(|t| !t.is_empty()).ok_or_else(|| {
                err(format!(
                    "links to {path:?}, outside the project; farm installs only links to directories inside it"
                ))
            })?;
            self.graph.nodes.push(Node {
                ident: format!("link:{target}"),
                content: Content::Link(target),
                deps: BTreeMap::new(),
            });
            return Ok(Some(self.graph.nodes.len() - 1));
        }
        if value.starts_with("file:") {
            return Err(err(format!(
                "is a local `{value}` dependency; farm locks registry packages and workspace links only (hint: make it a workspace member)"
            )));
        }
        let key = self.key_of(alias, value);
        self.node(&key, optional, what)
    }

    /// The `packages`/`snapshots` key a dependency reference points at.
    fn key_of(&self, alias: &str, value: &str) -> String {
        let before_peers = value.split('(').next().unwrap_or(value);
        if self.v9 {
            // `bar@1.0.0` is an alias to another package; a bare version is `alias@version`.
            if before_peers.contains('@') {
                value.to_string()
            } else {
                format!("{alias}@{value}")
            }
        } else if value.starts_with('/') || !value.starts_with(|c: char| c.is_ascii_digit()) {
            value.to_string()
        } else {
            format!("/{alias}@{value}")
        }
    }

    fn node(&mut self, key: &str, optional: bool, what: &str) -> Result<Option<usize>, LockReadError> {
        if let Some(id) = self.ids.get(key) {
            return Ok(*id);
        }
        let file = self.file;
        let pkg_what = format!("package `{key}`");
        let err = |m: String| LockReadError::entry(file, pkg_what.clone(), m);
        let base = key.split('(').next().unwrap_or(key);
        let info_key = if self.v9 { base } else { key };
        let info = self.lock.packages.get(info_key).ok_or_else(|| {
            LockReadError::entry(
                file,
                what,
                format!("names `{info_key}`, which is not in `packages`; hint: run `pnpm install` to repair the lock"),
            )
        })?;
        let snapshot_optional = self.v9 && self.lock.snapshots.get(key).is_some_and(|s| s.optional);
        if (optional || info.optional || snapshot_optional) && !runs_on_target(&info.os, &info.cpu, &info.libc) {
            self.ids.insert(key.to_string(), None);
            return Ok(None);
        }
        let bare = base.trim_start_matches('/');
        let (key_name, key_version) = split_name_at(bare).ok_or_else(|| err("is not `name@version`".into()))?;
        let name = info.name.clone().unwrap_or_else(|| key_name.to_string());
        let version = info
            .version
            .as_ref()
            .and_then(scalar)
            .unwrap_or_else(|| key_version.to_string());
        if !is_npm_name(&name) {
            return Err(err(format!("{name:?} is not a valid npm package name")));
        }
        let res = info
            .resolution
            .as_ref()
            .ok_or_else(|| err("has no `resolution`".into()))?;
        let res_str = |k: &str| res.get(k).and_then(scalar);
        if let Some(kind) = res_str("type") {
            let detail = res_str("directory").or_else(|| res_str("repo")).unwrap_or_default();
            return Err(err(format!(
                "resolves to a {kind} source {:?}; farm locks registry packages and workspace links only (hint: publish it to your registry, or make it a workspace member)",
                farm_lockfiles::redact::redact_url(&detail)
            )));
        }
        if res.contains_key("commit") || res.contains_key("repo") {
            return Err(err(
                "resolves to a git repository; farm locks registry packages and workspace links only".into(),
            ));
        }
        let tarball = res_str("tarball");
        if let Some(t) = tarball.as_deref().filter(|t| t.starts_with("file:")) {
            return Err(err(format!(
                "resolves to the local tarball {t:?}; farm locks registry packages and workspace links only"
            )));
        }
        if !is_version(&version) {
            return Err(err(format!("version {version:?} is not a package version")));
        }
        let integrity = parse_integrity(res_str("integrity").as_deref())
            .map_err(|m| err(format!("`resolution` {m}; hint: run `pnpm install` so pnpm records it")))?;
        let url = tarball_url(self.registry, &name, &version, tarball.as_deref())
            .map_err(|m| err(format!("`resolution.tarball` {m}")))?;
        self.graph.nodes.push(Node {
            ident: bare.to_string(),
            content: Content::Package(Package {
                name,
                version,
                url,
                integrity: Some(integrity),
                bins: None,
                platform_unknown: false,
            }),
            deps: BTreeMap::new(),
        });
        let id = self.graph.nodes.len() - 1;
        self.meta.insert(
            id,
            PnpmNode {
                key: key.trim_start_matches('/').to_string(),
                has_bin: info.has_bin,
            },
        );
        self.ids.insert(key.to_string(), Some(id));
        self.pending.push((id, key.to_string()));
        Ok(Some(id))
    }
}

fn empty_pair() -> (&'static BTreeMap<String, Value>, &'static BTreeMap<String, Value>) {
    static EMPTY: BTreeMap<String, Value> = BTreeMap::new();
    (&EMPTY, &EMPTY)
}
