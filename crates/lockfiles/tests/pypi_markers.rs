//! Environment markers are evaluated for the pinned Python, not for the
//! interpreter pip runs in. A static PEP 503 index on loopback serves a
//! package whose dependencies differ by `python_version`; pip runs with
//! this machine's python3 and is asked to lock for another version.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use farm_lockfiles::pypi::{self, HostPython, PythonTarget};

/// Writes wheels and a PEP 503 index for them under `root`
/// (`simple/<project>/index.html`, `files/<wheel>`), with Python's zipfile
/// so pip reads them as it reads any wheel.
const MAKE_INDEX: &str = r#"
import hashlib, os, sys, zipfile
root = sys.argv[1]
def wheel(name, version, requires=()):
    dist = name.replace('-', '_')
    fn = f"{dist}-{version}-py3-none-any.whl"
    os.makedirs(os.path.join(root, 'files'), exist_ok=True)
    path = os.path.join(root, 'files', fn)
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr(f"{dist}/__init__.py", "")
        z.writestr(f"{info}/METADATA", meta)
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: farm-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    sha = hashlib.sha256(open(path, 'rb').read()).hexdigest()
    page = os.path.join(root, 'simple', name)
    os.makedirs(page, exist_ok=True)
    with open(os.path.join(page, 'index.html'), 'w') as f:
        f.write(f'<html><body><a href="../../files/{fn}#sha256={sha}">{fn}</a></body></html>\n')
wheel('app-a', '1.0', ['dep-new==1.0; python_version >= "3.12"', 'dep-old==1.0; python_version < "3.12"'])
wheel('dep-new', '1.0')
wheel('dep-old', '1.0')
wheel('extra-new', '1.0')
"#;

/// `python3 -m http.server` on a free loopback port, stopped on drop.
struct StaticIndex {
    child: Child,
    url: String,
}

impl StaticIndex {
    fn serve(dir: &Path) -> StaticIndex {
        let port = farm_testkit::free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        farm_testkit::wait_for_port(addr, Duration::from_secs(30));
        StaticIndex {
            child,
            url: format!("http://{addr}/simple"),
        }
    }
}

impl Drop for StaticIndex {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn has_pip() -> bool {
    let ok = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    farm_testkit::require(
        ok,
        "python3 with pip not found (scripts/install-deps installs python3-pip)",
    )
}

fn names(wheels: &[farm_lockfiles::lock::PythonWheel]) -> Vec<&str> {
    wheels.iter().map(|w| w.artifact.name.as_str()).collect()
}

/// Proves markers follow the target: locked for 3.12, the lock holds
/// `dep-new` and the `; python_version >= "3.12"` requirement, whatever the
/// host interpreter's version; locked for 3.10 it holds `dep-old` instead.
/// At least one of the two differs from the host's own version, so a
/// resolver that evaluated markers on the host would fail one of them.
#[tokio::test]
async fn markers_are_evaluated_for_the_pinned_python_not_the_host() {
    if !has_pip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let index_dir = dir.path().join("index");
    let made = Command::new("python3")
        .arg("-c")
        .arg(MAKE_INDEX)
        .arg(&index_dir)
        .status()
        .unwrap();
    assert!(made.success());
    let index = StaticIndex::serve(&index_dir);
    let project = dir.path().join("api");
    std::fs::create_dir(&project).unwrap();
    let req = project.join("requirements.txt");
    std::fs::write(&req, "app-a==1.0\nextra-new==1.0 ; python_version >= \"3.12\"\n").unwrap();
    let runner = HostPython {
        python: "python3".into(),
    };

    let t312 = PythonTarget::new("3.12", None).unwrap();
    let wheels = pypi::resolve_requirements_with(&req, &project, &index.url, &t312, &runner)
        .await
        .unwrap();
    assert_eq!(names(&wheels), ["app-a", "dep-new", "extra-new"], "locked for 3.12");
    assert!(wheels.iter().all(|w| w.artifact.url.starts_with("pypi://")));

    let t310 = PythonTarget::new("3.10", Some("3.10.13")).unwrap();
    let wheels = pypi::resolve_requirements_with(&req, &project, &index.url, &t310, &runner)
        .await
        .unwrap();
    assert_eq!(names(&wheels), ["app-a", "dep-old"], "locked for 3.10");
}
