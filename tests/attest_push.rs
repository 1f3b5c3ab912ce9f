//! The SBOMs a build writes — as outputs named in the manifest and as OCI
//! artifacts in the image layouts — and `farm push` publishing them with
//! the signed attestations so that a registry client finds them from the
//! image digest alone (referrers API, or the referrers tag schema where
//! the registry has none).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use farm_engine::manifest::{Inputs, Manifest, Output, ProjectInfo, MANIFEST_FILE, SCHEMA};
use farm_lockfiles::integrity::sha256_of;
use farm_lockfiles::lock::{DebianBase, DebianPackage, NpmPackage};
use farm_lockfiles::{Lock, LockedArtifact, Unpack};
use serde_json::Value;

const SDE: u64 = 1700000000;

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

/// `dir/app`: farm.toml and farm.lock (a Debian package and an npm package).
fn project(dir: &Path) -> PathBuf {
    let root = dir.join("app");
    write(
        &root.join("farm.toml"),
        format!("[project]\nname = \"shop\"\nversion = \"2.0.0\"\nsource-date-epoch = {SDE}\n").as_bytes(),
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
    write(&root.join("farm.lock"), lock.to_toml().as_bytes());
    root
}

/// What `farm build` does at the end, in `out`: a frontend and an image
/// layout placed, then the SBOMs written and attached
/// (`write_release_sboms`, as build.rs calls it), then the manifest.
/// `previous` are the outputs of the last build when `out` holds it
/// (the carried-over case). Returns the sealed manifest.
fn finish_build(root: &Path, home: &Path, out: &Path, previous: Option<BTreeMap<String, Output>>) -> Manifest {
    let lock_bytes = std::fs::read(root.join("farm.lock")).unwrap();
    let lock = Lock::read(&root.join("farm.lock")).unwrap();
    let project = farm_project::Project::load(root).unwrap();
    let store = farm_store::Store::open(home).unwrap();
    let mut outputs = match previous {
        Some(o) => o,
        None => {
            write(&out.join("frontend/index.html"), b"<p>shop</p>\n");
            let layout = out.join("images/app");
            let built = farm_images::build_image(
                &farm_images::ImageSpec::new("shop-app", "2.0.0", SDE as i64),
                &layout,
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
            image
                .metadata
                .insert("index_digest".into(), built.index_digest.to_string().into());
            BTreeMap::from([
                ("frontend".to_string(), describe("frontend")),
                ("image.app".into(), image),
            ])
        }
    };
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
            source_date_epoch: SDE,
            inputs: Inputs {
                lock: sha256_of(&lock_bytes).to_string(),
                farm_toml: "sha256:22".into(),
                sources: BTreeMap::new(),
            },
            outputs,
            digest: String::new(),
        };
        m.seal();
        m
    };
    farm_engine::ops::attest::write_release_sboms(&store, &project, &lock, out, &mut outputs, &make_manifest).unwrap();
    let manifest = make_manifest(outputs);
    std::fs::write(out.join(MANIFEST_FILE), manifest.to_bytes()).unwrap();
    manifest
}

fn farm_in(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut c = farm(&dir.join("app"), &dir.join("home"), args);
    c.current_dir(dir)
        .env_remove("FARM_SIGNING_PASSWORD")
        .env_remove("COSIGN_PASSWORD");
    c
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap()),
    )
    .unwrap()
}

/// Every file under `dir` (but the manifest) with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != MANIFEST_FILE {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Proves the build side: the release and image SBOMs are outputs in the
/// manifest with their real digests; `farm sbom` after the build writes
/// the very same bytes; the image layout lists both image SBOMs as
/// artifacts whose `subject` is the image manifest, without hiding the
/// image from layout readers; two builds, and a build over the last
/// one's carried-over layout, give byte-identical directories and manifests.
#[test]
fn build_writes_the_sboms_as_outputs_and_into_the_image_layout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = project(d);
    let out = root.join(".farm/out");
    let m = finish_build(&root, &d.join("home"), &out, None);

    for (output, path) in [
        ("sbom.spdx", "sbom/shop.spdx.json"),
        ("sbom.cyclonedx", "sbom/shop.cdx.json"),
        ("sbom.image.app.spdx", "sbom/image-app.spdx.json"),
        ("sbom.image.app.cyclonedx", "sbom/image-app.cdx.json"),
    ] {
        let o = &m.outputs[output];
        assert_eq!(o.path, path);
        assert_eq!(
            o.digest,
            farm_store::tree_digest(&out.join(path)).unwrap().to_string(),
            "{output}"
        );
    }
    for (args, path) in [
        (vec!["sbom"], "sbom/shop.spdx.json"),
        (vec!["sbom", "--format", "cyclonedx"], "sbom/shop.cdx.json"),
        (vec!["sbom", "--image", "app"], "sbom/image-app.spdx.json"),
        (
            vec!["sbom", "--image", "app", "--format", "cyclonedx"],
            "sbom/image-app.cdx.json",
        ),
    ] {
        let o = run(&mut farm_in(d, &args));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(
            o.stdout == std::fs::read(out.join(path)).unwrap(),
            "`farm {}` differs from the build's {path}",
            args.join(" ")
        );
    }

    let layout = out.join("images/app");
    let image_digest = m.outputs["image.app"].metadata["manifest_digest"].as_str().unwrap();
    let index = json(&layout.join("index.json"));
    assert_eq!(
        m.outputs["image.app"].metadata["index_digest"],
        sha256_of(&std::fs::read(layout.join("index.json")).unwrap()).to_string(),
        "the manifest names the index.json that lists the SBOMs"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 3, "{index}");
    assert_eq!(manifests[0]["digest"], image_digest);
    let mut types = Vec::new();
    for d in &manifests[1..] {
        let a: Value = serde_json::from_slice(&blob(&layout, d["digest"].as_str().unwrap())).unwrap();
        assert_eq!(a["subject"]["digest"], image_digest);
        assert_eq!(a["artifactType"], d["artifactType"]);
        assert_eq!(a["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
        let title = a["layers"][0]["annotations"]["org.opencontainers.image.title"]
            .as_str()
            .unwrap();
        assert_eq!(
            blob(&layout, a["layers"][0]["digest"].as_str().unwrap()),
            std::fs::read(out.join("sbom").join(title)).unwrap(),
            "the layout's {title} is the output's"
        );
        types.push(d["artifactType"].as_str().unwrap().to_string());
    }
    types.sort();
    assert_eq!(types, ["application/spdx+json", "application/vnd.cyclonedx+json"]);
    // Layout readers still see one image: a docker archive of it can be written.
    farm_images::write_docker_archive(&layout, "shop-app:2.0.0", &d.join("app.tar")).unwrap();
    let o = run(&mut farm_in(d, &["provenance"]));
    assert!(o.status.success(), "{}", stderr(&o));

    // A second build from scratch, and one over the carried-over directory.
    let again = d.join("again");
    let m2 = finish_build(&root, &d.join("home"), &again, None);
    assert_eq!(m2.to_bytes(), m.to_bytes());
    assert!(files(&again) == files(&out), "two builds differ");
    let carried = d.join("carried");
    copy_tree(&out, &carried, &[]);
    let m3 = finish_build(&root, &d.join("home"), &carried, Some(m.outputs.clone()));
    assert_eq!(m3.to_bytes(), m.to_bytes());
    assert!(files(&carried) == files(&out), "attaching again changed the directory");
}

fn registry_client(url: &str) -> farm_lockfiles::oci::RegistryClient {
    let http = farm_lockfiles::http::Client::new(farm_lockfiles::http::ClientOptions {
        attempts: 2,
        first_backoff: Duration::from_millis(50),
        ..Default::default()
    });
    farm_lockfiles::oci::RegistryClient::anonymous(&http, url).unwrap()
}

/// Proves the push side against a real registry (distribution 2.8, which
/// has no referrers API): after `farm sign` and `farm push`, the image's
/// referrers tag `sha256-<hex>` holds an index of the two SBOMs and the
/// three signed envelopes; each is an artifact whose `subject` is the
/// image and whose blob has the digest of the local file; skopeo (not
/// farm's code) reads the same index; a second push lists each once.
#[test]
fn push_publishes_sboms_and_signed_attestations_found_from_the_image_digest() {
    if !farm_testkit::require_tool("docker-registry") || !farm_testkit::require_tool("skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = project(d);
    let out = root.join(".farm/out");
    let m = finish_build(&root, &d.join("home"), &out, None);
    let image_digest = m.outputs["image.app"].metadata["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let key = d.join("k");
    let o = run(&mut farm_in(d, &["keygen", "--output", key.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&mut farm_in(d, &["sign", "--key", d.join("k.key").to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr(&o));

    let reg = farm_testkit::Registry::start();
    for round in 0..2 {
        let o = run(&mut farm_in(d, &["push", "--registry", &reg.url]));
        assert!(o.status.success(), "push {round}: {}", stderr(&o));
        assert!(stderr(&o).contains("5 attestations refer to"), "{}", stderr(&o));
    }

    let expected: BTreeMap<String, PathBuf> = [
        "sbom/image-app.spdx.json",
        "sbom/image-app.cdx.json",
        "attestations/provenance.intoto.jsonl",
        "attestations/sbom.spdx.intoto.jsonl",
        "attestations/sbom.cyclonedx.intoto.jsonl",
    ]
    .iter()
    .map(|p| (sha256_of(&std::fs::read(out.join(p)).unwrap()).to_string(), out.join(p)))
    .collect();

    let client = registry_client(&reg.url);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let digest = farm_lockfiles::integrity::Integrity::parse(&image_digest).unwrap();
    assert!(
        rt.block_on(client.referrers("shop-app", &digest)).unwrap().is_none(),
        "this registry has no referrers API, so the tag schema is what is tested"
    );
    let tag = format!("sha256-{}", digest.hex());
    let index = rt
        .block_on(client.get_manifest("shop-app", &tag, &[farm_lockfiles::oci::OCI_INDEX]))
        .unwrap();
    let index: Value = serde_json::from_slice(&index.bytes).unwrap();
    let listed = index["manifests"].as_array().unwrap();
    assert_eq!(listed.len(), 5, "each artifact once, after two pushes: {index}");
    let mut found = BTreeMap::new();
    for desc in listed {
        let fetched = rt
            .block_on(client.get_manifest(
                "shop-app",
                desc["digest"].as_str().unwrap(),
                &[farm_lockfiles::oci::OCI_MANIFEST],
            ))
            .unwrap();
        let a: Value = serde_json::from_slice(&fetched.bytes).unwrap();
        assert_eq!(a["subject"]["digest"], image_digest.as_str());
        assert_eq!(a["artifactType"], desc["artifactType"]);
        let layer = a["layers"][0]["digest"].as_str().unwrap().to_string();
        let dest = d.join("pulled").join(&layer[7..]);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        let layer_digest = farm_lockfiles::integrity::Integrity::parse(&layer).unwrap();
        rt.block_on(client.get_blob("shop-app", &layer_digest, &dest)).unwrap();
        assert_eq!(sha256_of(&std::fs::read(&dest).unwrap()).to_string(), layer);
        found.insert(layer, desc["artifactType"].as_str().unwrap().to_string());
    }
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the registry holds exactly the local SBOMs and envelopes ({expected:?})"
    );
    assert_eq!(
        found
            .values()
            .filter(|t| *t == "application/vnd.dsse.envelope.v1+json")
            .count(),
        3
    );

    // An independent client reads the same referrers index.
    let o = run(std::process::Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{}/shop-app:{tag}", reg.host),
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let by_skopeo: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(by_skopeo, index);
}
