//! npm's hoisted node_modules layout for graph-based locks (pnpm, yarn).
//!
//! Each dependency edge, breadth-first from the importers (the workspace
//! root first, then each member, then each placed package's own edges, all
//! in name order), is placed at the highest node_modules directory, walking
//! up from the dependent, where no other version of that name sits in
//! between and where placing it would not shadow a version another package
//! already resolves from higher up; otherwise it nests under the dependent.
//! The same inputs always give the same tree.

use std::collections::{BTreeMap, VecDeque};

use farm_lockfiles::integrity::Integrity;

use super::{node_modules_of, npm_package, JsInstall, JsLink, Unpinned};
use crate::error::LockReadError;
use crate::names::install_path_name;

/// A dependency graph read from a lock.
#[derive(Debug, Default)]
pub(crate) struct Graph {
    pub nodes: Vec<Node>,
    /// Importer directory (relative to the lock, `""` the root) → its
    /// dependencies (install name → node).
    pub importers: BTreeMap<String, BTreeMap<String, usize>>,
    /// Links placed in the root node_modules before anything else, as npm
    /// and yarn link every workspace member there (name → member node).
    pub root_links: BTreeMap<String, usize>,
}

#[derive(Debug)]
pub(crate) struct Node {
    /// Nodes with equal `ident` are the same installed package.
    pub ident: String,
    pub content: Content,
    /// Install name → node.
    pub deps: BTreeMap<String, usize>,
}

#[derive(Debug)]
pub(crate) enum Content {
    Package(Package),
    /// A symlink to a directory relative to the lock.
    Link(String),
}

#[derive(Debug)]
pub(crate) struct Package {
    pub name: String,
    pub version: String,
    pub url: String,
    /// `None` when it must be pinned from the registry.
    pub integrity: Option<Integrity>,
    pub bins: Option<BTreeMap<String, String>>,
    pub platform_unknown: bool,
}

/// The deepest node_modules nesting farm lays out; real trees stay far below.
const MAX_DEPTH: usize = 64;

/// The location a dependency of `location` resolves from next, walking up.
fn parent(location: &str) -> Option<&str> {
    if location.is_empty() {
        return None;
    }
    match location.rfind("node_modules/") {
        Some(i) => Some(location[..i].trim_end_matches('/')),
        None => Some(""),
    }
}

fn is_within(location: &str, level: &str) -> bool {
    level.is_empty() || location == level || location.starts_with(&format!("{level}/"))
}

fn is_strictly_above(above: &str, level: &str) -> bool {
    above != level && is_within(level, above)
}

struct Resolution {
    at: String,
    node: usize,
}

pub(crate) fn hoist(file: &str, graph: &Graph, mut out: JsInstall) -> Result<JsInstall, LockReadError> {
    // level → install name → node
    let mut placed: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    // (dependent location, name) → where it resolves
    let mut resolved: BTreeMap<(String, String), Resolution> = BTreeMap::new();
    let mut queue: VecDeque<(String, String, usize)> = VecDeque::new();

    for (name, &node) in &graph.root_links {
        placed.entry(String::new()).or_default().insert(name.clone(), node);
    }
    for (dir, deps) in &graph.importers {
        for (name, &node) in deps {
            queue.push_back((dir.clone(), name.clone(), node));
        }
    }
    let fail = |what: String, message: String| LockReadError::entry(file, what, message);

    while let Some((from, name, node)) = queue.pop_front() {
        let ident = &graph.nodes[node].ident;
        let mut candidates: Vec<String> = Vec::new();
        let mut level = Some(from.as_str());
        let mut done = false;
        while let Some(l) = level {
            match placed.get(l).and_then(|m| m.get(&name)) {
                Some(&other) if graph.nodes[other].ident == *ident => {
                    resolved.insert(
                        (from.clone(), name.clone()),
                        Resolution {
                            at: l.to_string(),
                            node,
                        },
                    );
                    done = true;
                    break;
                }
                Some(_) => break,
                None => candidates.push(l.to_string()),
            }
            level = parent(l);
        }
        if done {
            continue;
        }
        let Some(lowest) = candidates.first().cloned() else {
            return Err(fail(
                format!("`{name}` needed by `{}`", if from.is_empty() { "the root project" } else { &from }),
                format!(
                    "another version of `{name}` already sits in {}/; farm cannot lay this tree out the way npm would (hint: run the package manager's dedupe and lock again)",
                    node_modules_of(&from)
                ),
            ));
        };
        let shadows = |c: &str| {
            resolved
                .iter()
                .filter(|((f, n), r)| *n == name && is_within(f, c) && is_strictly_above(&r.at, c))
                .map(|((f, n), r)| (f.clone(), n.clone(), r.node))
                .collect::<Vec<_>>()
        };
        let chosen = candidates.iter().rev().find(|c| shadows(c).is_empty()).cloned();
        let at = match chosen {
            Some(c) => c,
            None => {
                // Nest under the dependent and re-place what that hides.
                for (f, n, dep) in shadows(&lowest) {
                    resolved.remove(&(f.clone(), n.clone()));
                    queue.push_back((f, n, dep));
                }
                lowest
            }
        };
        let path = format!("{}/{name}", node_modules_of(&at));
        if path.matches("node_modules/").count() > MAX_DEPTH {
            return Err(fail(
                format!("`{name}`"),
                format!("nests deeper than {MAX_DEPTH} node_modules levels; the dependency graph does not settle"),
            ));
        }
        install_path_name(&path).map_err(|m| fail(format!("install path `{path}`"), m))?;
        placed.entry(at.clone()).or_default().insert(name.clone(), node);
        resolved.insert((from.clone(), name.clone()), Resolution { at, node });
        if let Content::Package(_) = graph.nodes[node].content {
            for (dep_name, &dep) in &graph.nodes[node].deps {
                queue.push_back((path.clone(), dep_name.clone(), dep));
            }
        }
    }

    for (level, names) in &placed {
        for (name, &node) in names {
            let path = format!("{}/{name}", node_modules_of(level));
            match &graph.nodes[node].content {
                Content::Link(target) => out.links.push(JsLink {
                    path,
                    target: target.clone(),
                }),
                Content::Package(p) => {
                    if let Some(bins) = p.bins.as_ref().filter(|b| !b.is_empty()) {
                        out.bins.insert(path.clone(), bins.clone());
                    }
                    if p.platform_unknown {
                        out.platform_unknown.push(path.clone());
                    }
                    match &p.integrity {
                        Some(i) => out
                            .packages
                            .push(npm_package(path, &p.name, &p.version, p.url.clone(), i.clone())),
                        None => out.unpinned.push(Unpinned {
                            path,
                            name: p.name.clone(),
                            version: p.version.clone(),
                            url: p.url.clone(),
                        }),
                    }
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::js::JsLockKind;

    fn pkg(graph: &mut Graph, name: &str, version: &str) -> usize {
        graph.nodes.push(Node {
            ident: format!("{name}@{version}"),
            content: Content::Package(Package {
                name: name.into(),
                version: version.into(),
                url: format!("https://r.example.invalid/{name}-{version}.tgz"),
                integrity: Some(farm_lockfiles::integrity::sha256_of(name.as_bytes())),
                bins: None,
                platform_unknown: false,
            }),
            deps: BTreeMap::new(),
        });
        graph.nodes.len() - 1
    }

    fn layout(graph: &Graph) -> Vec<String> {
        let out = hoist("t", graph, JsInstall::new(JsLockKind::Pnpm, false)).unwrap();
        out.packages
            .iter()
            .map(|p| format!("{}@{}", p.path, p.artifact.version))
            .collect()
    }

    /// A package placed higher must not hide the version a sibling already
    /// resolves from the root: `a`'s `l@1` needs `r@2`, but `a`'s `f@1`
    /// resolves `r@1` from the root through `node_modules/a`, so `r@2` nests
    /// under `l` rather than in `node_modules/a/node_modules`.
    #[test]
    fn hoisting_never_shadows_an_existing_resolution() {
        let mut g = Graph::default();
        let a = pkg(&mut g, "a", "1.0.0");
        let f1 = pkg(&mut g, "f", "1.0.0");
        let f2 = pkg(&mut g, "f", "2.0.0");
        let l1 = pkg(&mut g, "l", "1.0.0");
        let l2 = pkg(&mut g, "l", "2.0.0");
        let r1 = pkg(&mut g, "r", "1.0.0");
        let r2 = pkg(&mut g, "r", "2.0.0");
        g.nodes[a].deps.insert("f".into(), f1);
        g.nodes[a].deps.insert("l".into(), l1);
        g.nodes[f1].deps.insert("r".into(), r1);
        g.nodes[l1].deps.insert("r".into(), r2);
        let root = BTreeMap::from([
            ("a".to_string(), a),
            ("f".to_string(), f2),
            ("l".to_string(), l2),
            ("r".to_string(), r1),
        ]);
        g.importers.insert(String::new(), root);
        assert_eq!(
            layout(&g),
            [
                "node_modules/a@1.0.0",
                "node_modules/a/node_modules/f@1.0.0",
                "node_modules/a/node_modules/l@1.0.0",
                "node_modules/a/node_modules/l/node_modules/r@2.0.0",
                "node_modules/f@2.0.0",
                "node_modules/l@2.0.0",
                "node_modules/r@1.0.0",
            ]
        );
    }

    /// Cycles end where the package is found walking up.
    #[test]
    fn cycles_terminate() {
        let mut g = Graph::default();
        let a = pkg(&mut g, "a", "1.0.0");
        let b = pkg(&mut g, "b", "1.0.0");
        g.nodes[a].deps.insert("b".into(), b);
        g.nodes[b].deps.insert("a".into(), a);
        g.importers
            .insert(String::new(), BTreeMap::from([("a".to_string(), a)]));
        assert_eq!(layout(&g), ["node_modules/a@1.0.0", "node_modules/b@1.0.0"]);
    }
}
