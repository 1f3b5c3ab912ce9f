//! `farm sbom`, `farm provenance`, `farm sign`, `farm verify-attestation`
//! and `farm keygen` as a user runs them, on a project whose lock and last
//! build are made here (no registry needed), and `farm sbom` on the
//! example app's real lock.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use farm_lockfiles::integrity::sha256_of;
use farm_lockfiles::lock::{DebianBase, DebianPackage, NpmPackage, PythonWheel};
use farm_lockfiles::{Lock, LockedArtifact, Unpack};
use serde_json::{json, Value};

fn art(name: &str, version: &str, url: &str) -> LockedArtifact {
    LockedArtifact {
        name: name.into(),
        version: version.into(),
        url: url.into(),
        integrity: sha256_of(format!("{name}@{version}").as_bytes()),
        size: None,
        unpack: Unpack::File,
        strip: 0,
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A project with a lock and a finished build in `.farm/out` (outputs and a sealed manifest).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("app");
    write(
        &root.join("farm.toml"),
        "[project]\nname = \"shop\"\nversion = \"2.0.0\"\nsource-date-epoch = 1700000000\n",
    );
    let mut lock = Lock::new();
    lock.inputs.insert("farm.toml".into(), sha256_of(b"x"));
    lock.debian = Some(DebianBase {
        suite: "bookworm".into(),
        architecture: "amd64".into(),
        packages: vec![DebianPackage {
            artifact: art(
                "libc6",
                "2.36-9+deb12u9",
                "mirror://debian/pool/main/g/glibc/libc6_2.36-9+deb12u9_amd64.deb",
            ),
            roles: vec!["base".into()],
        }],
    });
    lock.npm = vec![NpmPackage {
        path: "node_modules/@scope/ui".into(),
        artifact: art("@scope/ui", "1.2.3", "mirror://npm/@scope/ui/-/ui-1.2.3.tgz"),
    }];
    lock.wheels = vec![PythonWheel {
        filename: "Flask_Cors-5.0.0-py3-none-any.whl".into(),
        artifact: art(
            "Flask_Cors",
            "5.0.0",
            "pypi://flask-cors/Flask_Cors-5.0.0-py3-none-any.whl",
        ),
    }];
    let lock_text = lock.to_toml();
    write(&root.join("farm.lock"), &lock_text);
    let out = root.join(".farm/out");
    write(&out.join("frontend/index.html"), "<p>shop</p>\n");
    write(&out.join("backend/app/main.py"), "app = 1\n");
    write(&out.join("openapi.json"), "{}\n");
    let tree = |p: &str| format!("sha256:{}", farm_store::tree_digest(&out.join(p)).unwrap().to_hex());
    let mut manifest = json!({
        "schema": 1, "project": {"name": "shop", "version": "2.0.0"}, "hermetic": true,
        "environment": "production", "dev": false, "source_date_epoch": 1700000000u64,
        "inputs": {"lock": sha256_of(lock_text.as_bytes()).to_string(), "farm_toml": "sha256:22", "sources": {}},
        "outputs": {
            "frontend": {"path": "frontend", "digest": tree("frontend"), "size": 12},
            "backend": {"path": "backend", "digest": tree("backend"), "size": 8},
            "openapi": {"path": "openapi.json", "digest": tree("openapi.json"), "size": 3},
        },
    });
    let digest = sha256_of(&farm_formats::canonical_json::to_vec(&manifest).unwrap()).to_string();
    manifest["digest"] = json!(digest);
    std::fs::write(
        out.join("farm-manifest.json"),
        farm_formats::canonical_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();
    dir
}

fn farm_in(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = farm(&dir.join("app"), &dir.join("home"), args);
    c.current_dir(dir)
        .env_remove("FARM_SIGNING_PASSWORD")
        .env_remove("COSIGN_PASSWORD");
    c
}

/// `farm sbom` gives the same bytes on every run, in both formats, to
/// standard output or to --output.
#[test]
fn sbom_is_byte_identical_across_runs() {
    let dir = project();
    let d = dir.path();
    for format in ["spdx", "cyclonedx"] {
        let a = run(&mut farm_in(d, &["sbom", "--format", format]));
        let b = run(&mut farm_in(d, &["sbom", "--format", format]));
        assert!(a.status.success(), "{}", stderr(&a));
        assert!(!a.stdout.is_empty());
        assert_eq!(a.stdout, b.stdout, "{format}: two runs differ");
        let file = d.join(format!("sbom.{format}.json"));
        let c = run(&mut farm_in(
            d,
            &["sbom", "--format", format, "--output", file.to_str().unwrap()],
        ));
        assert!(c.status.success());
        assert_eq!(std::fs::read(&file).unwrap(), a.stdout);
    }
    let doc: Value = serde_json::from_slice(&run(&mut farm_in(d, &["sbom"])).stdout).unwrap();
    assert_eq!(
        doc["creationInfo"]["created"], "2023-11-14T22:13:20Z",
        "SOURCE_DATE_EPOCH of the build"
    );
}

/// `farm provenance` names the manifest's outputs with the manifest's digests.
#[test]
fn provenance_subjects_are_the_manifests_outputs() {
    let dir = project();
    let out = run(&mut farm_in(dir.path(), &["provenance"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let st: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("app/.farm/out/farm-manifest.json")).unwrap()).unwrap();
    let subjects = st["subject"].as_array().unwrap();
    for o in manifest["outputs"].as_object().unwrap().values() {
        let s = subjects
            .iter()
            .find(|s| s["name"] == o["path"])
            .unwrap_or_else(|| panic!("no subject {}", o["path"]));
        assert_eq!(
            format!("sha256:{}", s["digest"]["farmTree"].as_str().unwrap()),
            o["digest"].as_str().unwrap()
        );
    }
    assert!(st["predicate"]["runDetails"]["metadata"]["invocationId"].is_string());
}

fn verify(d: &Path, key: &str, envelopes: &[&Path]) -> std::process::Output {
    let mut args = vec!["verify-attestation", "--key", key];
    let paths: Vec<String> = envelopes.iter().map(|p| p.display().to_string()).collect();
    args.extend(paths.iter().map(String::as_str));
    run(&mut farm_in(d, &args))
}

/// Sign then verify succeeds; a tampered payload, a wrong key, a subject
/// changed after signing and a lock integrity changed after signing each
/// make `farm verify-attestation` exit 1 with a FAIL line saying what.
#[test]
fn sign_then_verify_and_every_attack_fails() {
    let dir = project();
    let d = dir.path();
    let out = run(&mut farm_in(d, &["keygen", "--output", "release"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(d.join("release.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the private key is readable by its owner only");
    assert!(std::fs::read_to_string(d.join("release.pub"))
        .unwrap()
        .starts_with("-----BEGIN PUBLIC KEY-----"));

    let out = run(&mut farm_in(d, &["sign", "--key", "release.key"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let att = d.join("app/.farm/out/attestations");
    let envs = [
        att.join("provenance.intoto.jsonl"),
        att.join("sbom.spdx.intoto.jsonl"),
        att.join("sbom.cyclonedx.intoto.jsonl"),
    ];
    let env_refs: Vec<&Path> = envs.iter().map(|p| p.as_path()).collect();
    let ok = verify(d, "release.pub", &env_refs);
    assert!(ok.status.success(), "{}", stdout(&ok));
    assert_eq!(stdout(&ok).matches("  verified").count(), 3, "{}", stdout(&ok));

    // Tampered payload: one base64 character changed (so a few payload bytes), signature kept.
    let mut env: Value = serde_json::from_slice(&std::fs::read(&envs[0]).unwrap()).unwrap();
    let mut payload: Vec<char> = env["payload"].as_str().unwrap().chars().collect();
    payload[40] = if payload[40] == 'A' { 'B' } else { 'A' };
    env["payload"] = json!(payload.into_iter().collect::<String>());
    let tampered = d.join("tampered.intoto.jsonl");
    std::fs::write(&tampered, serde_json::to_vec(&env).unwrap()).unwrap();
    let r = verify(d, "release.pub", &[&tampered]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        stdout(&r).contains("FAIL signature: no signature verifies"),
        "{}",
        stdout(&r)
    );

    // The wrong key.
    assert!(
        run(&mut farm_in(d, &["keygen", "--type", "ed25519", "--output", "other"]))
            .status
            .success()
    );
    let r = verify(d, "other.pub", &[&envs[0]]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        stdout(&r).contains("FAIL signature: no signature verifies with the ed25519 key"),
        "{}",
        stdout(&r)
    );

    // A subject changed after signing.
    let api = d.join("app/.farm/out/openapi.json");
    std::fs::write(&api, "{\"changed\": true}\n").unwrap();
    let r = verify(d, "release.pub", &env_refs);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        stdout(&r).matches("FAIL subject openapi.json").count(),
        3,
        "{}",
        stdout(&r)
    );
    assert!(stdout(&r).contains("changed after signing"));
    std::fs::write(&api, "{}\n").unwrap();
    assert!(verify(d, "release.pub", &env_refs).status.success(), "restored");

    // A lock integrity changed after signing.
    let lock_path = d.join("app/farm.lock");
    let mut lock = Lock::read(&lock_path).unwrap();
    lock.npm[0].artifact.integrity = sha256_of(b"a different tarball");
    std::fs::write(&lock_path, lock.to_toml()).unwrap();
    let r = verify(d, "release.pub", &env_refs);
    assert_eq!(r.status.code(), Some(1));
    let text = stdout(&r);
    assert!(
        text.contains("FAIL dependency pkg:npm/%40scope/ui@1.2.3") && text.contains("the provenance says"),
        "{text}"
    );
    assert!(
        text.contains("FAIL package pkg:npm/%40scope/ui@1.2.3") && text.contains("the SBOM says"),
        "{text}"
    );
    assert!(text.contains("FAIL farm.lock"), "{text}");
}

/// A key file that is not a key is an error naming the file; nothing is written.
#[test]
fn a_key_file_that_is_not_a_key_is_named_and_nothing_is_written() {
    let dir = project();
    let d = dir.path();
    std::fs::write(d.join("notes.txt"), "not a key at all\n").unwrap();
    let out = run(&mut farm_in(d, &["sign", "--key", "notes.txt"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("notes.txt: not a key") && stderr(&out).contains("farm keygen"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("app/.farm/out/attestations").exists(), "nothing written");
    let out = run(&mut farm_in(
        d,
        &["verify-attestation", "--key", "notes.txt", "x.jsonl"],
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("notes.txt: not a key"), "{}", stderr(&out));
}

/// `farm keygen` never replaces a key; `--encrypt` writes cosign's format,
/// which `farm sign` opens with the password from the environment and
/// refuses, naming the file, with a wrong one.
#[test]
fn keygen_refuses_to_replace_and_encrypted_keys_need_their_password() {
    let dir = project();
    let d = dir.path();
    assert!(run(&mut farm_in(d, &["keygen", "--output", "k"])).status.success());
    let before = std::fs::read(d.join("k.key")).unwrap();
    let again = run(&mut farm_in(d, &["keygen", "--output", "k"]));
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("k.key: already exists"), "{}", stderr(&again));
    assert_eq!(
        std::fs::read(d.join("k.key")).unwrap(),
        before,
        "the old key is untouched"
    );

    let out = run(farm_in(d, &["keygen", "--encrypt", "--output", "enc"]).env("FARM_SIGNING_PASSWORD", "pw"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::read_to_string(d.join("enc.key"))
        .unwrap()
        .starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    let out = run(farm_in(d, &["sign", "--key", "enc.key"]).env("COSIGN_PASSWORD", "pw"));
    assert!(out.status.success(), "{}", stderr(&out));
    let r = verify(
        d,
        "enc.pub",
        &[&d.join("app/.farm/out/attestations/provenance.intoto.jsonl")],
    );
    assert!(r.status.success(), "{}", stdout(&r));
    let out = run(farm_in(d, &["sign", "--key", "enc.key"]).env("FARM_SIGNING_PASSWORD", "nope"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("enc.key: cannot decrypt the key: the password is wrong"),
        "{}",
        stderr(&out)
    );
}

/// The purl the purl spec gives a lock entry, written out here independently.
fn expected_purls(lock: &Lock) -> BTreeSet<String> {
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace('+', "%2B")
            .replace(':', "%3A")
            .replace('@', "%40")
    };
    let mut out = BTreeSet::new();
    for p in &lock.npm {
        out.insert(format!(
            "pkg:npm/{}@{}",
            p.artifact.name.replace('@', "%40"),
            enc(&p.artifact.version)
        ));
    }
    for w in &lock.wheels {
        out.insert(format!(
            "pkg:pypi/{}@{}",
            w.artifact.name.to_lowercase().replace(['_', '.'], "-"),
            enc(&w.artifact.version)
        ));
    }
    let d = lock.debian.as_ref().unwrap();
    for p in &d.packages {
        let file = p.artifact.url.rsplit('/').next().unwrap();
        let arch = file.trim_end_matches(".deb").rsplit('_').next().unwrap();
        out.insert(format!(
            "pkg:deb/debian/{}@{}?arch={arch}&distro=debian-{}",
            enc(&p.artifact.name),
            enc(&p.artifact.version),
            d.suite
        ));
    }
    out
}

/// Every package-lock entry, wheel and deb of the example app's lock is in
/// both SBOMs with the right purl (`farm sbom --lock-only`: no build needed).
#[test]
fn the_example_lock_is_in_both_sboms_with_the_right_purls() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    for f in ["farm.toml", "farm.lock"] {
        std::fs::copy(workspace().join("examples/farm-app").join(f), app.join(f)).unwrap();
    }
    let lock = Lock::read(&app.join("farm.lock")).unwrap();
    let want = expected_purls(&lock);
    assert!(want.len() > 50, "the example lock has its npm, wheel and deb entries");
    let spdx = run(&mut farm_in(dir.path(), &["sbom", "--lock-only"]));
    assert!(spdx.status.success(), "{}", stderr(&spdx));
    let spdx: Value = serde_json::from_slice(&spdx.stdout).unwrap();
    let spdx_purls: BTreeSet<String> = spdx["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
        .filter(|r| r["referenceType"] == "purl")
        .map(|r| r["referenceLocator"].as_str().unwrap().to_string())
        .collect();
    let cdx = run(&mut farm_in(
        dir.path(),
        &["sbom", "--lock-only", "--format", "cyclonedx"],
    ));
    let cdx: Value = serde_json::from_slice(&cdx.stdout).unwrap();
    let cdx_purls: BTreeSet<String> = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["purl"].as_str().map(String::from))
        .collect();
    for purl in &want {
        assert!(spdx_purls.contains(purl), "{purl} missing from the SPDX document");
        assert!(cdx_purls.contains(purl), "{purl} missing from the CycloneDX document");
    }
}

/// `farm sbom --diff OLD` against the current lock: a version bump, an
/// added and a removed package are each listed once, from an SPDX and from
/// a CycloneDX old document alike; a file that is not an SBOM is refused
/// by name.
#[test]
fn sbom_diff_lists_added_removed_and_changed_packages() {
    let dir = project();
    let d = dir.path();
    let old_spdx = d.join("old.spdx.json");
    let old_cdx = d.join("old.cdx.json");
    for (format, file) in [("spdx", &old_spdx), ("cyclonedx", &old_cdx)] {
        let o = run(&mut farm_in(
            d,
            &[
                "sbom",
                "--lock-only",
                "--format",
                format,
                "--output",
                file.to_str().unwrap(),
            ],
        ));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let lock_path = d.join("app/farm.lock");
    let mut lock = Lock::read(&lock_path).unwrap();
    lock.npm[0].artifact = art("@scope/ui", "1.3.0", "mirror://npm/@scope/ui/-/ui-1.3.0.tgz");
    lock.wheels.clear();
    lock.npm.push(NpmPackage {
        path: "node_modules/left-pad".into(),
        artifact: art("left-pad", "1.3.0", "mirror://npm/left-pad/-/left-pad-1.3.0.tgz"),
    });
    write(&lock_path, &lock.to_toml());
    for file in [&old_spdx, &old_cdx] {
        let o = run(&mut farm_in(d, &["sbom", "--diff", file.to_str().unwrap()]));
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            stdout(&o),
            "~ pkg:npm/%40scope/ui 1.2.3 -> 1.3.0\n+ pkg:npm/left-pad 1.3.0\n- pkg:pypi/flask-cors 5.0.0\n\
             1 added, 1 removed, 1 changed\n",
            "{}",
            file.display()
        );
    }
    let o = run(&mut farm_in(d, &["sbom", "--diff", "app/farm.lock"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("app/farm.lock: not JSON"), "{}", stderr(&o));
    let manifest = d.join("app/.farm/out/farm-manifest.json");
    let o = run(&mut farm_in(d, &["sbom", "--diff", manifest.to_str().unwrap()]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("farm-manifest.json: not an SBOM"), "{}", stderr(&o));
}
