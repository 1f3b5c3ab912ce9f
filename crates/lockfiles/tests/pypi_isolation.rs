//! pip's resolver must see only the index farm passes: the user's pip
//! configuration (this machine sets PIP_FIND_LINKS) must not leak into a
//! lock. One test per binary, because it sets the process environment.

use std::path::Path;

use farm_lockfiles::pypi;

/// Proves a newer wheel offered through PIP_FIND_LINKS is ignored: the lock
/// holds the index's annotated-types, not the local 99.0.0 decoy.
#[tokio::test]
async fn pip_find_links_from_the_environment_does_not_leak_into_the_lock() {
    let index = match std::env::var("PIP_INDEX_URL") {
        Ok(u) => Some(u),
        Err(_) => std::process::Command::new("python3")
            .args(["-c", "from pip._internal.models.index import PyPI; import subprocess,sys; r=subprocess.run([sys.executable,'-m','pip','config','get','global.index-url'],capture_output=True,text=True); print(r.stdout.strip() or PyPI.simple_url)"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_string()),
    };
    if !farm_testkit::require(
        index.is_some(),
        "python3 with pip not found (scripts/install-deps installs python3-pip)",
    ) {
        return;
    }
    let index = index.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let links = dir.path().join("links");
    std::fs::create_dir(&links).unwrap();
    // A minimal valid wheel, built by Python's zipfile so pip accepts it.
    let made = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, zipfile\n\
             n = 'annotated_types-99.0.0'\n\
             with zipfile.ZipFile(sys.argv[1] + '/' + n + '-py3-none-any.whl', 'w') as z:\n\
             \x20   z.writestr('annotated_types/__init__.py', '')\n\
             \x20   z.writestr(n + '.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: annotated-types\\nVersion: 99.0.0\\n')\n\
             \x20   z.writestr(n + '.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: farm-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
             \x20   z.writestr(n + '.dist-info/RECORD', '')\n",
        )
        .arg(&links)
        .status()
        .unwrap();
    assert!(made.success());
    // Safe: this binary holds only this test, and nothing else runs yet.
    std::env::set_var("PIP_FIND_LINKS", &links);
    let req = dir.path().join("requirements.txt");
    std::fs::write(&req, "annotated-types>=0.6\n").unwrap();
    let wheels = pypi::resolve_requirements(&req, &index, "3.11", Path::new("python3"))
        .await
        .unwrap();
    assert_eq!(wheels.len(), 1, "{wheels:?}");
    assert_ne!(
        wheels[0].artifact.version, "99.0.0",
        "PIP_FIND_LINKS leaked into the lock"
    );
    assert!(
        wheels[0].artifact.url.starts_with("pypi://annotated-types/"),
        "{}",
        wheels[0].artifact.url
    );
}
