//! `farm optimize images` on a project whose frontend holds one image of
//! each format (made by other encoders, see crates/optimize/tests/support):
//! `--check` exits 3 and writes nothing, a run shrinks every image without
//! changing its pixels and prints the table, a second check exits 0, the
//! bytes do not depend on `--jobs`, and a corrupt image is named and left
//! untouched while the others are optimised.

mod common;
#[path = "../crates/optimize/tests/support/mod.rs"]
mod images;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{farm, run, stderr, stdout};

/// A project whose frontend (`web/`) has the fixtures under src/assets,
/// and images in node_modules and dist that must not be touched.
fn project() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(
        p.join("farm.toml"),
        "[project]\nname = \"pics\"\nversion = \"1\"\n\n[toolchains.node]\nversion = \"22.19.0\"\n\n[frontend]\npath = \"web\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(p.join("web/src/assets")).unwrap();
    for (name, data) in images::all() {
        std::fs::write(p.join("web/src/assets").join(name), data).unwrap();
    }
    for dir in ["web/node_modules/pkg", "web/dist/assets"] {
        std::fs::create_dir_all(p.join(dir)).unwrap();
        std::fs::write(p.join(dir).join("big.png"), images::png()).unwrap();
    }
    d
}

fn assets(p: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(p.join("web/src/assets"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let data = std::fs::read(&f).unwrap();
            (f, data)
        })
        .collect()
}

fn optimize(p: &Path, args: &[&str]) -> std::process::Output {
    let home = p.join(".home");
    let mut all = vec!["optimize", "images"];
    all.extend_from_slice(args);
    run(&mut farm(p, &home, &all))
}

/// The CI check fails (3) and writes nothing; a run shrinks every image
/// with the same pixels and reports exact sizes; then the check passes.
#[test]
fn check_then_optimise_then_check_again() {
    let d = project();
    let p = d.path();
    let original = assets(p);

    let check = optimize(p, &["--check"]);
    assert_eq!(check.status.code(), Some(3), "something would shrink");
    assert_eq!(assets(p), original, "--check writes nothing");
    assert!(stderr(&check).contains("hint: run `farm optimize images`"));
    assert!(stdout(&check).contains("would save"));

    let done = optimize(p, &[]);
    assert_eq!(done.status.code(), Some(0));
    let table = stdout(&done);
    assert!(table.starts_with("file ") && table.contains(" saved"), "{table}");
    let optimised = assets(p);
    let mut total_before = 0;
    let mut total_after = 0;
    for ((path, before), (_, after)) in original.iter().zip(&optimised) {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(after.len() < before.len(), "{name} shrank");
        if !name.ends_with(".svg") {
            assert!(
                images::frames(name, before) == images::frames(name, after),
                "{name}: same pixels"
            );
        }
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("src/assets/{name} ")))
            .unwrap_or_else(|| panic!("a row for {name}: {table}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            (cols[1], cols[2], cols[3]),
            (
                before.len().to_string().as_str(),
                after.len().to_string().as_str(),
                (before.len() - after.len()).to_string().as_str()
            ),
            "{row}"
        );
        total_before += before.len();
        total_after += after.len();
    }
    let total = table.lines().last().unwrap();
    assert!(total.starts_with("total (7 images, 7 smaller)"), "{total}");
    assert!(
        total.contains(&format!(" {total_before} ")) && total.contains(&format!(" {total_after} ")),
        "{total}"
    );
    for skipped in ["web/node_modules/pkg/big.png", "web/dist/assets/big.png"] {
        assert_eq!(
            std::fs::read(p.join(skipped)).unwrap(),
            images::png(),
            "{skipped} untouched"
        );
        assert!(!table.contains("big.png"), "{skipped} not listed");
    }

    let again = optimize(p, &["--check"]);
    assert_eq!(again.status.code(), Some(0), "nothing left to shrink");
    assert_eq!(assets(p), optimised);
}

/// One job or eight: the same bytes; and `--project DIR` after the command works.
#[test]
fn the_same_bytes_with_one_or_eight_jobs() {
    let (a, b) = (project(), project());
    assert!(optimize(a.path(), &["-j", "1"]).status.success());
    let out = run(Command::new(common::farm_bin())
        .args(["optimize", "images", "--jobs", "8", "--project"])
        .arg(b.path())
        .env_remove("FARM_PROJECT")
        .env("FARM_HOME", b.path().join(".home")));
    assert!(out.status.success());
    let bytes = |p: &Path| assets(p).into_iter().map(|(_, d)| d).collect::<Vec<_>>();
    assert_eq!(bytes(a.path()), bytes(b.path()));
}

/// A corrupt PNG is an error naming the file and left as it was; the other images are still optimised.
#[test]
fn a_corrupt_image_is_named_and_left_untouched() {
    let d = project();
    let p = d.path();
    let png = images::png();
    let broken = png[..png.len() / 2].to_vec();
    let broken_path = p.join("web/src/broken.png");
    std::fs::write(&broken_path, &broken).unwrap();
    let original = assets(p);

    let check = optimize(p, &["--check"]);
    assert_eq!(check.status.code(), Some(1), "an error outranks 'would shrink'");

    let out = optimize(p, &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}: not a valid PNG file", broken_path.display())) && err.contains("left untouched"),
        "{err}"
    );
    assert!(stdout(&out)
        .lines()
        .any(|l| l.starts_with("src/broken.png ") && l.ends_with("error")));
    assert_eq!(std::fs::read(&broken_path).unwrap(), broken, "left untouched");
    for ((path, before), (_, after)) in original.iter().zip(assets(p)) {
        assert!(after.len() < before.len(), "{} still optimised", path.display());
    }
}

/// Without a [frontend] there is nothing to optimise: an error with a hint.
#[test]
fn a_project_without_a_frontend_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("farm.toml"), "[project]\nname = \"x\"\nversion = \"1\"\n").unwrap();
    let out = optimize(d.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no [frontend] section") && stderr(&out).contains("hint:"),
        "{}",
        stderr(&out)
    );
}
