//! The PyPI resolvers against this machine's real Python index (pip's own
//! configuration, else pip's default index), with pip's resolver run by the
//! host's `python3`.

use std::path::Path;

use farm_lockfiles::http::{Client, ClientOptions};
use farm_lockfiles::integrity::Algorithm;
use farm_lockfiles::mirror::Mirrors;
use farm_lockfiles::pypi;

/// The index pip would use here: PIP_INDEX_URL, `pip config`, else pip's
/// built-in default (asked from pip, never written down). `None` (test
/// skipped) when python3 or pip is missing outside CI.
fn configured_index() -> Option<String> {
    if let Ok(url) = std::env::var("PIP_INDEX_URL") {
        return Some(url);
    }
    let ask = |args: &[&str]| {
        std::process::Command::new("python3")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let found = ask(&["-m", "pip", "config", "get", "global.index-url"]).or_else(|| {
        ask(&[
            "-c",
            "from pip._internal.models.index import PyPI; print(PyPI.simple_url)",
        ])
    });
    farm_testkit::require(
        found.is_some(),
        "python3 with pip not found (scripts/install-deps installs python3-pip)",
    );
    found
}

fn write_requirements(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("requirements.txt");
    std::fs::write(&path, text).unwrap();
    path
}

/// Proves pins of only the top level (fastapi, uvicorn, pydantic) lock the
/// whole transitive set as wheels for CPython 3.11 manylinux x86_64, each with
/// a sha256, and that the pins fetch from the index (wheel_url + download).
#[tokio::test]
async fn top_level_pins_lock_the_full_transitive_wheel_set() {
    let Some(index) = configured_index() else { return };
    let dir = tempfile::tempdir().unwrap();
    let req = write_requirements(dir.path(), "fastapi==0.115.6\nuvicorn==0.34.0\npydantic==2.10.4\n");
    let wheels = pypi::resolve_requirements(&req, &index, "3.11", Path::new("python3"))
        .await
        .unwrap();

    let names: Vec<&str> = wheels.iter().map(|w| w.artifact.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "wheels must come sorted by name");
    for want in [
        "fastapi",
        "uvicorn",
        "pydantic",
        "pydantic-core",
        "starlette",
        "anyio",
        "annotated-types",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    for w in &wheels {
        assert!(w.filename.ends_with(".whl"), "{}", w.filename);
        assert_eq!(w.artifact.integrity.algorithm, Algorithm::Sha256);
        assert_eq!(w.artifact.url, format!("pypi://{}/{}", w.artifact.name, w.filename));
    }
    let core = wheels.iter().find(|w| w.artifact.name == "pydantic-core").unwrap();
    assert!(core.filename.contains("-cp311-cp311-"), "{}", core.filename);
    assert!(
        core.filename.contains("manylinux") && core.filename.ends_with("x86_64.whl"),
        "{}",
        core.filename
    );
    let fastapi = wheels.iter().find(|w| w.artifact.name == "fastapi").unwrap();
    assert_eq!(fastapi.artifact.version, "0.115.6");

    // The lock URL maps back to the index's file, whose bytes match the pin.
    let client = Client::new(ClientOptions::default());
    let mirrors = Mirrors {
        pypi_index: Some(index.clone()),
        ..Default::default()
    };
    let small = wheels.iter().find(|w| w.artifact.name == "annotated-types").unwrap();
    let url = mirrors.resolve(&client, &small.artifact.url).await.unwrap();
    assert!(url.starts_with("http") && url.ends_with(&small.filename), "{url}");
    let dest = dir.path().join(&small.filename);
    client
        .download(&url, Some(&small.artifact.integrity), &dest, &|_, _| {})
        .await
        .unwrap();
}

/// Proves a pin that does not exist fails with pip's own message naming it.
#[tokio::test]
async fn a_pin_that_does_not_exist_is_an_error_naming_it() {
    let Some(index) = configured_index() else { return };
    let dir = tempfile::tempdir().unwrap();
    let req = write_requirements(dir.path(), "fastapi==0.0.999\n");
    let err = pypi::resolve_requirements(&req, &index, "3.11", Path::new("python3"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, pypi::PypiError::PipFailed { .. }), "{msg}");
    assert!(msg.contains("fastapi==0.0.999"), "{msg}");
}

/// Proves pip's universal wheel pins by sha256 from the simple API.
#[tokio::test]
async fn pip_24_2_pins_its_universal_wheel() {
    let Some(index) = configured_index() else { return };
    let client = Client::new(ClientOptions::default());
    let pip = pypi::resolve_pip(&client, &index, "24.2").await.unwrap();
    assert_eq!(pip.url, "pypi://pip/pip-24.2-py3-none-any.whl");
    assert_eq!(
        pip.integrity.to_string(),
        "sha256:2cd581cf58ab7fcfca4ce8efa6dcacd0de5bf8d0a3eb9ec927e07405f4d9e2a2"
    );
    assert!(pip.size.unwrap_or(0) > 1_000_000, "{:?}", pip.size);
    let url = pypi::wheel_url(&client, &index, "pip", "pip-24.2-py3-none-any.whl")
        .await
        .unwrap();
    assert!(
        url.starts_with("http") && url.ends_with("/pip-24.2-py3-none-any.whl"),
        "{url}"
    );
}
