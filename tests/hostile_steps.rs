//! Attacks on the host through what a step or a project writes: symlinks to
//! host files planted in step outputs and in `path:` inputs, outputs that
//! climb out of `$out`, workspace links out of the project. Each is tried
//! for real against the farm binary; each must fail with an error naming
//! what was refused, and leave nothing behind: the previous `.farm/out`
//! as it was, no staging directory, no store entry holding the host file.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{farm, run, stderr};
use farm_testkit::shared_farm_home;

/// A marker no earlier run wrote (the shared store outlives runs).
fn unique() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}x{}", t.as_nanos(), std::process::id())
}

/// A root-only (0600) file outside the project, holding `marker` as valid
/// OpenAPI JSON, so that a reader that followed a link to it would accept it.
fn host_secret(marker: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"openapi":"3.1.0","info":{{"title":"{marker}","version":"1"}},"paths":{{}},"components":{{"schemas":{{"{marker}":{{"type":"object","properties":{{"{marker}":{{"type":"string"}}}}}}}}}}}}"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, path)
}

fn store_entries(home: &Path) -> BTreeSet<String> {
    std::fs::read_dir(home.join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The first file under `p` (not following symlinks) whose bytes contain `needle`.
fn holding(p: &Path, needle: &str) -> Option<PathBuf> {
    let meta = std::fs::symlink_metadata(p).ok()?;
    if meta.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(p).ok()?.map(|e| e.unwrap().path()).collect();
        names.sort();
        return names.iter().find_map(|c| holding(c, needle));
    }
    if meta.is_file() {
        let bytes = std::fs::read(p).ok()?;
        if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
            return Some(p.to_path_buf());
        }
    }
    None
}

/// Asserts that none of the store entries made since `before` holds `marker`.
fn no_new_entry_holds(home: &Path, before: &BTreeSet<String>, marker: &str) {
    for name in store_entries(home).difference(before) {
        let p = home.join("store").join(name);
        assert_eq!(
            holding(&p, marker),
            None,
            "a new store entry holds the host file: {name}"
        );
    }
}

fn output_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p.join(".farm/out/farm-manifest.json")).unwrap()
}

/// No half-built output directory is left beside `.farm/out`.
fn no_staging_left(p: &Path) {
    let left: Vec<String> = std::fs::read_dir(p.join(".farm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".out."))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

fn append(p: &Path, text: &str) {
    let old = std::fs::read_to_string(p).unwrap();
    std::fs::write(p, format!("{old}\n{text}")).unwrap();
}

/// A backend whose app, when imported by the backend step, replaces
/// `/out/openapi.json` with a symlink to a root-only host file. farm must
/// not read that file: not into the types step, not into the store, not
/// into `.farm/out/api-types.ts` or the frontend's sources; the build fails
/// naming the link, with and without the types step.
#[test]
fn a_backend_step_that_plants_a_symlink_as_openapi_json_is_refused() {
    let Some(dir) = common::fetched_example() else { return };
    let p = dir.path();
    let home = shared_farm_home();
    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    let good = output_bytes(p);

    let marker = format!("HOSTSECRET{}", unique());
    let (_host, secret) = host_secret(&marker);
    append(
        &p.join("apps/api/app/main.py"),
        &format!(
            "import os as _farm_os\n_farm_os.remove('/out/openapi.json')\n_farm_os.symlink({:?}, '/out/openapi.json')\n",
            secret.display().to_string()
        ),
    );
    let before = store_entries(&home);
    let out = run(&mut farm(p, &home, &["build", "--hermetic"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("the backend step's /out/openapi.json") && err.contains("openapi.json: is a symlink"),
        "{err}"
    );
    assert!(
        err.contains(&secret.display().to_string()),
        "names the link's target: {err}"
    );
    assert!(!err.contains(&marker), "the host file's bytes are not printed: {err}");
    assert_eq!(output_bytes(p), good, "the previous output is untouched");
    assert_eq!(holding(&p.join(".farm/out"), &marker), None);
    assert_eq!(
        holding(&p.join("apps/web"), &marker),
        None,
        "nothing reaches the frontend's sources"
    );
    no_staging_left(p);
    no_new_entry_holds(&home, &before, &marker);

    // Without the types step, placing the output refuses the same link (the step is cached now).
    let out = run(&mut farm(p, &home, &["build", "--hermetic", "backend"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("openapi.json: is a symlink"), "{}", stderr(&out));
    assert_eq!(output_bytes(p), good);
    no_staging_left(p);
    no_new_entry_holds(&home, &before, &marker);
}

const STEP_WITH_DATA: &str = r#"
[[steps]]
name = "pack"
inputs = ["path:data"]
outputs = ["copy"]
command = 'cp -R "$FARM_INPUT_DATA" "$out/copy"'
"#;

/// A `path:` input that is a symlink to a host directory, or that holds a
/// symlink leading out of the project, is refused naming the input and the
/// link; no snapshot of the host directory enters the store. A symlink
/// that stays inside the input is kept, and the build is reproducible.
#[test]
fn a_path_input_never_snapshots_a_host_directory() {
    let Some(dir) = common::fetched_example() else { return };
    let p = dir.path();
    let home = shared_farm_home();
    append(&p.join("farm.toml"), STEP_WITH_DATA);
    let marker = format!("HOSTSECRET{}", unique());
    let (host, secret) = host_secret(&marker);

    // A good input first: a link inside is kept; two builds give one digest.
    std::fs::create_dir_all(p.join("data/sub")).unwrap();
    std::fs::write(p.join("data/sub/f.txt"), "data").unwrap();
    std::os::unix::fs::symlink("sub/f.txt", p.join("data/alias")).unwrap();
    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    let good = output_bytes(p);
    assert_eq!(
        std::fs::read_link(p.join(".farm/out/steps/pack/copy/alias")).unwrap(),
        Path::new("sub/f.txt")
    );
    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    assert_eq!(output_bytes(p), good, "the same inputs give the same manifest");

    let before = store_entries(&home);
    type Attack<'a> = (&'a str, Box<dyn Fn() + 'a>, &'a str);
    let attempts: [Attack; 3] = [
        (
            "the input is a symlink to a host directory",
            Box::new(|| {
                std::fs::rename(p.join("data"), p.join("data.real")).unwrap();
                std::os::unix::fs::symlink(host.path(), p.join("data")).unwrap();
            }),
            "data: is a symlink",
        ),
        (
            "a symlink inside to a host file",
            Box::new(|| {
                std::fs::remove_file(p.join("data")).unwrap();
                std::fs::rename(p.join("data.real"), p.join("data")).unwrap();
                std::os::unix::fs::symlink(&secret, p.join("data/leak")).unwrap();
            }),
            "data/leak: is a symlink to",
        ),
        (
            "a relative symlink climbing out of the project",
            Box::new(|| {
                std::fs::remove_file(p.join("data/leak")).unwrap();
                let up = "../".repeat(p.components().count() + 2);
                std::os::unix::fs::symlink(
                    format!("{up}{}", secret.display().to_string().trim_start_matches('/')),
                    p.join("data/sub/leak"),
                )
                .unwrap();
            }),
            "data/sub/leak: is a symlink to",
        ),
    ];
    for (what, attack, expected) in attempts {
        attack();
        let out = run(&mut farm(p, &home, &["build", "--hermetic"]));
        assert_eq!(out.status.code(), Some(1), "{what}");
        let err = stderr(&out);
        assert!(
            err.contains("steps.pack.inputs: \"path:data\""),
            "{what}: names the input: {err}"
        );
        assert!(err.contains(expected), "{what}: {err}");
        assert_eq!(output_bytes(p), good, "{what}: the previous output is untouched");
        no_staging_left(p);
        no_new_entry_holds(&home, &before, &marker);
    }
}

/// A step that writes a symlink to a host file into its `$out` fails the
/// build naming the link (its target is never read); a link that stays
/// inside the output is kept. The manifest, metrics and the action cache
/// hold no host path.
#[test]
fn a_step_output_holding_a_symlink_to_the_host_is_refused() {
    let Some(dir) = common::fetched_example() else { return };
    let p = dir.path();
    let home = shared_farm_home();
    let marker = format!("HOSTSECRET{}", unique());
    let (_host, secret) = host_secret(&marker);
    append(
        &p.join("farm.toml"),
        "[[steps]]\nname = \"site\"\noutputs = [\"index.html\"]\ncommand = 'echo public > \"$out/index.html\"; ln -s index.html \"$out/default.html\"'\n",
    );
    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    let good = output_bytes(p);
    assert_eq!(
        std::fs::read_link(p.join(".farm/out/steps/site/default.html")).unwrap(),
        Path::new("index.html")
    );
    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    assert_eq!(output_bytes(p), good, "two builds, one manifest");

    // Nothing the build records names a host path.
    let metrics = std::fs::read_to_string(p.join(".farm/out/farm-metrics.json")).unwrap();
    let manifest = String::from_utf8(good.clone()).unwrap();
    let canonical = std::fs::canonicalize(p).unwrap();
    for (name, text) in [("farm-metrics.json", &metrics), ("farm-manifest.json", &manifest)] {
        for host_path in [p, canonical.as_path(), home.as_path()] {
            assert!(
                !text.contains(&*host_path.to_string_lossy()),
                "{name} holds {}: {text}",
                host_path.display()
            );
        }
    }
    let m: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    let site = &m["steps"]["site"];
    assert!(
        site["log"].as_str().unwrap().starts_with("logs/site-"),
        "the log is named relative to FARM_HOME: {site}"
    );
    let store = farm_store::Store::open(&home).unwrap();
    let record = store
        .action_get(&format!("step:{}", site["key"].as_str().unwrap()))
        .unwrap()
        .expect("the step's action record");
    assert!(
        !record.to_string().contains(&*home.to_string_lossy()),
        "the action record holds no host path: {record}"
    );

    let before = store_entries(&home);
    let toml = std::fs::read_to_string(p.join("farm.toml")).unwrap();
    std::fs::write(
        p.join("farm.toml"),
        toml.replace(
            "ln -s index.html \"$out/default.html\"",
            &format!("ln -s {} \"$out/default.html\"", secret.display()),
        ),
    )
    .unwrap();
    let out = run(&mut farm(p, &home, &["build", "--hermetic"]));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("default.html: is a symlink to") && err.contains("which leaves the directory"),
        "{err}"
    );
    assert!(err.contains("writing the output steps/site"), "names the output: {err}");
    assert_eq!(output_bytes(p), good, "the previous output is untouched");
    no_staging_left(p);
    no_new_entry_holds(&home, &before, &marker);
}

/// `outputs` that leave `$out` are refused when farm.toml is loaded, naming
/// the field and the value, before anything runs.
#[test]
fn outputs_outside_out_are_refused_at_load() {
    let home = tempfile::tempdir().unwrap();
    for bad in ["../../x", "/etc/passwd", ""] {
        let dir = common::example_copy();
        append(
            &dir.path().join("farm.toml"),
            &format!("[[steps]]\nname = \"a\"\ncommand = \"true\"\noutputs = [{bad:?}]\n"),
        );
        let out = run(&mut farm(dir.path(), home.path(), &["build"]));
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        let err = stderr(&out);
        assert!(
            err.contains("steps.a.outputs") && err.contains(&format!("{bad:?}")),
            "{bad:?}: {err}"
        );
        assert!(!dir.path().join(".farm/out").exists(), "nothing was built");
    }
}

/// A package-lock.json workspace link (`"link": true`) to a directory
/// outside the directory holding the lockfile (the frontend here) is
/// refused by `farm lock`, naming the lockfile, the package and its path,
/// not dropped to fail later in the bundler; the lock and the last build
/// output stay as they were.
#[test]
fn workspace_links_out_of_the_frontend_are_refused_by_name() {
    let Some(dir) = common::fetched_example() else { return };
    let p = dir.path();
    let home = shared_farm_home();
    assert!(run(&mut farm(p, &home, &["build", "--hermetic"])).status.success());
    let good = output_bytes(p);
    let good_lock = std::fs::read(p.join("farm.lock")).unwrap();
    let lock_path = p.join("apps/web/package-lock.json");
    let original = std::fs::read_to_string(&lock_path).unwrap();
    for resolved in ["../../../outside", "../../models"] {
        let mut lock: serde_json::Value = serde_json::from_str(&original).unwrap();
        lock["packages"]["node_modules/evil"] = serde_json::json!({"resolved": resolved, "link": true});
        std::fs::write(&lock_path, serde_json::to_string_pretty(&lock).unwrap()).unwrap();
        let out = run(&mut farm(p, &home, &["lock"]));
        assert_eq!(out.status.code(), Some(1), "{resolved}");
        let err = stderr(&out);
        assert!(
            err.contains("apps/web/package-lock.json")
                && err.contains("`node_modules/evil`")
                && err.contains(resolved)
                && err.contains("outside"),
            "{resolved}: {err}"
        );
        assert_eq!(
            std::fs::read(p.join("farm.lock")).unwrap(),
            good_lock,
            "farm.lock is untouched"
        );
        assert_eq!(output_bytes(p), good, "the previous output is untouched");
    }
}
