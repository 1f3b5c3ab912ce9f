//! A farm.lock edited behind farm's back (issue 11): `farm lock --check`
//! re-derives the lock from farm.toml and the app's lockfiles and names
//! each difference; `farm fetch` (also `--offline`) and `farm build` refuse
//! such a lock before they touch the network, the store or the output; and
//! `farm lock` refuses requirements that would run a package's code.

mod common;

use std::path::Path;

use common::{example_copy, farm, run, stderr};
use farm_lockfiles::Lock;
use farm_testkit::{HttpServer, Reply};

fn read_lock(p: &Path) -> Lock {
    Lock::read(&p.join("farm.lock")).unwrap()
}

fn write_lock(p: &Path, lock: &Lock) {
    lock.write(&p.join("farm.lock")).unwrap();
}

/// Points every registry the example could fetch from at `server`, so any
/// request would be counted.
fn registries_at(p: &Path, server: &HttpServer) {
    let toml = p.join("farm.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!(
        "\n[registries]\nnpm = \"{0}/npm\"\npypi = \"{0}/simple\"\ndebian = \"{0}/debian\"\n",
        server.url
    ));
    std::fs::write(&toml, text).unwrap();
}

fn is_empty_dir(d: &Path) -> bool {
    std::fs::read_dir(d).map(|mut r| r.next().is_none()).unwrap_or(true)
}

/// Proves the attack of issue 11: an `[[npm]]` entry pointed at another
/// package's tarball, with that tarball's integrity, passes nothing. The
/// committed lock passes `--check`; the edited one exits 3 naming the entry,
/// the field and both values; `farm fetch` refuses it without one request
/// and without creating a store; `farm build` refuses it without output;
/// and `farm lock`, as the hint says, writes the committed entries back.
#[test]
fn an_npm_entry_swapped_for_another_tarball_is_named_and_refused() {
    let project = example_copy();
    let p = project.path();
    let home = tempfile::tempdir().unwrap();
    let out = run(&mut farm(p, home.path(), &["lock", "--check"]));
    assert_eq!(out.status.code(), Some(0), "the committed lock passes");

    let committed = read_lock(p);
    let mut lock = committed.clone();
    assert!(lock.npm.len() >= 2);
    let victim = lock.npm[0].clone();
    let donor = lock.npm[1].artifact.clone();
    lock.npm[0].artifact.url = donor.url.clone();
    lock.npm[0].artifact.integrity = donor.integrity.clone();
    write_lock(p, &lock);

    let out = run(&mut farm(p, home.path(), &["lock", "--check"]));
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "[[npm]] {}: integrity: expected {}",
            victim.path, victim.artifact.integrity
        )) && err.contains(&format!("found {}", donor.integrity)),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "[[npm]] {}: url: expected {}",
            victim.path, victim.artifact.url
        )) && err.contains(&format!("found {}", donor.url)),
        "{err}"
    );

    let server = HttpServer::start(|_, _| Reply::Status(404));
    registries_at(p, &server);
    let fresh_home = tempfile::tempdir().unwrap();
    let mut fetch = farm(p, fresh_home.path(), &["fetch"]);
    fetch.env("FARM_OLLAMA_REGISTRY", &server.url);
    let out = run(&mut fetch);
    assert_eq!(out.status.code(), Some(1), "refused as an error");
    let err = stderr(&out);
    assert!(
        err.contains("does not match what farm.toml and the dependency lockfiles pin"),
        "{err}"
    );
    assert!(err.contains(&format!("[[npm]] {}: integrity", victim.path)), "{err}");
    assert!(err.contains("hint: run `farm lock`"), "{err}");
    assert_eq!(server.total_hits(), 0, "nothing was requested");
    assert!(is_empty_dir(fresh_home.path()), "no store was created");

    let out = run(&mut farm(p, fresh_home.path(), &["build"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!("[[npm]] {}: url", victim.path)),
        "{}",
        stderr(&out)
    );
    assert!(!p.join(".farm/out").exists(), "no output was written");
    assert_eq!(server.total_hits(), 0);

    // The hint works: `farm lock` resolves the npm section again (offline:
    // it comes from package-lock.json) and writes the committed entries back.
    let out = run(&mut farm(p, fresh_home.path(), &["lock"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(read_lock(p), committed);
    assert_eq!(server.total_hits(), 0);
}

/// Proves two entries for one install path (node_modules/<pkg> twice, with
/// different tarballs) fail `lock --check`, `fetch --offline` and a build,
/// which all passed before.
#[test]
fn two_entries_for_one_install_path_fail_check_offline_fetch_and_build() {
    let project = example_copy();
    let p = project.path();
    let home = tempfile::tempdir().unwrap();
    let mut lock = read_lock(p);
    let mut twin = lock.npm[0].clone();
    twin.artifact.integrity = lock.npm[1].artifact.integrity.clone();
    let path = twin.path.clone();
    lock.npm.push(twin);
    write_lock(p, &lock);
    let line = format!("[[npm]] {path}: entries: expected one entry per install path, found 2 entries");

    let out = run(&mut farm(p, home.path(), &["lock", "--check"]));
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains(&line), "{}", stderr(&out));

    let out = run(&mut farm(p, home.path(), &["fetch", "--offline"]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad lock is an error, not 'artifacts missing'"
    );
    assert!(stderr(&out).contains(&line), "{}", stderr(&out));

    for args in [&["build"][..], &["build", "--hermetic"][..]] {
        let out = run(&mut farm(p, home.path(), args));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(&line), "{args:?}: {}", stderr(&out));
    }
    assert!(!p.join(".farm/out").exists());
}

/// Proves a wheel whose version differs from the requirements pin is named
/// with the pin's file and line, and an extra Debian package entry with a
/// URL outside the Debian mirror is named too.
#[test]
fn a_wheel_off_its_pin_and_a_deb_off_its_mirror_are_named() {
    let project = example_copy();
    let p = project.path();
    let home = tempfile::tempdir().unwrap();
    let mut lock = read_lock(p);
    let fastapi = lock.wheels.iter_mut().find(|w| w.artifact.name == "fastapi").unwrap();
    let pinned = fastapi.artifact.version.clone();
    fastapi.artifact.version = "0.0.1".into();
    let deb = &mut lock.debian.as_mut().unwrap().packages[0];
    deb.artifact.url = "https://127.0.0.1:9/evil.deb".into();
    let deb_name = deb.artifact.name.clone();
    write_lock(p, &lock);
    let out = run(&mut farm(p, home.path(), &["lock", "--check"]));
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "[[wheels]] fastapi: version: expected {pinned} (apps/api/requirements.txt:1), found 0.0.1"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "[[debian.packages]] {deb_name}: url: expected mirror://debian/<path>, found https://127.0.0.1:9/evil.deb"
        )),
        "{err}"
    );
}

/// Proves `farm lock` refuses a requirements line naming a local directory
/// (whose setup.py would leave a marker) and a VCS line (with a fake `git`
/// first on PATH that would leave another), naming the file and line, and
/// that neither ran and the lock is unchanged.
#[test]
fn farm_lock_refuses_local_and_vcs_requirements_before_running_anything() {
    let project = example_copy();
    let p = project.path();
    let home = tempfile::tempdir().unwrap();
    let markers = tempfile::tempdir().unwrap();
    let setup_marker = markers.path().join("setup-py-ran");
    let git_marker = markers.path().join("git-ran");
    let api = p.join("apps/api");
    std::fs::create_dir_all(api.join("evil")).unwrap();
    std::fs::write(
        api.join("evil/setup.py"),
        format!(
            "open({:?}, 'w').write('ran')\nfrom setuptools import setup\nsetup(name='evil', version='1.0')\n",
            setup_marker.display().to_string()
        ),
    )
    .unwrap();
    let bin = markers.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(
        bin.join("git"),
        format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 1\n", git_marker.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let committed = std::fs::read_to_string(p.join("farm.lock")).unwrap();
    let requirements = std::fs::read_to_string(api.join("requirements.txt")).unwrap();
    let line = requirements.lines().count() + 1;

    for (extra, what) in [
        ("./evil", "a local path"),
        ("-e evil/", "an editable install"),
        ("git+https://127.0.0.1:9/evil.git#egg=evil", "a VCS URL"),
    ] {
        std::fs::write(api.join("requirements.txt"), format!("{requirements}{extra}\n")).unwrap();
        let mut lock = farm(p, home.path(), &["lock"]);
        lock.env("PATH", &path);
        let out = run(&mut lock);
        assert_eq!(out.status.code(), Some(1), "{extra}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("error: apps/api/requirements.txt:{line}: {what}")),
            "{extra}: {err}"
        );
        assert!(
            err.contains(&format!("`{extra}`")),
            "{extra}: the offending text: {err}"
        );
        assert!(err.contains("hint: "), "{err}");
        assert!(!setup_marker.exists(), "{extra}: setup.py ran");
        assert!(!git_marker.exists(), "{extra}: git ran");
        assert_eq!(std::fs::read_to_string(p.join("farm.lock")).unwrap(), committed);
    }
}
