//! Build-time variables and secrets (`farm build --var/--secret`,
//! `backend.vars/secrets`, `${VAR}` in `[env.*.vars]`) on a copy of the
//! example app whose backend settings require `PROJECT_NAME` and
//! `SECRET_KEY` to be imported (spec/farm-toml.md, "Build-time variables
//! and secrets").

mod common;

use std::io::Read as _;
use std::path::Path;
use std::process::Output;

use common::{example_copy, farm, run, stderr};
use farm_testkit::{require_tool, shared_farm_home, Registry};
use sha2::Digest as _;

/// The app's settings, as apps with pydantic-settings have them: importing
/// the app needs both variables (a KeyError otherwise).
const SETTINGS_PY: &str = r#""""Settings read at import time, as a real app's settings object does."""

import os

PROJECT_NAME = os.environ["PROJECT_NAME"]
SECRET_KEY = os.environ["SECRET_KEY"]
if len(SECRET_KEY) < 8:
    raise ValueError("SECRET_KEY is too short")
"#;

/// A custom step that uses the secret file: prints it (the log must be
/// scrubbed), records its mode and owner and writes only its hash.
const USES_SECRET_STEP: &str = r#"
[[steps]]
name = "uses-secret"
command = """
cat /run/secrets/SECRET_KEY; echo
stat -c '%a %u' /run/secrets/SECRET_KEY > "$out/mode"
sha256sum < "$FARM_SECRETS_DIR/SECRET_KEY" | cut -c1-64 > "$out/hash"
"""
outputs = ["mode", "hash"]
"#;

/// The example app with the settings module, `backend.vars/secrets`, a
/// `${VAR}` in `[env.staging.vars]`, the custom step and no types check.
fn settings_app() -> tempfile::TempDir {
    let p = example_copy();
    let app = p.path().join("apps/api/app");
    std::fs::write(app.join("settings.py"), SETTINGS_PY).unwrap();
    let main = std::fs::read_to_string(app.join("main.py")).unwrap();
    let needle = "app = FastAPI(title=\"farm-app\", version=\"0.1.0\")";
    assert!(main.contains(needle), "the example's FastAPI() line moved");
    let main = main.replace(
        needle,
        "from . import settings\n\napp = FastAPI(title=settings.PROJECT_NAME, version=\"0.1.0\")",
    );
    std::fs::write(app.join("main.py"), main).unwrap();
    let toml = std::fs::read_to_string(p.path().join("farm.toml")).unwrap();
    let toml = toml.replace(
        "app = \"app.main:app\"\n",
        "app = \"app.main:app\"\nvars = [\"PROJECT_NAME\"]\nsecrets = [\"SECRET_KEY\"]\n",
    );
    let toml = toml.replace(
        "VITE_API_BASE = \"/staging\"",
        "VITE_API_BASE = \"/staging\"\nPROJECT_NAME = \"${FARM_SETTINGS_TEST_STAGING} (staging)\"",
    );
    // The committed API types follow the example's own schema, not this title.
    let toml = toml.replace("api-types = \"src/api-types.ts\"\n", "");
    assert!(toml.contains("secrets = [\"SECRET_KEY\"]") && toml.contains("FARM_SETTINGS_TEST_STAGING"));
    assert!(!toml.contains("api-types"));
    std::fs::write(p.path().join("farm.toml"), toml + USES_SECRET_STEP).unwrap();
    p
}

fn fetch(p: &Path) -> bool {
    if !require_tool("docker-registry") {
        return false;
    }
    let registry = Registry::start();
    common::seed_model(&registry.url);
    let mut c = farm(p, &shared_farm_home(), &["fetch"]);
    c.env("FARM_OLLAMA_REGISTRY", &registry.url);
    assert!(run(&mut c).status.success(), "fetch");
    true
}

/// `farm build --hermetic ARGS` with `SECRET_KEY=secret` in its environment
/// (none when `secret` is None) and nothing else of ours set.
fn build(p: &Path, secret: Option<&str>, args: &[&str]) -> Output {
    let mut all = vec!["build", "--hermetic"];
    all.extend_from_slice(args);
    let mut c = farm(p, &shared_farm_home(), &all);
    c.env_remove("SECRET_KEY")
        .env_remove("PROJECT_NAME")
        .env_remove("FARM_SETTINGS_TEST_STAGING");
    if let Some(s) = secret {
        c.env("SECRET_KEY", s);
    }
    run(&mut c)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn openapi(p: &Path) -> serde_json::Value {
    json(&p.join(".farm/out/openapi.json"))
}

fn step_key(p: &Path, step: &str) -> (String, bool) {
    let m = json(&p.join(".farm/out/farm-metrics.json"));
    (
        m["steps"][step]["key"].as_str().unwrap().to_string(),
        m["steps"][step]["cached"].as_bool().unwrap(),
    )
}

fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// A value no earlier run used (the store and its logs outlive runs).
fn unique_secret(tag: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("s3cr3t-{tag}-{}-{}", t.as_nanos(), std::process::id())
}

/// Files under `dir` whose bytes contain `needle` (links not followed).
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    if contains(&bytes, needle) {
                        found.push(e.path().display().to_string());
                    }
                }
            }
        }
    }
    found
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Image blobs (layers decompressed) under `.farm/out/images` holding `needle`.
fn image_blobs_containing(p: &Path, needle: &[u8]) -> (usize, Vec<String>) {
    let mut blobs = 0;
    let mut found = Vec::new();
    let images = p.join(".farm/out/images");
    let mut stack = vec![images];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let raw = std::fs::read(&path).unwrap();
            let mut plain = Vec::new();
            if flate2::read::MultiGzDecoder::new(&raw[..])
                .read_to_end(&mut plain)
                .is_err()
            {
                plain.clear();
            }
            blobs += 1;
            if contains(&raw, needle) || contains(&plain, needle) {
                found.push(path.display().to_string());
            }
        }
    }
    (blobs, found)
}

/// Missing variables and secrets fail before any step runs, naming them
/// and how to pass them; `--var` and `--secret` make the backend importable
/// (title from the variable, the secret seen by the import) and the secret's
/// value is nowhere in the project's .farm, FARM_HOME (store, action cache,
/// logs) or the images, even though a step printed it; custom steps read it
/// from a 0400 file of their uid; two builds give the same digest.
#[test]
fn variables_and_secrets_reach_the_steps_and_the_secret_stays_out_of_everything() {
    let p = settings_app();
    if !fetch(p.path()) {
        return;
    }
    let no_var = build(p.path(), None, &["backend"]);
    assert_eq!(no_var.status.code(), Some(1));
    let e = stderr(&no_var);
    assert!(
        e.contains("backend.vars") && e.contains("PROJECT_NAME") && e.contains("--var PROJECT_NAME"),
        "{e}"
    );
    let no_secret = build(p.path(), None, &["--var", "PROJECT_NAME=Demo", "backend"]);
    assert_eq!(no_secret.status.code(), Some(1));
    let e = stderr(&no_secret);
    assert!(
        e.contains("backend.secrets") && e.contains("SECRET_KEY") && e.contains("--secret SECRET_KEY"),
        "{e}"
    );

    // The steps run even when an earlier run cached them: a secret's
    // value is no input, and this build must see this one.
    let secret = unique_secret("a");
    let ok = build(
        p.path(),
        Some(&secret),
        &[
            "--var",
            "PROJECT_NAME=Demo",
            "--secret",
            "SECRET_KEY",
            "--rerun",
            "backend",
            "--rerun",
            "uses-secret",
        ],
    );
    assert!(ok.status.success(), "{}", stderr(&ok));
    let api = openapi(p.path());
    assert_eq!(
        api["info"]["title"], "Demo",
        "the --var reached the import, which also found SECRET_KEY"
    );
    let step_out = p.path().join(".farm/out/steps/uses-secret");
    assert_eq!(
        std::fs::read_to_string(step_out.join("mode")).unwrap().trim(),
        "400 1000",
        "a 0400 file owned by the step's uid"
    );
    assert_eq!(
        std::fs::read_to_string(step_out.join("hash")).unwrap().trim(),
        sha256_hex(&secret),
        "custom steps read /run/secrets/NAME"
    );
    let log = String::from_utf8_lossy(&run(&mut farm(p.path(), &shared_farm_home(), &["log", "uses-secret"])).stdout)
        .into_owned();
    assert!(
        log.contains("[secret SECRET_KEY]"),
        "the step printed the secret, the log holds a placeholder: {log}"
    );
    let digest = json(&p.path().join(".farm/out/farm-manifest.json"))["digest"].clone();

    let needle = secret.as_bytes();
    let in_project = files_containing(&p.path().join(".farm"), needle);
    assert!(in_project.is_empty(), "the secret is in {in_project:?}");
    let in_home = files_containing(&shared_farm_home(), needle);
    assert!(in_home.is_empty(), "the secret is in {in_home:?}");
    let (blobs, in_images) = image_blobs_containing(p.path(), needle);
    assert!(blobs > 3, "the images were built ({blobs} files)");
    assert!(in_images.is_empty(), "the secret is in image files {in_images:?}");
    let out = stderr(&ok) + &String::from_utf8_lossy(&ok.stdout);
    assert!(!out.contains(&secret), "farm printed the secret");

    // The same inputs again, without the cache: the same manifest digest.
    let again = build(
        p.path(),
        Some(&secret),
        &["--no-cache", "--var", "PROJECT_NAME=Demo", "--secret", "SECRET_KEY"],
    );
    assert!(again.status.success());
    assert_eq!(
        json(&p.path().join(".farm/out/farm-manifest.json"))["digest"],
        digest,
        "two builds, one digest"
    );
}

/// A secret's value is not part of the action key (another value is a
/// cache hit), a `--var`'s value is (another value rebuilds); `--secret
/// NAME=file:PATH` works too.
#[test]
fn a_secret_value_keeps_the_action_key_and_a_var_changes_it() {
    let p = settings_app();
    if !fetch(p.path()) {
        return;
    }
    let first = build(
        p.path(),
        Some(&unique_secret("b")),
        &["--var", "PROJECT_NAME=Keys", "--secret", "SECRET_KEY", "backend"],
    );
    assert!(first.status.success());
    let (key, _) = step_key(p.path(), "backend");

    let file = p.path().join("secret.txt");
    std::fs::write(&file, unique_secret("c")).unwrap();
    let from_file = format!("SECRET_KEY=file:{}", file.display());
    let other_secret = build(
        p.path(),
        None,
        &["--var", "PROJECT_NAME=Keys", "--secret", &from_file, "backend"],
    );
    assert!(other_secret.status.success());
    assert_eq!(
        step_key(p.path(), "backend"),
        (key.clone(), true),
        "a new secret value: same key, cache hit"
    );

    let other_var = build(
        p.path(),
        None,
        &["--var", "PROJECT_NAME=Keys2", "--secret", &from_file, "backend"],
    );
    assert!(other_var.status.success());
    let (key2, cached) = step_key(p.path(), "backend");
    assert!(key2 != key && !cached, "a new --var value: a new key, the step ran");
    assert_eq!(openapi(p.path())["info"]["title"], "Keys2");
}

/// A step that copies a secret into its output fails naming the secret and
/// the file, and its output is not stored.
#[test]
fn a_step_that_ships_a_secret_fails_and_stores_nothing() {
    let p = settings_app();
    if !fetch(p.path()) {
        return;
    }
    let toml = std::fs::read_to_string(p.path().join("farm.toml")).unwrap();
    let toml = toml + "\n[[steps]]\nname = \"leak\"\ncommand = \"cp /run/secrets/SECRET_KEY \\\"$out/copied\\\"\"\n";
    std::fs::write(p.path().join("farm.toml"), toml).unwrap();
    let secret = unique_secret("leak");
    let out = build(
        p.path(),
        Some(&secret),
        &["--var", "PROJECT_NAME=Leak", "--secret", "SECRET_KEY"],
    );
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.contains("step leak wrote the value of secret SECRET_KEY") && e.contains("copied"),
        "{e}"
    );
    assert!(!e.contains(&secret));
    let leaked = files_containing(&shared_farm_home(), secret.as_bytes());
    assert!(leaked.is_empty(), "the secret is in {leaked:?}");
}

/// `${VAR}` in `[env.staging.vars]` is read from the caller's environment
/// when building for staging; unset, the build fails naming the field and
/// the variable.
#[test]
fn env_vars_expand_from_the_callers_environment() {
    let p = settings_app();
    if !fetch(p.path()) {
        return;
    }
    let unset = build(
        p.path(),
        Some("unused-secret"),
        &["--env", "staging", "--secret", "SECRET_KEY", "backend"],
    );
    assert_eq!(unset.status.code(), Some(1));
    let e = stderr(&unset);
    assert!(
        e.contains("env.staging.vars.PROJECT_NAME") && e.contains("FARM_SETTINGS_TEST_STAGING"),
        "{e}"
    );

    let mut c = farm(
        p.path(),
        &shared_farm_home(),
        &[
            "build",
            "--hermetic",
            "--env",
            "staging",
            "--secret",
            "SECRET_KEY",
            "backend",
        ],
    );
    c.env("SECRET_KEY", "unused-secret")
        .env("FARM_SETTINGS_TEST_STAGING", "Demo")
        .env_remove("PROJECT_NAME");
    assert!(run(&mut c).status.success());
    assert_eq!(openapi(p.path())["info"]["title"], "Demo (staging)");
    let api = std::fs::read_to_string(p.path().join(".farm/out/openapi.json")).unwrap();
    assert!(!api.contains("${"), "no literal ${{VAR}} left: {api}");
}
