//! farm's attestations checked by tools farm's authors did not write
//! (PyPI packages in the virtual environment scripts/attest-tools-venv
//! makes): SPDX by spdx-tools (`pyspdxtools -i`), CycloneDX by
//! cyclonedx-python-lib's validator against the official 1.6 JSON schema,
//! the provenance Statement by in-toto-attestation's protobuf bindings, a
//! DSSE envelope by securesystemslib. Each check is also shown to reject a
//! broken document, so a pass means something.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use farm_engine::manifest::{Inputs, Manifest, Output, ProjectInfo, MANIFEST_FILE, SCHEMA};
use farm_lockfiles::integrity::sha256_of;
use farm_lockfiles::lock::{DebianBase, DebianPackage, NpmPackage, PythonWheel};
use farm_lockfiles::{Lock, LockedArtifact, Unpack};
use serde_json::Value;

/// The Python side: one subcommand per check, exit 0 when the document passes.
const CHECKS_PY: &str = r#"
import base64, json, sys

def cdx(path):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    err = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(path).read())
    if err is not None:
        sys.exit(f"{path}: not valid CycloneDX 1.6: {err}")

def statement(path):
    from google.protobuf import json_format
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.statement import Statement
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    doc = json.load(open(path))
    st = Statement.copy_from_pb(json_format.ParseDict(doc, statement_pb2.Statement()))
    st.validate()
    # The predicate must be a SLSA Provenance v1 message, field for field.
    json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
    subjects = {s.name: dict(s.digest) for s in st.pb.subject}
    print(json.dumps({"predicateType": st.pb.predicate_type, "subjects": subjects}))

def dsse(envelope, pub):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import SSlibKey
    env = Envelope.from_dict(json.loads(open(envelope).read()))
    key = load_pem_public_key(open(pub, "rb").read())
    # The keyid is a hint: take it from the envelope, trust only the key.
    keyid = next(iter(env.signatures))
    env.verify([SSlibKey.from_crypto(key, keyid=keyid)], 1)
    print(json.loads(env.payload)["predicateType"])

{"cdx": cdx, "statement": statement, "dsse": dsse}[sys.argv[1]](*sys.argv[2:])
"#;

fn tools_ready() -> bool {
    // Both are linked onto PATH by scripts/attest-tools-venv.
    farm_testkit::require(
        which("pyspdxtools") && which("farm-attest-python"),
        "pyspdxtools and farm-attest-python are not installed (run scripts/attest-tools-venv)",
    )
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn py(dir: &Path, args: &[&str]) -> std::process::Output {
    let script = dir.join("checks.py");
    std::fs::write(&script, CHECKS_PY).unwrap();
    run(Command::new("farm-attest-python").arg(&script).args(args))
}

fn spdx_valid(file: &Path) -> std::process::Output {
    run(Command::new("pyspdxtools").arg("-i").arg(file))
}

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

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn farm_in(dir: &Path, args: &[&str]) -> Command {
    let mut c = farm(&dir.join("app"), &dir.join("home"), args);
    c.current_dir(dir)
        .env_remove("FARM_SIGNING_PASSWORD")
        .env_remove("COSIGN_PASSWORD");
    c
}

/// A project with a finished build in `.farm/out`: a frontend, an image,
/// and the SBOMs the build writes (outputs and in the image layout).
fn built_project(d: &Path) -> (PathBuf, Manifest) {
    let root = d.join("app");
    write(
        &root.join("farm.toml"),
        b"[project]\nname = \"shop\"\nversion = \"2.0.0\"\nsource-date-epoch = 1700000000\n",
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
    write(&root.join("farm.lock"), lock_text.as_bytes());
    let out = root.join(".farm/out");
    write(&out.join("frontend/index.html"), b"<p>shop</p>\n");
    write(&out.join("openapi.json"), b"{}\n");
    let built = farm_images::build_image(
        &farm_images::ImageSpec::new("shop-app", "2.0.0", 1700000000),
        &out.join("images/app"),
        None,
    )
    .unwrap();
    let describe = |p: &str| Output {
        path: p.into(),
        digest: farm_store::tree_digest(&out.join(p)).unwrap().to_string(),
        size: farm_engine::output::tree_size(&out.join(p)).unwrap(),
        metadata: Default::default(),
    };
    let mut image = describe("images/app");
    image.metadata.insert("reference".into(), "shop-app:2.0.0".into());
    image
        .metadata
        .insert("manifest_digest".into(), built.manifest_digest.to_string().into());
    let mut outputs = BTreeMap::from([
        ("frontend".to_string(), describe("frontend")),
        ("openapi".to_string(), describe("openapi.json")),
        ("image.app".to_string(), image),
    ]);
    let make_manifest = |outputs| {
        let mut m = Manifest {
            schema: SCHEMA,
            project: ProjectInfo {
                name: "shop".into(),
                version: "2.0.0".into(),
            },
            hermetic: true,
            environment: "production".into(),
            dev: false,
            source_date_epoch: 1700000000,
            inputs: Inputs {
                lock: sha256_of(lock_text.as_bytes()).to_string(),
                farm_toml: "sha256:22".into(),
                sources: BTreeMap::new(),
            },
            outputs,
            digest: String::new(),
        };
        m.seal();
        m
    };
    let project = farm_project::Project::load(&root).unwrap();
    let store = farm_store::Store::open(d.join("home")).unwrap();
    farm_engine::ops::attest::write_release_sboms(&store, &project, &lock, &out, &mut outputs, &make_manifest).unwrap();
    let manifest = make_manifest(outputs);
    std::fs::write(out.join(MANIFEST_FILE), manifest.to_bytes()).unwrap();
    (out, manifest)
}

/// spdx-tools accepts every SPDX document farm writes — the build's (release
/// and image) and the example app's whole lock — and rejects one missing
/// its `dataLicense`, so acceptance is not vacuous.
#[test]
fn spdx_documents_validate_with_spdx_tools() {
    if !tools_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (out, _) = built_project(d);
    let mut files = vec![out.join("sbom/shop.spdx.json"), out.join("sbom/image-app.spdx.json")];
    let ex = d.join("example");
    std::fs::create_dir_all(ex.join("app")).unwrap();
    for f in ["farm.toml", "farm.lock"] {
        std::fs::copy(workspace().join("examples/farm-app").join(f), ex.join("app").join(f)).unwrap();
    }
    let example = d.join("example.spdx.json");
    let o = run(&mut farm_in(
        &ex,
        &["sbom", "--lock-only", "--output", example.to_str().unwrap()],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    files.push(example.clone());
    for f in &files {
        let o = spdx_valid(f);
        assert!(
            o.status.success(),
            "{}: pyspdxtools says:\n{}{}",
            f.display(),
            stdout(&o),
            stderr(&o)
        );
    }
    let mut broken: Value = serde_json::from_slice(&std::fs::read(&example).unwrap()).unwrap();
    broken.as_object_mut().unwrap().remove("dataLicense");
    let bad = d.join("broken.spdx.json");
    std::fs::write(&bad, broken.to_string()).unwrap();
    assert!(
        !spdx_valid(&bad).status.success(),
        "pyspdxtools accepted a document without dataLicense"
    );
}

/// cyclonedx-python-lib's strict validator (the official CycloneDX 1.6 JSON
/// schema) accepts the build's and the example lock's CycloneDX documents,
/// and rejects one with a component type the schema does not have.
#[test]
fn cyclonedx_documents_validate_against_the_1_6_schema() {
    if !tools_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (out, _) = built_project(d);
    let ex = d.join("example");
    std::fs::create_dir_all(ex.join("app")).unwrap();
    for f in ["farm.toml", "farm.lock"] {
        std::fs::copy(workspace().join("examples/farm-app").join(f), ex.join("app").join(f)).unwrap();
    }
    let example = d.join("example.cdx.json");
    let o = run(&mut farm_in(
        &ex,
        &[
            "sbom",
            "--lock-only",
            "--format",
            "cyclonedx",
            "--output",
            example.to_str().unwrap(),
        ],
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        out.join("sbom/shop.cdx.json"),
        out.join("sbom/image-app.cdx.json"),
        example.clone(),
    ] {
        let o = py(d, &["cdx", f.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut broken: Value = serde_json::from_slice(&std::fs::read(&example).unwrap()).unwrap();
    broken["components"][0]["type"] = "not-a-type".into();
    let bad = d.join("broken.cdx.json");
    std::fs::write(&bad, broken.to_string()).unwrap();
    let o = py(d, &["cdx", bad.to_str().unwrap()]);
    assert!(!o.status.success(), "the validator accepted a bad component type");
}

/// `farm provenance` parses with in-toto-attestation's bindings (the
/// Statement validates, the predicate is a SLSA Provenance v1 message), and
/// the subject digests it reads equal the manifest's: each output's tree
/// digest, and the image's manifest digest under its reference.
#[test]
fn provenance_parses_with_in_toto_attestation_and_names_the_manifests_digests() {
    if !tools_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, manifest) = built_project(d);
    let file = d.join("provenance.json");
    let o = run(&mut farm_in(d, &["provenance", "--output", file.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = py(d, &["statement", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let parsed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(parsed["predicateType"], "https://slsa.dev/provenance/v1");
    let subjects = &parsed["subjects"];
    for (name, o) in &manifest.outputs {
        assert_eq!(
            subjects[&o.path]["farmTree"].as_str().map(|h| format!("sha256:{h}")),
            Some(o.digest.clone()),
            "output {name}"
        );
    }
    let image = &manifest.outputs["image.app"].metadata;
    assert_eq!(
        subjects["shop-app:2.0.0"]["sha256"]
            .as_str()
            .map(|h| format!("sha256:{h}")),
        image["manifest_digest"].as_str().map(String::from)
    );
}

/// Envelopes farm signed (P-256 and Ed25519 keys from `farm keygen`) verify
/// with securesystemslib; after a payload byte is changed securesystemslib
/// rejects the envelope and so does `farm verify-attestation`.
#[test]
fn dsse_envelopes_verify_with_securesystemslib_and_tampering_fails() {
    if !tools_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    built_project(d);
    for key_type in ["p256", "ed25519"] {
        let prefix = d.join(key_type);
        let o = run(&mut farm_in(
            d,
            &["keygen", "--type", key_type, "--output", prefix.to_str().unwrap()],
        ));
        assert!(o.status.success(), "{}", stderr(&o));
        let envelopes = d.join(format!("env-{key_type}"));
        let o = run(&mut farm_in(
            d,
            &[
                "sign",
                "--key",
                prefix.with_extension("key").to_str().unwrap(),
                "--output-dir",
                envelopes.to_str().unwrap(),
            ],
        ));
        assert!(o.status.success(), "{}", stderr(&o));
        let pubkey = prefix.with_extension("pub");
        for (name, predicate) in [
            ("provenance.intoto.jsonl", "https://slsa.dev/provenance/v1"),
            ("sbom.spdx.intoto.jsonl", "https://spdx.dev/Document"),
            ("sbom.cyclonedx.intoto.jsonl", "https://cyclonedx.org/bom"),
        ] {
            let env = envelopes.join(name);
            let o = py(d, &["dsse", env.to_str().unwrap(), pubkey.to_str().unwrap()]);
            assert!(o.status.success(), "{key_type} {name}: {}", stderr(&o));
            assert_eq!(stdout(&o).trim(), predicate);
        }
        // The attack: one byte of the payload changed, the signature kept.
        let env = envelopes.join("provenance.intoto.jsonl");
        let mut e: Value = serde_json::from_slice(&std::fs::read(&env).unwrap()).unwrap();
        let payload = e["payload"].as_str().unwrap();
        let mut body = base64_decode(payload);
        let at = body.windows(8).position(|w| w == b"\"shop-ap").unwrap();
        body[at + 1] = b'S';
        e["payload"] = base64_encode(&body).into();
        let tampered = d.join(format!("tampered-{key_type}.intoto.jsonl"));
        std::fs::write(&tampered, e.to_string()).unwrap();
        let o = py(d, &["dsse", tampered.to_str().unwrap(), pubkey.to_str().unwrap()]);
        assert!(!o.status.success(), "securesystemslib accepted a tampered payload");
        let o = run(&mut farm_in(
            d,
            &[
                "verify-attestation",
                "--key",
                pubkey.to_str().unwrap(),
                tampered.to_str().unwrap(),
            ],
        ));
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn base64_decode(s: &str) -> Vec<u8> {
    let vals: Vec<u32> = s
        .bytes()
        .filter(|b| *b != b'=')
        .map(|b| B64.iter().position(|x| *x == b).unwrap() as u32)
        .collect();
    let mut out = Vec::new();
    for c in vals.chunks(4) {
        let n = c.iter().enumerate().fold(0u32, |n, (i, v)| n | v << (18 - 6 * i));
        for i in 0..c.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
