//! pnpm's isolated node_modules layout (`node-linker=isolated`, pnpm's
//! default), for pnpm-lock.yaml.
//!
//! Every package is unpacked once, at
//! `node_modules/.pnpm/<dir>/node_modules/<name>`, where `<dir>` is the
//! lock's package key (`name@version`, peers included) as pnpm turns it into
//! a file name. Its dependencies are symlinks beside it in that
//! `.pnpm/<dir>/node_modules`, so a package resolves exactly what it
//! declares. Each importer (workspace project) gets a symlink per direct
//! dependency in its own `node_modules` and the bins of those in its
//! `node_modules/.bin`; nothing else is reachable from there, which is
//! pnpm's strictness. With `hoist` (pnpm's default `hoist-pattern=*`) every
//! package is also linked, first found first, into
//! `node_modules/.pnpm/node_modules`, where only packages inside `.pnpm`
//! resolve from; `shamefully-hoist` links them into the root `node_modules`
//! instead. Symlink targets are install paths of packages, relative to the
//! lock's directory; the installer turns them into relative links.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use sha2::Digest as _;

use super::hoist::{Content, Graph};
use super::{node_modules_of, npm_package, JsBinDir, JsInstall, JsLink, Unpinned};
use crate::error::LockReadError;

/// pnpm settings that change the layout (from the workspace's `.npmrc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PnpmLayout {
    /// `node-linker=hoisted`: npm's flat layout instead of `.pnpm`.
    pub hoisted: bool,
    /// `hoist` (default true): the hidden hoist into `.pnpm/node_modules`.
    pub hoist: bool,
    /// `shamefully-hoist=true`: hoist into the root `node_modules` instead.
    pub shamefully_hoist: bool,
}

impl Default for PnpmLayout {
    fn default() -> Self {
        PnpmLayout {
            hoisted: false,
            hoist: true,
            shamefully_hoist: false,
        }
    }
}

impl PnpmLayout {
    /// Reads the settings from `.npmrc` text (`key=value` lines, `#`/`;`
    /// comments). `node-linker=pnp` is refused: farm lays out node_modules.
    pub fn from_npmrc(file: &str, text: &str) -> Result<PnpmLayout, LockReadError> {
        let mut out = PnpmLayout::default();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else { continue };
            let (k, v) = (k.trim(), v.trim().trim_matches(['"', '\'']));
            let flag = |v: &str| v.eq_ignore_ascii_case("true");
            match k {
                "node-linker" => match v {
                    "isolated" => out.hoisted = false,
                    "hoisted" => out.hoisted = true,
                    other => {
                        return Err(LockReadError::entry(
                            file,
                            "`node-linker`",
                            format!(
                                "is {other:?}; farm lays out node_modules `isolated` (pnpm's default) or `hoisted`"
                            ),
                        ))
                    }
                },
                "hoist" => out.hoist = flag(v),
                "shamefully-hoist" => out.shamefully_hoist = flag(v),
                _ => {}
            }
        }
        Ok(out)
    }
}

/// What the isolated layout needs of a package node besides the graph.
#[derive(Debug, Clone)]
pub(crate) struct PnpmNode {
    /// The lock's key without a v6 leading `/`, peers included (`a@1.0.0(b@2.0.0)`).
    pub key: String,
    /// `hasBin: true` in the lock.
    pub has_bin: bool,
}

/// pnpm's longest `.pnpm` directory name; longer ones are cut and hashed.
const MAX_DIR_NAME: usize = 120;

/// The `.pnpm` directory name of a package key, as pnpm's `depPathToFilename`
/// makes it: `/` and other characters unsafe in file names become `+`, the
/// peer parentheses `_`. Too long a name is cut and given a hash of the
/// whole (pnpm's is an MD5 in base32, farm's a SHA-256 prefix: the name only
/// has to be unique and stable). Anything that is still not one plain file
/// name is refused.
pub(crate) fn dir_name(key: &str) -> Result<String, String> {
    if key.chars().any(|c| c.is_control()) {
        return Err("has control characters".into());
    }
    let mut s: String = key
        .chars()
        .map(|c| if "\\/:*?\"<>|".contains(c) { '+' } else { c })
        .collect();
    if s.contains('(') {
        if s.ends_with(')') {
            s.pop();
        }
        s = s.replace(")(", "_").replace(['(', ')'], "_");
    }
    if s.len() > MAX_DIR_NAME {
        let hash = hex::encode(sha2::Sha256::digest(s.as_bytes()));
        let mut cut = MAX_DIR_NAME - 27;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s = format!("{}_{}", &s[..cut], &hash[..26]);
    }
    if s.is_empty() || s == "." || s == ".." || s == "node_modules" {
        return Err(format!(
            "gives the directory name {s:?}, which is not a plain file name"
        ));
    }
    Ok(s)
}

/// Lays `graph` out the pnpm way. `nodes` has an entry for every package node.
pub(crate) fn isolated(
    file: &str,
    graph: &Graph,
    nodes: &BTreeMap<usize, PnpmNode>,
    settings: PnpmLayout,
    mut out: JsInstall,
) -> Result<JsInstall, LockReadError> {
    let fail = |what: String, message: String| LockReadError::entry(file, what, message);
    // node → its real directory; one node per key, so one directory per package.
    let mut real: BTreeMap<usize, String> = BTreeMap::new();
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    for (id, node) in graph.nodes.iter().enumerate() {
        let Content::Package(p) = &node.content else { continue };
        let meta = nodes
            .get(&id)
            .ok_or_else(|| fail(format!("package `{}`", node.ident), "has no lock key".into()))?;
        let dir = dir_name(&meta.key).map_err(|m| fail(format!("package `{}`", meta.key), m))?;
        let path = format!("node_modules/.pnpm/{dir}/node_modules/{}", p.name);
        if let Some(other) = owner.insert(path.clone(), id) {
            return Err(fail(
                format!("package `{}`", meta.key),
                format!(
                    "lands at `{path}`, where `{}` is laid out too; hint: run `pnpm install` to rewrite the lock",
                    nodes.get(&other).map(|m| m.key.as_str()).unwrap_or("?")
                ),
            ));
        }
        match &p.integrity {
            Some(i) => out
                .packages
                .push(npm_package(path.clone(), &p.name, &p.version, p.url.clone(), i.clone())),
            None => out.unpinned.push(Unpinned {
                path: path.clone(),
                name: p.name.clone(),
                version: p.version.clone(),
                url: p.url.clone(),
            }),
        }
        if p.platform_unknown {
            out.platform_unknown.push(path.clone());
        }
        real.insert(id, path);
    }
    let has_bin = |id: usize| nodes.get(&id).is_some_and(|m| m.has_bin);
    let mut taken: BTreeSet<String> = owner.keys().cloned().collect();
    let mut add_link = |out: &mut JsInstall, path: String, target: String, tree: bool| -> Result<(), LockReadError> {
        if !taken.insert(path.clone()) {
            return Err(fail(
                format!("install path `{path}`"),
                "is laid out twice; hint: run `pnpm install` to rewrite the lock".into(),
            ));
        }
        let link = JsLink { path, target };
        if tree {
            out.tree_links.push(link);
        } else {
            out.links.push(link);
        }
        Ok(())
    };

    // Each importer's direct dependencies, and their bins.
    for (dir, deps) in &graph.importers {
        let nm = node_modules_of(dir);
        for (alias, &id) in deps {
            let at = format!("{nm}/{alias}");
            match &graph.nodes[id].content {
                Content::Link(target) => add_link(&mut out, at, target.clone(), false)?,
                Content::Package(_) => {
                    add_link(&mut out, at, real[&id].clone(), true)?;
                    if has_bin(id) {
                        out.bin_dirs.push(JsBinDir {
                            dir: format!("{nm}/.bin"),
                            package: real[&id].clone(),
                        });
                    }
                }
            }
        }
    }
    // Each package's dependencies beside it; their bins in the package's own node_modules/.bin.
    for (&id, path) in &real {
        let holder = path.rsplit_once("/node_modules/").map(|(h, _)| h).unwrap_or_default();
        for (alias, &dep) in &graph.nodes[id].deps {
            let at = format!("{holder}/node_modules/{alias}");
            if at == *path {
                continue;
            }
            let Some(target) = real.get(&dep) else {
                return Err(fail(
                    format!("package `{}` dependency `{alias}`", nodes[&id].key),
                    "is a link; pnpm links only workspace projects".into(),
                ));
            };
            add_link(&mut out, at, target.clone(), true)?;
            if has_bin(dep) {
                out.bin_dirs.push(JsBinDir {
                    dir: format!("{path}/node_modules/.bin"),
                    package: target.clone(),
                });
            }
        }
    }
    // The hidden (or shameful) hoist: breadth-first from the importers, the first package of each name.
    if settings.hoist || settings.shamefully_hoist {
        let root_direct: BTreeSet<&String> = graph.importers.get("").map(|d| d.keys().collect()).unwrap_or_default();
        let mut seen: BTreeSet<usize> = BTreeSet::new();
        let mut hoisted: BTreeSet<String> = BTreeSet::new();
        let mut queue: VecDeque<(String, usize)> = graph
            .importers
            .values()
            .flat_map(|d| d.iter().map(|(a, &n)| (a.clone(), n)))
            .collect();
        while let Some((alias, id)) = queue.pop_front() {
            let Some(target) = real.get(&id) else { continue };
            if hoisted.insert(alias.clone()) {
                let at = if settings.shamefully_hoist {
                    format!("node_modules/{alias}")
                } else {
                    format!("node_modules/.pnpm/node_modules/{alias}")
                };
                if !(settings.shamefully_hoist && root_direct.contains(&alias)) {
                    add_link(&mut out, at, target.clone(), true)?;
                }
            }
            if seen.insert(id) {
                queue.extend(graph.nodes[id].deps.iter().map(|(a, &n)| (a.clone(), n)));
            }
        }
    }
    out.bin_dirs.sort();
    out.bin_dirs.dedup();
    out.tree_links.sort();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pnpm's file names for keys: scopes and peers, and hostile keys that
    /// would not be a single file name.
    #[test]
    fn dir_names_are_pnpms_and_single_components() {
        assert_eq!(dir_name("@babel/core@7.24.0").unwrap(), "@babel+core@7.24.0");
        assert_eq!(
            dir_name("react-dom@18.3.1(react@18.3.1)").unwrap(),
            "react-dom@18.3.1_react@18.3.1"
        );
        assert_eq!(
            dir_name("a@1.0.0(b@2.0.0)(@s/c@3.0.0)").unwrap(),
            "a@1.0.0_b@2.0.0_@s+c@3.0.0"
        );
        assert_eq!(dir_name("../../etc").unwrap(), "..+..+etc");
        assert!(dir_name("..").is_err());
        assert!(dir_name("a\0b").is_err());
        let long = format!("a@1.0.0({})", "b".repeat(200));
        let d = dir_name(&long).unwrap();
        assert_eq!(d.len(), MAX_DIR_NAME);
        assert_ne!(d, dir_name(&format!("a@1.0.0({})", "c".repeat(200))).unwrap());
    }

    /// `.npmrc` settings that change the layout; `pnp` is refused by name.
    #[test]
    fn npmrc_settings() {
        let s = PnpmLayout::from_npmrc(".npmrc", "# c\nnode-linker = hoisted\n").unwrap();
        assert!(s.hoisted);
        let s = PnpmLayout::from_npmrc(".npmrc", "hoist=false\nshamefully-hoist=true\n").unwrap();
        assert!(!s.hoisted && !s.hoist && s.shamefully_hoist);
        let err = PnpmLayout::from_npmrc(".npmrc", "node-linker=pnp\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(".npmrc") && err.contains("node-linker") && err.contains("pnp"),
            "{err}"
        );
    }
}
