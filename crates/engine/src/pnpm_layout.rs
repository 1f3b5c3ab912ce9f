//! pnpm's isolated layout made real in the node_modules entry: the symlinks
//! between `node_modules/.pnpm/<key>/node_modules/<name>` directories (and
//! from each importer's node_modules into them) and the `.bin` links pnpm
//! puts beside them, as farm_lockread's pnpm reader lists them
//! (spec/lockfiles.md, "pnpm's layout").
//!
//! The lockfile is the project's, so every path is checked before it
//! touches the disk: links and `.bin` directories are plain relative paths
//! inside the entry, created through no symlink; every link points at a
//! package directory farm.lock installs; link texts are relative and made
//! by farm, never read from the lock.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use farm_hostfs::Beneath;

use crate::deps::WorkspaceLink;

/// A `.bin` directory and the installed package whose bins go in it, both
/// relative to the node_modules entry's root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BinDir {
    pub dir: PathBuf,
    pub package: PathBuf,
}

/// `path` as a plain relative path (no root, `.`, `..` or empty parts), or
/// an error naming `what` and the path.
pub fn plain(what: &str, path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if path.is_empty()
        || path.contains('\0')
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
        || path.split('/').any(|s| s.is_empty())
    {
        bail!("{what}: {path:?} is not a plain relative path (no leading /, no `.` or `..` parts)");
    }
    Ok(p.to_path_buf())
}

/// The text of a symlink at `link` that points at `target` (both relative
/// to the same root): up from the link's directory to their common
/// ancestor, then down.
pub fn relative_text(link: &Path, target: &Path) -> PathBuf {
    let from: Vec<Component> = link.parent().unwrap_or(Path::new("")).components().collect();
    let to: Vec<Component> = target.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out: PathBuf = std::iter::repeat_n("..", from.len() - common).collect();
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// Refuses `rel` (below `root`) when one of its existing ancestors is a
/// symlink or not a directory: creating there would write through a link.
fn no_link_on_the_way(root: &Path, rel: &Path, what: &str) -> Result<()> {
    let mut at = root.to_path_buf();
    let parts: Vec<Component> = rel.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        at.push(c);
        match at.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => bail!(
                "{what}: {} is a symlink or file, not a directory; pnpm's layout creates nothing through links\nhint: run `pnpm install` and `farm lock` again",
                rel.display()
            ),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Makes pnpm's symlinks (`links`, each to an installed package) and its
/// `.bin` links (`bins`) in `root`, where every package of `packages` is
/// already unpacked. `shown` names the lockfile in errors.
pub fn make(
    root: &Path,
    shown: &str,
    packages: &BTreeSet<PathBuf>,
    links: &[WorkspaceLink],
    bins: &[BinDir],
) -> Result<()> {
    let tree = Beneath::open_dir(root)?;
    for l in links {
        let what = format!("{shown}: link `{}`", l.key);
        let key = plain(&what, &l.key)?;
        if !key
            .parent()
            .is_some_and(|p| p.components().any(|c| c.as_os_str() == "node_modules"))
        {
            bail!("{what}: is not inside a node_modules directory");
        }
        if !packages.contains(&l.target) {
            bail!(
                "{what}: points at {}, which farm.lock installs no package at\nhint: farm.lock is older than {shown}; run `farm lock`",
                l.target.display()
            );
        }
        no_link_on_the_way(root, &key, &what)?;
        let at = root.join(&key);
        if at.symlink_metadata().is_ok() {
            bail!("{what}: {} is laid out twice", key.display());
        }
        std::fs::create_dir_all(at.parent().expect("has a parent"))?;
        let text = relative_text(&key, &l.target);
        tree.check_link(&key, &text).with_context(|| what.clone())?;
        std::os::unix::fs::symlink(&text, &at).with_context(|| what.clone())?;
    }
    for b in bins {
        let what = format!("{shown}: `.bin` {} for {}", b.dir.display(), b.package.display());
        let dir = plain(&what, &b.dir.to_string_lossy())?;
        let holder_ok = dir.file_name().is_some_and(|n| n == ".bin")
            && dir
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == "node_modules");
        if !holder_ok {
            bail!("{what}: is not a node_modules/.bin directory");
        }
        if !packages.contains(&b.package) {
            bail!("{what}: farm.lock installs no package there\nhint: run `farm lock`");
        }
        no_link_on_the_way(root, &dir.join("x"), &what)?;
        crate::deps::link_bins_into(root, &b.package, &dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(key: &str, target: &str) -> WorkspaceLink {
        WorkspaceLink {
            key: key.into(),
            target: target.into(),
        }
    }

    /// A tree with one package `.pnpm/a@1/node_modules/a` holding a bin.
    fn tree() -> (tempfile::TempDir, BTreeSet<PathBuf>) {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("node_modules/.pnpm/a@1.0.0/node_modules/a");
        std::fs::create_dir_all(a.join("bin")).unwrap();
        std::fs::write(a.join("bin/a.js"), "").unwrap();
        std::fs::write(a.join("package.json"), r#"{"name":"a","bin":{"a":"bin/a.js"}}"#).unwrap();
        let packages = BTreeSet::from([PathBuf::from("node_modules/.pnpm/a@1.0.0/node_modules/a")]);
        (d, packages)
    }

    /// Links are relative, made from the link's own directory, resolve to
    /// the package, and bins land in the `.bin` named.
    #[test]
    fn links_and_bins_are_relative_and_resolve() {
        let (d, packages) = tree();
        let target = "node_modules/.pnpm/a@1.0.0/node_modules/a";
        make(
            d.path(),
            "pnpm-lock.yaml",
            &packages,
            &[
                link("node_modules/a", target),
                link("web/node_modules/a", target),
                link("node_modules/.pnpm/b@1.0.0/node_modules/a", target),
            ],
            &[BinDir {
                dir: "web/node_modules/.bin".into(),
                package: target.into(),
            }],
        )
        .unwrap();
        let r = |p: &str| std::fs::read_link(d.path().join(p)).unwrap();
        assert_eq!(r("node_modules/a"), Path::new(".pnpm/a@1.0.0/node_modules/a"));
        assert_eq!(
            r("web/node_modules/a"),
            Path::new("../../node_modules/.pnpm/a@1.0.0/node_modules/a")
        );
        assert_eq!(
            r("node_modules/.pnpm/b@1.0.0/node_modules/a"),
            Path::new("../../a@1.0.0/node_modules/a")
        );
        assert_eq!(
            r("web/node_modules/.bin/a"),
            Path::new("../../../node_modules/.pnpm/a@1.0.0/node_modules/a/bin/a.js")
        );
        assert!(d.path().join("web/node_modules/.bin/a").is_file(), "the bin resolves");
        assert!(d
            .path()
            .join("node_modules/.pnpm/b@1.0.0/node_modules/a/package.json")
            .is_file());
    }

    /// Hostile lock entries are refused naming the link, and nothing is
    /// created outside the tree: `..` and absolute keys or targets, targets
    /// that are not installed packages, keys through a symlink, a `.bin`
    /// that is not one.
    #[test]
    fn hostile_links_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let (d, packages) = tree();
        let target = "node_modules/.pnpm/a@1.0.0/node_modules/a";
        let escape = format!("{}/x", outside.path().display());
        let cases: Vec<(WorkspaceLink, &str)> = vec![
            (link("node_modules/../../x", target), "not a plain relative path"),
            (link(&escape, target), "not a plain relative path"),
            (link("node_modules/x", "../../etc"), "installs no package"),
            (link("node_modules/x", &escape), "installs no package"),
            (link("x", target), "not inside a node_modules"),
            (
                link("node_modules/.pnpm/a@1.0.0/node_modules/a", target),
                "laid out twice",
            ),
        ];
        for (l, expected) in cases {
            let err = format!(
                "{:#}",
                make(d.path(), "pnpm-lock.yaml", &packages, std::slice::from_ref(&l), &[]).unwrap_err()
            );
            assert!(err.contains("pnpm-lock.yaml") && err.contains(expected), "{l:?}: {err}");
        }
        // A link whose directory is a symlink off the tree.
        std::os::unix::fs::symlink(outside.path(), d.path().join("node_modules/evil")).unwrap();
        let err = format!(
            "{:#}",
            make(
                d.path(),
                "pnpm-lock.yaml",
                &packages,
                &[link("node_modules/evil/x", target)],
                &[]
            )
            .unwrap_err()
        );
        assert!(err.contains("symlink"), "{err}");
        let bad_bin = BinDir {
            dir: "node_modules/evil/.bin".into(),
            package: target.into(),
        };
        let err = format!("{:#}", make(d.path(), "p", &packages, &[], &[bad_bin]).unwrap_err());
        assert!(err.contains("not a node_modules/.bin"), "{err}");
        let bad_bin = BinDir {
            dir: "node_modules/.bin".into(),
            package: "node_modules/.pnpm/zzz".into(),
        };
        let err = format!("{:#}", make(d.path(), "p", &packages, &[], &[bad_bin]).unwrap_err());
        assert!(err.contains("installs no package"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "nothing outside");
    }
}
