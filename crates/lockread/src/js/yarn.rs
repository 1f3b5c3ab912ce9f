//! yarn.lock v1 (yarn classic): its own indentation-based text format.
//!
//! ```text
//! # yarn lockfile v1
//!
//! "@babel/code-frame@^7.0.0", "@babel/code-frame@^7.10.4":
//!   version "7.12.13"
//!   resolved "https://registry.example/@babel/code-frame/-/code-frame-7.12.13.tgz#dcfc…"
//!   integrity sha512-…
//!   dependencies:
//!     "@babel/highlight" "^7.12.13"
//! ```
//!
//! Each top-level block lists the descriptors (`name@range`) it resolves;
//! fields are `key value` pairs or nested blocks, indented by two spaces.
//! Strings are double-quoted with JSON escapes or bare words. The lock does
//! not record the projects' own dependencies, so those come from the
//! workspace's package.json files.

use std::collections::BTreeMap;

use super::hoist::{hoist, Content, Graph, Node, Package};
use super::workspace::Manifest;
use super::{parse_integrity, split_name_at, tarball_url, JsInstall, JsLockKind};
use crate::error::LockReadError;
use crate::names::{is_npm_name, is_version};

/// A value in yarn.lock: a string or a nested block, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YarnValue {
    Str(String, usize),
    Map(BTreeMap<String, YarnValue>, usize),
}

impl YarnValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            YarnValue::Str(s, _) => Some(s),
            YarnValue::Map(..) => None,
        }
    }

    pub fn line(&self) -> usize {
        match self {
            YarnValue::Str(_, l) | YarnValue::Map(_, l) => *l,
        }
    }
}

/// One top-level block: the descriptors it resolves and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YarnEntry {
    pub line: usize,
    pub keys: Vec<String>,
    pub fields: BTreeMap<String, YarnValue>,
}

struct Line {
    number: usize,
    indent: usize,
    items: Vec<String>,
    /// A `key:` line (opens a block) rather than `key value`.
    opens: bool,
}

fn lex_line(file: &str, number: usize, raw: &str) -> Result<Option<Line>, LockReadError> {
    let err = |m: String| LockReadError::syntax(file, Some(number), m);
    let text = raw.strip_suffix('\r').unwrap_or(raw);
    let trimmed = text.trim_start_matches(' ');
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    if trimmed.starts_with('\t') {
        return Err(err("indented with a tab; yarn.lock indents with two spaces".into()));
    }
    if ["<<<<<<<", "=======", ">>>>>>>"].iter().any(|m| trimmed.starts_with(m)) {
        return Err(err(
            "unresolved merge conflict marker; hint: run `yarn install` to merge the lockfile".into(),
        ));
    }
    let indent = text.len() - trimmed.len();
    if indent & 1 == 1 {
        return Err(err(format!(
            "indented by {indent} spaces; yarn.lock indents by multiples of two"
        )));
    }
    let bytes = trimmed.as_bytes();
    let mut items = Vec::new();
    let mut i = 0;
    let mut opens = false;
    let mut separated = true;
    while i < bytes.len() {
        match bytes[i] {
            b' ' => {
                i += 1;
                separated = true;
            }
            b',' => {
                i += 1;
                separated = true;
            }
            b':' if i + 1 == bytes.len() || bytes[i + 1] == b' ' => {
                opens = true;
                i += 1;
                if !trimmed[i..].trim().is_empty() && !trimmed[i..].trim_start().starts_with('#') {
                    return Err(err(format!(
                        "expected the end of the line after `:`, found {:?}",
                        trimmed[i..].trim()
                    )));
                }
                break;
            }
            b'#' if separated => break,
            b'"' => {
                let start = i;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if i >= bytes.len() {
                    return Err(err(format!(
                        "unterminated string starting at column {}",
                        indent + start + 1
                    )));
                }
                i += 1;
                let s: String = serde_json::from_str(&trimmed[start..i])
                    .map_err(|e| err(format!("bad string {}: {e}", &trimmed[start..i])))?;
                items.push(s);
                separated = false;
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(bytes[i], b' ' | b',')
                    && !(bytes[i] == b':' && (i + 1 == bytes.len() || bytes[i + 1] == b' '))
                {
                    i += 1;
                }
                items.push(trimmed[start..i].to_string());
                separated = false;
            }
        }
    }
    if items.is_empty() {
        return Err(err("expected a key".into()));
    }
    if !opens && items.len() != 2 {
        return Err(err(format!(
            "expected `key value` or `key:`, found {} item{}",
            items.len(),
            if items.len() == 1 { "" } else { "s" }
        )));
    }
    Ok(Some(Line {
        number,
        indent,
        items,
        opens,
    }))
}

fn block(
    file: &str,
    lines: &[Line],
    idx: &mut usize,
    indent: usize,
) -> Result<BTreeMap<String, YarnValue>, LockReadError> {
    let mut map = BTreeMap::new();
    while *idx < lines.len() {
        let line = &lines[*idx];
        if line.indent < indent {
            break;
        }
        if line.indent > indent {
            return Err(LockReadError::syntax(
                file,
                Some(line.number),
                format!("unexpected indentation of {} spaces (expected {indent})", line.indent),
            ));
        }
        *idx += 1;
        let value = if line.opens {
            if line.items.len() != 1 {
                return Err(LockReadError::syntax(
                    file,
                    Some(line.number),
                    "a nested block has one key".to_string(),
                ));
            }
            let inner = block(file, lines, idx, indent + 2)?;
            YarnValue::Map(inner, line.number)
        } else {
            YarnValue::Str(line.items[1].clone(), line.number)
        };
        if map.insert(line.items[0].clone(), value).is_some() {
            return Err(LockReadError::syntax(
                file,
                Some(line.number),
                format!("`{}` appears twice in one block", line.items[0]),
            ));
        }
    }
    Ok(map)
}

/// Parses the text of a yarn.lock v1 into its entries (no interpretation).
pub fn parse_yarn_classic_syntax(file: &str, text: &str) -> Result<Vec<YarnEntry>, LockReadError> {
    let mut lines = Vec::new();
    for (n, raw) in text.split('\n').enumerate() {
        if let Some(l) = lex_line(file, n + 1, raw)? {
            lines.push(l);
        }
    }
    let mut entries = Vec::new();
    let mut idx = 0;
    while idx < lines.len() {
        let line = &lines[idx];
        if line.indent != 0 || !line.opens {
            return Err(LockReadError::syntax(
                file,
                Some(line.number),
                "expected an entry header (`\"name@range\", …:`) at the start of the line".to_string(),
            ));
        }
        idx += 1;
        let fields = block(file, &lines, &mut idx, 2)?;
        entries.push(YarnEntry {
            line: line.number,
            keys: line.items.clone(),
            fields,
        });
    }
    Ok(entries)
}

/// A `name@range` descriptor's name, and the real package for `npm:` aliases.
fn descriptor(d: &str) -> Option<(&str, &str)> {
    split_name_at(d)
}

struct Reader<'a> {
    file: &'a str,
    registry: &'a str,
    entries: &'a [YarnEntry],
    by_key: BTreeMap<&'a str, usize>,
    graph: Graph,
    /// entry index → node
    ids: BTreeMap<usize, usize>,
    pending: Vec<(usize, usize)>,
}

/// Reads a yarn.lock v1 with the workspace's package.json files
/// ([`super::workspace::yarn_manifests`]: the root first, then the members)
/// and lays the packages out as yarn classic hoists them.
pub fn parse_yarn_classic(
    file: &str,
    text: &str,
    registry: &str,
    manifests: &[Manifest],
) -> Result<JsInstall, LockReadError> {
    if text.lines().any(|l| l.starts_with("__metadata:")) {
        return Err(LockReadError::Version {
            file: file.into(),
            found: "a yarn Berry lockfile (`__metadata`)".into(),
            supported: "it with the Berry reader".into(),
            hint: String::new(),
        });
    }
    let entries = parse_yarn_classic_syntax(file, text)?;
    let mut by_key = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        for k in &e.keys {
            if let Some(prev) = by_key.insert(k.as_str(), i) {
                return Err(LockReadError::syntax(
                    file,
                    Some(e.line),
                    format!("`{k}` is also listed at line {}", entries[prev].line),
                ));
            }
        }
    }
    let mut r = Reader {
        file,
        registry,
        entries: &entries,
        by_key,
        graph: Graph::default(),
        ids: BTreeMap::new(),
        pending: Vec::new(),
    };
    let members: BTreeMap<&str, &Manifest> = manifests
        .iter()
        .filter(|m| !m.dir.is_empty())
        .filter_map(|m| m.name.as_deref().map(|n| (n, m)))
        .collect();
    for (name, m) in &members {
        r.graph.nodes.push(Node {
            ident: format!("link:{}", m.dir),
            content: Content::Link(m.dir.clone()),
            deps: BTreeMap::new(),
        });
        r.graph.root_links.insert(name.to_string(), r.graph.nodes.len() - 1);
    }
    for m in manifests {
        let mut deps = BTreeMap::new();
        for (alias, range, optional) in m.dependencies() {
            let what = format!("{}: dependency `{alias}@{range}`", m.file);
            if !is_npm_name(&alias) {
                return Err(LockReadError::entry(
                    file,
                    what,
                    format!("{alias:?} is not a valid npm package name"),
                ));
            }
            let key = format!("{alias}@{range}");
            let member = members.get(alias.as_str());
            if let Some(member) =
                member.filter(|_| range.starts_with("workspace:") || !r.by_key.contains_key(key.as_str()))
            {
                let id = r.graph.root_links[member.name.as_deref().unwrap_or_default()];
                deps.insert(alias.clone(), id);
                continue;
            }
            let Some(&entry) = r.by_key.get(key.as_str()) else {
                return Err(LockReadError::entry(
                    file,
                    what,
                    "has no entry in yarn.lock; hint: run `yarn install` so the lockfile matches package.json",
                ));
            };
            deps.insert(alias.clone(), r.node(entry, optional)?);
        }
        r.graph.importers.insert(m.dir.clone(), deps);
    }
    while let Some((id, entry)) = r.pending.pop() {
        let e = &r.entries[entry];
        for (field, optional) in [("dependencies", false), ("optionalDependencies", true)] {
            let Some(YarnValue::Map(map, _)) = e.fields.get(field) else {
                continue;
            };
            for (alias, v) in map {
                let range = v.as_str().unwrap_or_default();
                let key = format!("{alias}@{range}");
                let Some(&child) = r.by_key.get(key.as_str()) else {
                    return Err(LockReadError::entry_at(
                        file,
                        v.line(),
                        format!("entry `{}` dependency `{key}`", e.keys[0]),
                        "has no entry of its own in yarn.lock; hint: run `yarn install` to repair the lockfile",
                    ));
                };
                let child = r.node(child, optional)?;
                r.graph.nodes[id].deps.insert(alias.clone(), child);
            }
        }
    }
    hoist(file, &r.graph, JsInstall::new(JsLockKind::YarnClassic, false))
}

impl<'a> Reader<'a> {
    fn node(&mut self, entry: usize, optional: bool) -> Result<usize, LockReadError> {
        if let Some(&id) = self.ids.get(&entry) {
            if optional {
                if let Content::Package(p) = &mut self.graph.nodes[id].content {
                    p.platform_unknown = true;
                }
            }
            return Ok(id);
        }
        let e = &self.entries[entry];
        let key0 = &e.keys[0];
        let err = |line: usize, m: String| LockReadError::entry_at(self.file, line, format!("entry `{key0}`"), m);
        let field = |k: &str| e.fields.get(k).and_then(|v| v.as_str().map(|s| (s, v.line())));
        let (alias, range) = descriptor(key0).ok_or_else(|| err(e.line, "is not `name@range`".into()))?;
        // `alias@npm:real@range` installs `real` under the alias.
        let name = match range.strip_prefix("npm:").and_then(split_name_at) {
            Some((real, _)) => real,
            None => alias,
        };
        if !is_npm_name(name) {
            return Err(err(e.line, format!("{name:?} is not a valid npm package name")));
        }
        for k in &e.keys {
            let r = descriptor(k).map(|(_, r)| r).unwrap_or_default();
            if ["file:", "link:", "portal:"].iter().any(|p| r.starts_with(p)) {
                return Err(err(
                    e.line,
                    format!("`{k}` is a local directory dependency; farm locks registry packages and workspace members only (hint: make it a workspace member)"),
                ));
            }
        }
        let (version, vline) = field("version").ok_or_else(|| err(e.line, "has no `version`".into()))?;
        if !is_version(version) {
            return Err(err(vline, format!("`version` {version:?} is not a package version")));
        }
        let (resolved, rline) = field("resolved").ok_or_else(|| {
            err(
                e.line,
                "has no `resolved` URL; hint: run `yarn install` to record it".into(),
            )
        })?;
        if !(resolved.starts_with("https://") || resolved.starts_with("http://")) {
            return Err(err(
                rline,
                format!(
                    "`resolved` is {:?}, not a registry tarball; farm locks only registry packages (git and file dependencies are refused; hint: publish it to your registry)",
                    farm_lockfiles::redact::redact_url(resolved)
                ),
            ));
        }
        let url = tarball_url(self.registry, name, version, Some(resolved))
            .map_err(|m| err(rline, format!("`resolved` {m}")))?;
        let integrity = parse_integrity(field("integrity").map(|(s, _)| s)).map_err(|m| {
            err(
                field("integrity").map(|(_, l)| l).unwrap_or(e.line),
                format!("{m}; hint: yarn 1.10 and newer record it: run `yarn install` once with it"),
            )
        })?;
        self.graph.nodes.push(Node {
            ident: format!("{name}@{version}"),
            content: Content::Package(Package {
                name: name.to_string(),
                version: version.to_string(),
                url,
                integrity: Some(integrity),
                bins: None,
                platform_unknown: optional,
            }),
            deps: BTreeMap::new(),
        });
        let id = self.graph.nodes.len() - 1;
        self.ids.insert(entry, id);
        self.pending.push((id, entry));
        Ok(id)
    }
}
