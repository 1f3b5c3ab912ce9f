//! No-op and incremental builds of the example app (spec/engine.md, "The
//! stat cache" and "Placing outputs"): an unchanged tree is verified from
//! the stat cache without reading a source file, outputs already in place
//! are not written again, and every real change — content with the same
//! size and mtime, a new inode, a corrupt cache, an output removed or
//! edited — is still seen.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{farm, fetched_example, run, stdout};
use farm_testkit::shared_farm_home;

fn build(project: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["build", "--hermetic"];
    all.extend_from_slice(args);
    let out = run(&mut farm(project, &shared_farm_home(), &all));
    assert!(out.status.success(), "farm {all:?}");
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn manifest_digest(p: &Path) -> String {
    json(&p.join(".farm/out/farm-manifest.json"))["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn metrics(p: &Path) -> serde_json::Value {
    json(&p.join(".farm/out/farm-metrics.json"))
}

/// The stat cache file of the snapshot `label` (`src-<label>.<directory's hash>`).
fn stat_cache(p: &Path, label: &str) -> PathBuf {
    let dir = p.join(".farm/stat-cache");
    let prefix = format!("src-{label}.");
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    assert_eq!(found.len(), 1, "one stat cache for {label}: {found:?}");
    found.into_iter().next().unwrap()
}

fn every_step_cached(m: &serde_json::Value) -> bool {
    m["steps"].as_object().unwrap().values().all(|s| s["cached"] == true)
}

/// (inode, size, mtime s and ns, ctime s and ns, mode) of a node.
type Stat = (u64, u64, i64, i64, i64, i64, u32);

/// [`Stat`] of every node below `dir` but the top-level farm-metrics.json.
fn stat_tree(dir: &Path) -> BTreeMap<PathBuf, Stat> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Stat>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let child = rel.join(e.file_name());
            if child == Path::new("farm-metrics.json") {
                continue;
            }
            let m = std::fs::symlink_metadata(root.join(&child)).unwrap();
            out.insert(
                child.clone(),
                (
                    m.ino(),
                    m.size(),
                    m.mtime(),
                    m.mtime_nsec(),
                    m.ctime(),
                    m.ctime_nsec(),
                    m.mode(),
                ),
            );
            if m.is_dir() {
                walk(root, &child, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, Path::new(""), &mut out);
    out
}

/// Waits on the clock (with a deadline) until every file of the project
/// was last changed more than 2.1 s ago — beyond the stat cache's widest
/// racy margin — so the first build's cache entries are trusted afterwards.
fn age(dir: &Path) {
    let mut newest = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            newest = newest.max(m.ctime() * 1_000_000_000 + m.ctime_nsec());
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while (SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64) < newest + 2_100_000_000 {
        assert!(std::time::Instant::now() < deadline, "the clock did not advance");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After a full build, a second build reads no source file (every digest
/// from the stat cache), takes every step from the action cache, places no
/// output and writes nothing into `.farm/out` but farm-metrics.json (same
/// inode, size, mtime and ctime for every other file and directory), and
/// gives the same manifest digest. Touching a source (mtime only) makes the
/// next build read that one file and nothing else changes. Removing one
/// output file re-places that output only.
#[test]
fn a_noop_build_reads_no_source_and_writes_no_output() {
    let Some(app) = fetched_example() else { return };
    let p = app.path();
    age(p);
    let first = build(p, &[]);
    let digest = manifest_digest(p);
    assert!(stat_cache(p, "frontend").is_file(), "the stat cache is written");
    let before = stat_tree(&p.join(".farm/out"));
    assert!(before.len() > 100, "the example's outputs: {} nodes", before.len());

    let second = build(p, &[]);
    let m = metrics(p);
    assert_eq!(m["sources"]["files_read"], 0, "no source file read: {m}");
    assert!(m["sources"]["files_from_stat_cache"].as_u64().unwrap() > 10, "{m}");
    assert_eq!(m["sources"]["snapshots_copied"], 0, "{m}");
    assert_eq!(m["outputs"]["placed"], false, "{m}");
    assert!(every_step_cached(&m), "{m}");
    assert_eq!(manifest_digest(p), digest, "built twice: the same manifest");
    assert_eq!(stdout(&second), stdout(&first), "the digest farm prints");
    let after = stat_tree(&p.join(".farm/out"));
    for (path, stat) in &before {
        assert_eq!(
            after.get(path),
            Some(stat),
            "{} was written by a no-op build",
            path.display()
        );
    }
    assert_eq!(before.len(), after.len(), "a no-op build added nothing");

    // Touched, not changed: that file is read again, everything else stays.
    let file = p.join("apps/web/src/App.jsx");
    let f = std::fs::File::options().append(true).open(&file).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(86_400)).unwrap();
    drop(f);
    build(p, &[]);
    let m = metrics(p);
    assert_eq!(m["sources"]["files_read"], 1, "only the touched file: {m}");
    assert_eq!(
        m["sources"]["snapshots_copied"], 0,
        "the snapshot is the stored one: {m}"
    );
    assert!(every_step_cached(&m), "{m}");
    assert_eq!(m["outputs"]["placed"], false, "{m}");
    assert_eq!(manifest_digest(p), digest);
    assert_eq!(stat_tree(&p.join(".farm/out")), before);

    // One output damaged: that one is placed again, the others are carried
    // over (their files keep their inodes), and the manifest is the same.
    let index = p.join(".farm/out/frontend/index.html");
    let html = std::fs::read(&index).unwrap();
    std::fs::remove_file(&index).unwrap();
    build(p, &[]);
    let m = metrics(p);
    assert_eq!(m["outputs"]["placed"], true, "{m}");
    // The SBOMs are written again whenever outputs are placed (same bytes).
    let outputs = json(&p.join(".farm/out/farm-manifest.json"))["outputs"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !k.starts_with("sbom."))
        .count() as u64;
    assert_eq!(m["outputs"]["carried_over"], outputs - 1, "all but the frontend: {m}");
    assert_eq!(std::fs::read(&index).unwrap(), html, "restored");
    assert_eq!(manifest_digest(p), digest);
    let again = stat_tree(&p.join(".farm/out"));
    let files = before
        .iter()
        .filter(|(path, s)| path.starts_with("backend") && s.6 & 0o170000 == 0o100000);
    let mut n = 0;
    for (path, s) in files {
        assert_eq!(again[path].0, s.0, "{} was carried over, not copied", path.display());
        assert_eq!(again[path].6, s.6, "{}: the same mode", path.display());
        n += 1;
    }
    assert!(n > 100, "the backend's files: {n}");
}

/// A frontend source rewritten with the same size and its old mtime put
/// back (`touch -d`), right after the build that cached it, is seen: a new
/// source tree, and the output has the new text. So is a file
/// replaced by another inode with the same size and mtime, an added file
/// and a removed one.
#[test]
fn same_size_same_mtime_edits_new_inodes_and_added_or_removed_files_rebuild() {
    let Some(app) = fetched_example() else { return };
    let p = app.path();
    age(p);
    build(p, &["-t", "frontend"]);
    let d0 = manifest_digest(p);
    let src0 = json(&p.join(".farm/out/farm-manifest.json"))["inputs"]["sources"]["frontend"].clone();

    let file = p.join("apps/web/src/App.jsx");
    let meta = std::fs::metadata(&file).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("'unreachable'"));
    std::fs::write(&file, text.replace("'unreachable'", "'UNREACHABLE'")).unwrap();
    let status = std::process::Command::new("touch")
        .arg("-d")
        .arg(format!("@{}.{:09}", meta.mtime(), meta.mtime_nsec()))
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let now = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (now.len(), now.mtime(), now.mtime_nsec()),
        (meta.len(), meta.mtime(), meta.mtime_nsec())
    );
    build(p, &["-t", "frontend"]);
    let m = metrics(p);
    assert!(m["sources"]["files_read"].as_u64().unwrap() >= 1, "{m}");
    // (The step itself may come from the shared action cache of an earlier run.)
    let src1 = json(&p.join(".farm/out/farm-manifest.json"))["inputs"]["sources"]["frontend"].clone();
    assert_ne!(src1, src0, "a new source tree: {m}");
    assert_ne!(manifest_digest(p), d0);
    let bundle = assets_text(p);
    assert!(bundle.contains("UNREACHABLE"), "the new text is built");

    // Back to the old bytes through a new inode with the same size and mtime.
    let tmp = p.join("apps/web/src/.App.jsx.tmp");
    std::fs::write(&tmp, &text).unwrap();
    std::fs::File::options()
        .append(true)
        .open(&tmp)
        .unwrap()
        .set_modified(meta.modified().unwrap())
        .unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    assert_ne!(std::fs::metadata(&file).unwrap().ino(), meta.ino());
    build(p, &["-t", "frontend"]);
    assert_eq!(manifest_digest(p), d0, "the old content, the old manifest");
    assert!(!assets_text(p).contains("UNREACHABLE"));

    // An added file and then its removal change the frontend's source digest.
    std::fs::write(p.join("apps/web/src/extra.txt"), "x").unwrap();
    build(p, &["-t", "frontend"]);
    let src2 = json(&p.join(".farm/out/farm-manifest.json"))["inputs"]["sources"]["frontend"].clone();
    assert_ne!(src2, src0, "an added file is a new source tree");
    std::fs::remove_file(p.join("apps/web/src/extra.txt")).unwrap();
    build(p, &["-t", "frontend"]);
    assert_eq!(manifest_digest(p), d0, "removed again: the first manifest");
}

fn assets_text(p: &Path) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(p.join(".farm/out/frontend/assets")).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "js") {
            all.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    all
}

/// A corrupt stat cache is ignored (every source read again, the same
/// manifest) and rewritten; an output file removed or edited in
/// `.farm/out` is put back by the next build, byte for byte.
#[test]
fn corrupt_caches_are_ignored_and_damaged_outputs_are_restored() {
    let Some(app) = fetched_example() else { return };
    let p = app.path();
    age(p);
    build(p, &["-t", "frontend"]);
    let digest = manifest_digest(p);
    let cache = stat_cache(p, "frontend");
    let mut bytes = std::fs::read(&cache).unwrap();
    let n = bytes.len();
    bytes[n / 3] ^= 0xff;
    std::fs::write(&cache, &bytes).unwrap();
    build(p, &["-t", "frontend"]);
    let m = metrics(p);
    assert!(m["sources"]["files_read"].as_u64().unwrap() > 5, "read again: {m}");
    assert_eq!(m["sources"]["files_from_stat_cache"], 0, "{m}");
    assert_eq!(manifest_digest(p), digest);
    assert_ne!(std::fs::read(&cache).unwrap(), bytes, "rewritten");
    build(p, &["-t", "frontend"]);
    assert_eq!(metrics(p)["sources"]["files_read"], 0, "the rebuilt cache is used");

    let index = p.join(".farm/out/frontend/index.html");
    let original = std::fs::read(&index).unwrap();
    std::fs::remove_file(&index).unwrap();
    build(p, &["-t", "frontend"]);
    assert_eq!(metrics(p)["outputs"]["placed"], true);
    assert_eq!(std::fs::read(&index).unwrap(), original, "restored");
    assert_eq!(manifest_digest(p), digest);

    // Edited in place (same size): also put back.
    let asset = std::fs::read_dir(p.join(".farm/out/frontend/assets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "js"))
        .unwrap();
    let good = std::fs::read(&asset).unwrap();
    let mut bad = good.clone();
    bad[0] ^= 1;
    std::fs::write(&asset, &bad).unwrap();
    build(p, &["-t", "frontend"]);
    assert_eq!(std::fs::read(&asset).unwrap(), good, "restored");
    assert_eq!(manifest_digest(p), digest);
    let m = std::fs::metadata(&asset).unwrap();
    assert_eq!(m.mode() & 0o777, 0o644, "outputs stay writable by the user");
}

/// An npm workspaces monorepo whose frontend links two members (the
/// js-npm-workspaces fixture plus `@fixture/farewell`, added to its
/// package-lock.json as npm records a member): each member is a snapshot
/// of its own under the one label `frontend-link`, and the second build
/// still reads no file of any of them. Before each member had a stat
/// cache of its own, the members evicted each other's and every build read
/// them all again. An edit in one member is still seen.
#[test]
fn a_noop_build_of_npm_workspace_members_reads_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    common::copy_tree(
        &common::workspace().join("tests/fixtures/js-npm-workspaces"),
        p,
        &["node_modules", "dist", ".farm", "farm.toml", "farm.lock"],
    );
    let member = p.join("packages/farewell");
    std::fs::create_dir_all(&member).unwrap();
    std::fs::write(
        member.join("package.json"),
        r#"{ "name": "@fixture/farewell", "version": "0.1.0", "type": "module", "main": "index.js" }"#,
    )
    .unwrap();
    std::fs::write(member.join("index.js"), "export const farewell = (n) => `Bye, ${n}`;\n").unwrap();
    let edit_json = |rel: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = json(&p.join(rel));
        f(&mut v);
        std::fs::write(p.join(rel), serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    };
    edit_json("frontend/package.json", &|v| {
        v["dependencies"]["@fixture/farewell"] = "*".into();
    });
    edit_json("package-lock.json", &|v| {
        let pkgs = &mut v["packages"];
        pkgs["frontend"]["dependencies"]["@fixture/farewell"] = "*".into();
        pkgs["packages/farewell"] = serde_json::json!({ "name": "@fixture/farewell", "version": "0.1.0" });
        pkgs["node_modules/@fixture/farewell"] = serde_json::json!({ "resolved": "packages/farewell", "link": true });
    });
    let main = p.join("frontend/src/main.js");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        format!("import {{ farewell }} from \"@fixture/farewell\";\n{text}console.log(farewell(\"farm\"));\n"),
    )
    .unwrap();
    let home = shared_farm_home();
    for step in [&["init"][..], &["lock"], &["fetch"]] {
        let out = run(&mut farm(p, &home, step));
        assert!(out.status.success(), "farm {step:?}: {}", common::stderr(&out));
    }
    age(p);
    build(p, &["-t", "frontend"]);
    let links = std::fs::read_dir(p.join(".farm/stat-cache"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("src-frontend-link.")
        })
        .count();
    assert_eq!(links, 2, "a stat cache per linked member");
    let mut total = 0;
    for round in 0..2 {
        build(p, &["-t", "frontend"]);
        let m = metrics(p);
        total = m["sources"]["files_from_stat_cache"].as_u64().unwrap();
        assert_eq!(m["sources"]["files_read"], 0, "round {round}: no source file read: {m}");
        assert_eq!(m["sources"]["snapshots_copied"], 0, "{m}");
        assert_eq!(m["outputs"]["placed"], false, "{m}");
    }
    std::fs::write(
        member.join("index.js"),
        "export const farewell = (n) => `Ciao, ${n}`;\n",
    )
    .unwrap();
    build(p, &["-t", "frontend"]);
    let m = metrics(p);
    assert_eq!(
        m["sources"]["files_from_stat_cache"].as_u64().unwrap(),
        total - 1,
        "every file but the edited one comes from the stat cache: {m}"
    );
    // The edited file; and when the shared store does not hold the new
    // tree yet, the member's two files again as they are copied into it.
    let read = m["sources"]["files_read"].as_u64().unwrap();
    assert!(read == 1 || read == 3, "only the edited member is read: {m}");
    assert!(assets_text(p).contains("Ciao, "), "the edited member is bundled");
}
