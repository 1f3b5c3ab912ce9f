//! Comparing build outputs: which files differ between two trees, where the
//! first differing byte is, and (when installed) diffoscope's view of them.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::Serialize;
use sha2::Digest as _;

#[derive(Debug, Clone, Serialize)]
pub struct FileDifference {
    /// Path relative to the output directory.
    pub path: String,
    /// `changed`, `only-in-reference`, `only-in-other`, `type-changed`.
    pub kind: String,
    pub sizes: [Option<u64>; 2],
    pub digests: [Option<String>; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<ByteDifference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diffoscope: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ByteDifference {
    pub offset: u64,
    /// Up to 16 bytes from 8 before the offset, as hex and as text, per side.
    pub context_start: u64,
    pub hex: [String; 2],
    pub text: [String; 2],
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File { size: u64, digest: String, exec: bool },
    Link(String),
    Dir,
}

/// Every entry of `root/rel` (or `rel` itself when it is not a directory),
/// keyed by its path relative to `root`.
fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, Node>) -> Result<()> {
    let top = root.join(rel);
    let meta = std::fs::symlink_metadata(&top)?;
    if !meta.is_dir() {
        out.insert(rel.display().to_string(), node(&top, &meta)?);
        return Ok(());
    }
    for found in farm_archive::walk(&top) {
        let found = found?;
        let key = rel.join(found.relative()).display().to_string();
        if found.file_type().is_dir() {
            out.insert(key, Node::Dir);
        } else {
            out.insert(key, node(found.path(), &found.metadata()?)?);
        }
    }
    Ok(())
}

fn node(path: &Path, meta: &std::fs::Metadata) -> Result<Node> {
    use std::os::unix::fs::PermissionsExt;
    if meta.file_type().is_symlink() {
        return Ok(Node::Link(std::fs::read_link(path)?.display().to_string()));
    }
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Node::File {
        size: meta.len(),
        digest: format!("sha256:{}", hex::encode(h.finalize())),
        exec: meta.permissions().mode() & 0o111 != 0,
    })
}

/// Differences between `a/rel` and `b/rel`, sorted by path, at most `limit`.
pub fn diff_trees(a: &Path, b: &Path, rel: &str, limit: usize) -> Result<Vec<FileDifference>> {
    let (mut ta, mut tb) = (BTreeMap::new(), BTreeMap::new());
    if a.join(rel).exists() {
        walk(a, Path::new(rel), &mut ta)?;
    }
    if b.join(rel).exists() {
        walk(b, Path::new(rel), &mut tb)?;
    }
    let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Vec::new();
    for k in keys {
        if out.len() >= limit {
            break;
        }
        let (na, nb) = (ta.get(k), tb.get(k));
        if na == nb {
            continue;
        }
        let info = |n: Option<&Node>| match n {
            Some(Node::File { size, digest, .. }) => (Some(*size), Some(digest.clone())),
            Some(Node::Link(t)) => (None, Some(format!("symlink -> {t}"))),
            _ => (None, None),
        };
        let (sa, da) = info(na);
        let (sb, db) = info(nb);
        let kind = match (na, nb) {
            (Some(_), None) => "only-in-reference",
            (None, Some(_)) => "only-in-other",
            (Some(Node::File { .. }), Some(Node::File { .. })) => "changed",
            _ => "type-changed",
        };
        let first_difference = match (na, nb) {
            (Some(Node::File { .. }), Some(Node::File { .. })) => first_difference(&a.join(k), &b.join(k))?,
            _ => None,
        };
        out.push(FileDifference {
            path: k.clone(),
            kind: kind.into(),
            sizes: [sa, sb],
            digests: [da, db],
            first_difference,
            diffoscope: None,
        });
    }
    Ok(out)
}

fn first_difference(a: &Path, b: &Path) -> Result<Option<ByteDifference>> {
    let (ba, bb) = (std::fs::read(a)?, std::fs::read(b)?);
    let Some(offset) = ba
        .iter()
        .zip(bb.iter())
        .position(|(x, y)| x != y)
        .or_else(|| (ba.len() != bb.len()).then_some(ba.len().min(bb.len())))
    else {
        return Ok(None); // same bytes, different executable bit
    };
    let start = offset.saturating_sub(8);
    let window = |v: &[u8]| v[start.min(v.len())..(start + 16).min(v.len())].to_vec();
    let (wa, wb) = (window(&ba), window(&bb));
    let hex = |w: &[u8]| w.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>().join(" ");
    let text = |w: &[u8]| {
        w.iter()
            .map(|&x| if (0x20..0x7f).contains(&x) { x as char } else { '.' })
            .collect::<String>()
    };
    Ok(Some(ByteDifference {
        offset: offset as u64,
        context_start: start as u64,
        hex: [hex(&wa), hex(&wb)],
        text: [text(&wa), text(&wb)],
    }))
}

/// Runs diffoscope on two files when it is installed; returns the report path.
pub fn diffoscope(a: &Path, b: &Path, report: &Path) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("diffoscope").is_file()))
        .unwrap_or(false);
    if !found {
        return None;
    }
    if let Some(d) = report.parent() {
        std::fs::create_dir_all(d).ok()?;
    }
    let status = std::process::Command::new("diffoscope")
        .arg("--text")
        .arg(report)
        .arg("--no-progress")
        .arg(a)
        .arg(b)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    // diffoscope exits 1 when the files differ; 2 is its own failure.
    (status.code() != Some(2) && report.exists()).then(|| report.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_changed_and_missing_files_with_the_first_differing_byte() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        for d in [a.path(), b.path()] {
            std::fs::create_dir_all(d.join("out/sub")).unwrap();
            std::fs::write(d.join("out/same.txt"), "same").unwrap();
        }
        std::fs::write(a.path().join("out/sub/date.txt"), "built at 1700000000\n").unwrap();
        std::fs::write(b.path().join("out/sub/date.txt"), "built at 1800000000\n").unwrap();
        std::fs::write(a.path().join("out/only-a"), "x").unwrap();
        let d = diff_trees(a.path(), b.path(), "out", 10).unwrap();
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].path, "out/only-a");
        assert_eq!(d[0].kind, "only-in-reference");
        assert_eq!(d[1].path, "out/sub/date.txt");
        let fd = d[1].first_difference.as_ref().unwrap();
        assert_eq!(fd.offset, 10, "'built at 1' is the common prefix");
        assert!(fd.text[0].contains("17") && fd.text[1].contains("18"), "{fd:?}");
    }
}
