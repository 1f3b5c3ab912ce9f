//! Python backends as real apps pin them, through the real binary: a uv
//! workspace (root uv.lock, the FastAPI backend a member with a dev group)
//! and a Poetry backend (poetry.lock + pyproject.toml), each taken from
//! `farm init` to a hermetic build without edits; and pip's resolver for
//! requirements files running in farm's sandbox with the locked Python and
//! a network that reaches only the configured index (a loopback index).
//!
//! The fixtures' lockfiles were made by uv and Poetry themselves
//! (tests/fixtures/py-*/GENERATED.md); uv.lock's index URLs are placeholders, since
//! farm finds index wheels again in the fetching machine's own index.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{copy_tree, farm, run, stderr, stdout, workspace};
use farm_testkit::shared_farm_home;

fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&workspace().join("tests/fixtures").join(name), dir.path(), &[".farm"]);
    dir
}

fn toml_of(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()))
}

fn manifest(project: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(project.join(".farm/out/farm-manifest.json")).unwrap()).unwrap()
}

/// `[[wheels]]` of farm.lock: name → (file name, integrity).
fn locked_wheels(project: &Path) -> std::collections::BTreeMap<String, (String, String)> {
    let lock = toml_of(&project.join("farm.lock"));
    lock.get("wheels")
        .and_then(|w| w.as_array())
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|w| {
            let s = |k: &str| w.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            (s("name"), (s("filename"), s("integrity")))
        })
        .collect()
}

/// `farm init`, then lock, fetch, two hermetic builds of the backend (the
/// second without the action cache), `lock --check`, and a tampered wheel
/// hash that `lock --check` names. Returns the project for more checks.
fn init_to_reproducible_build(name: &str, backend: &str, lockfile: &str) -> tempfile::TempDir {
    let project = fixture(name);
    let p = project.path();
    let home = shared_farm_home();

    let out = run(&mut farm(p, &home, &["init"]));
    assert!(out.status.success(), "farm init: {}", stderr(&out));
    let config = toml_of(&p.join("farm.toml"));
    let b = &config["backend"];
    assert_eq!(b["path"].as_str(), Some(backend), "{config:#?}");
    assert_eq!(
        b["lockfile"].as_str(),
        Some(lockfile),
        "init names the app's lockfile: {config:#?}"
    );
    assert!(
        b.get("requirements").is_none(),
        "no requirements.txt is asked for: {config:#?}"
    );
    assert_eq!(b["app"].as_str(), Some("app.main:app"));

    let out = run(&mut farm(p, &home, &["lock"]));
    assert!(out.status.success(), "farm lock of what init wrote: {}", stderr(&out));
    let lock = toml_of(&p.join("farm.lock"));
    assert!(
        lock["inputs"].get(lockfile).is_some(),
        "the lockfile is an input of farm.lock: {:#?}",
        lock["inputs"]
    );
    let wheels = locked_wheels(p);
    for needed in [
        "fastapi",
        "pydantic",
        "pydantic-core",
        "starlette",
        "anyio",
        "typing-extensions",
    ] {
        assert!(wheels.contains_key(needed), "{needed} is locked: {wheels:#?}");
    }
    assert!(
        !wheels.contains_key("iniconfig"),
        "the dev group is not installed by default: {wheels:#?}"
    );
    let core = &wheels["pydantic-core"].0;
    assert!(
        core.contains("-cp311-cp311-") && core.contains("manylinux") && core.contains("x86_64"),
        "the compiled wheel fits the locked CPython 3.11 on glibc x86_64: {core}"
    );

    let out = run(&mut farm(p, &home, &["fetch"]));
    assert!(out.status.success(), "farm fetch: {}", stderr(&out));

    let out = run(&mut farm(p, &home, &["build", "--hermetic", "backend"]));
    assert!(out.status.success(), "farm build --hermetic backend: {}", stderr(&out));
    let first = manifest(p)["outputs"]["backend"]["digest"].clone();
    assert!(first.as_str().is_some_and(|d| d.starts_with("sha256:")), "{first}");
    let openapi = std::fs::read_to_string(p.join(".farm/out/openapi.json")).unwrap();
    assert!(
        openapi.contains("/health"),
        "the app was imported with its locked wheels: {openapi}"
    );
    let out = run(&mut farm(p, &home, &["build", "--hermetic", "--no-cache", "backend"]));
    assert!(out.status.success(), "second build: {}", stderr(&out));
    assert_eq!(
        manifest(p)["outputs"]["backend"]["digest"],
        first,
        "two hermetic builds of the backend give the same digest"
    );
    let out = run(&mut farm(p, &home, &["check", "--target", "backend"]));
    assert!(out.status.success(), "farm check --target backend: {}", stderr(&out));

    let out = run(&mut farm(p, &home, &["lock", "--check"]));
    assert!(out.status.success(), "lock --check of a fresh lock: {}", stderr(&out));

    // Another wheel's digest in place of pydantic's: the lockfile pins it.
    let lock_path = p.join("farm.lock");
    let good = std::fs::read_to_string(&lock_path).unwrap();
    let (_, pydantic_hash) = &wheels["pydantic"];
    let (_, other_hash) = &wheels["anyio"];
    let tampered = good.replacen(pydantic_hash.as_str(), other_hash.as_str(), 1);
    assert_ne!(tampered, good);
    std::fs::write(&lock_path, &tampered).unwrap();
    let out = run(&mut farm(p, &home, &["lock", "--check"]));
    assert_eq!(out.status.code(), Some(3), "a tampered wheel hash fails lock --check");
    let err = stderr(&out);
    assert!(
        err.contains("[[wheels]] pydantic: integrity") && err.contains(pydantic_hash.as_str()),
        "the difference names the entry and what the lockfile pins: {err}"
    );
    let out = run(&mut farm(p, &home, &["fetch", "--offline"]));
    assert!(!out.status.success(), "fetch refuses the tampered lock too");
    std::fs::write(&lock_path, &good).unwrap();
    project
}

/// Proves a uv workspace backend (root uv.lock, member `backend/`) goes
/// from `farm init` to reproducible hermetic builds without edits, with the
/// member's own package not downloaded and its dev group left out; and that
/// naming the group in farm.toml makes the lock stale and then installs it.
#[test]
fn uv_workspace_backend_from_init_to_reproducible_build() {
    let project = init_to_reproducible_build("py-uv-workspace", "backend", "uv.lock");
    let p = project.path();
    let home = shared_farm_home();
    assert!(
        !locked_wheels(p).contains_key("uv-api"),
        "the workspace member is built from source, not downloaded"
    );

    let config = std::fs::read_to_string(p.join("farm.toml")).unwrap();
    let with_dev = config.replacen("[backend]\n", "[backend]\ngroups = [\"dev\"]\n", 1);
    assert_ne!(with_dev, config);
    std::fs::write(p.join("farm.toml"), with_dev).unwrap();
    let out = run(&mut farm(p, &home, &["lock", "--check"]));
    assert_eq!(out.status.code(), Some(3), "choosing a group makes the wheels stale");
    assert!(stderr(&out).contains("farm.toml#backend.lockfile"), "{}", stderr(&out));
    let out = run(&mut farm(p, &home, &["lock"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        locked_wheels(p).contains_key("iniconfig"),
        "the dev group is now installed"
    );
    let out = run(&mut farm(p, &home, &["lock", "--check"]));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Proves a Poetry backend (poetry.lock + pyproject.toml with a dev group)
/// goes from `farm init` to reproducible hermetic builds without edits.
#[test]
fn poetry_backend_from_init_to_reproducible_build() {
    let project = init_to_reproducible_build("py-poetry", "api", "api/poetry.lock");
    let lock = toml_of(&project.path().join("farm.lock"));
    assert!(
        lock["inputs"].get("api/pyproject.toml").is_some(),
        "the pyproject.toml poetry.lock is read with is an input too"
    );
}

// ---------------------------------------------------------------------------
// pip's resolver in the sandbox

/// Writes wheels and a PEP 503 index for them under `root`
/// (`simple/<project>/index.html`, `files/<wheel>`). argv: root, the base
/// URL of a second server for `far-pkg`'s file, the directory holding the
/// real pip wheel.
const MAKE_INDEX: &str = r#"
import hashlib, os, shutil, sys, zipfile
root, far_base, far_root, pip_dir = sys.argv[1:5]
def page(name, links):
    d = os.path.join(root, 'simple', name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, 'index.html'), 'w') as f:
        f.write('<html><body>' + ''.join(f'<a href="{h}">{t}</a>' for h, t in links) + '</body></html>\n')
def wheel(where, name, version, requires=()):
    dist = name.replace('-', '_')
    fn = f"{dist}-{version}-py3-none-any.whl"
    os.makedirs(os.path.join(where, 'files'), exist_ok=True)
    path = os.path.join(where, 'files', fn)
    info = f"{dist}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, 'w') as z:
        z.writestr(f"{dist}/__init__.py", "")
        z.writestr(f"{info}/METADATA", meta)
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: farm-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return fn, hashlib.sha256(open(path, 'rb').read()).hexdigest()
def local(name, versions):
    links = []
    for v, req in versions:
        fn, sha = wheel(root, name, v, req)
        links.append((f"../../files/{fn}#sha256={sha}", fn))
    page(name, links)
local('app-a', [('1.0', ['dep-b==1.0; python_version == "3.11"', 'dep-c==1.0; python_version != "3.11"'])])
local('dep-b', [('1.0', []), ('2.0', [])])
local('dep-c', [('1.0', [])])
# Listed by the index, stored on the other server (as an index's files host).
fn, sha = wheel(far_root, 'far-pkg', '1.0')
page('far-pkg', [(f"{far_base}/files/{fn}#sha256={sha}", fn)])
# Not listed by the index: app-b's metadata names it by direct URL.
fn, sha = wheel(far_root, 'far-direct', '1.0')
local('app-b', [('1.0', [f"far-direct @ {far_base}/files/{fn}"])])
pip = [f for f in os.listdir(pip_dir) if f.startswith('pip-') and f.endswith('.whl')][0]
os.makedirs(os.path.join(root, 'files'), exist_ok=True)
shutil.copy(os.path.join(pip_dir, pip), os.path.join(root, 'files', pip))
page('pip', [(f"../../files/{pip}#sha256={hashlib.sha256(open(os.path.join(root, 'files', pip), 'rb').read()).hexdigest()}", pip)])
"#;

/// `python3 -m http.server` on a free loopback port, its request log in a
/// file; stopped on drop.
struct StaticServer {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl StaticServer {
    fn serve(dir: &Path, port: u16, log: &Path) -> StaticServer {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("python3 runs");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        farm_testkit::wait_for_port(addr, Duration::from_secs(30));
        StaticServer {
            child,
            base: format!("http://{addr}"),
            log: log.to_path_buf(),
        }
    }

    /// The GET requests it answered.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET "))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback index with the real pip wheel (pip 24.3.1, downloaded with
/// this machine's pip configuration) and the test's own wheels, a second
/// server holding `far-pkg`'s file, and a project whose farm.toml uses the
/// index.
struct PipWorld {
    _dirs: tempfile::TempDir,
    index: StaticServer,
    far: StaticServer,
    project: tempfile::TempDir,
}

fn pip_world() -> PipWorld {
    let dirs = tempfile::tempdir().unwrap();
    let d = dirs.path();
    let pip_dir = d.join("pip");
    let out = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d"])
        .arg(&pip_dir)
        .arg("pip==24.3.1")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "pip download pip==24.3.1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (index_root, far_root) = (d.join("index"), d.join("far"));
    std::fs::create_dir_all(&far_root).unwrap();
    let (index_port, far_port) = (farm_testkit::free_port(), farm_testkit::free_port());
    let far_base = format!("http://127.0.0.1:{far_port}");
    let out = Command::new("python3")
        .args(["-c", MAKE_INDEX])
        .arg(&index_root)
        .arg(&far_base)
        .arg(&far_root)
        .arg(&pip_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let index = StaticServer::serve(&index_root, index_port, &d.join("index.log"));
    let far = StaticServer::serve(&far_root, far_port, &d.join("far.log"));
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::create_dir_all(p.join("api")).unwrap();
    std::fs::write(p.join("api/main.py"), "app = None\n").unwrap();
    std::fs::write(
        p.join("farm.toml"),
        format!(
            r#"[project]
name = "pip-sandbox"
version = "0.1.0"

[toolchains.python]
version = "3.11"
pip = "24.3.1"

[toolchains.debian]
suite = "bookworm"
architecture = "amd64"

[backend]
path = "api"
requirements = "requirements.txt"
app = "main:app"

[registries]
pypi = "{}/simple"
"#,
            index.base
        ),
    )
    .unwrap();
    PipWorld {
        _dirs: dirs,
        index,
        far,
        project,
    }
}

fn lock_with(world: &PipWorld, requirements: &str, resolver: Option<&str>) -> std::process::Output {
    let p = world.project.path();
    std::fs::write(p.join("api/requirements.txt"), requirements).unwrap();
    let _ = std::fs::remove_file(p.join("farm.lock"));
    let mut cmd = farm(p, &shared_farm_home(), &["lock"]);
    match resolver {
        Some(r) => cmd.env("FARM_PIP_RESOLVER", r),
        None => cmd.env_remove("FARM_PIP_RESOLVER"),
    };
    run(&mut cmd)
}

/// Proves `farm lock` runs pip's resolver in the sandbox with the locked
/// Python and the index as its only reachable place: the requirements
/// resolve (markers for the pinned 3.11) and it says so; a file the index
/// lists on another server is fetched for pip by farm's relay; a
/// dependency whose metadata names a second server's file by direct URL
/// (which the index does not list) fails there without that server seeing
/// a request, while the explicit host fallback (FARM_PIP_RESOLVER=host)
/// reaches it and warns that it ran outside.
#[test]
fn pip_resolves_in_the_sandbox_and_reaches_only_the_index() {
    let world = pip_world();
    let p = world.project.path();

    let out = lock_with(&world, "app-a==1.0\n", None);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains(&format!(
            "in farm's sandbox, network limited to the index {}/simple",
            world.index.base
        )),
        "the lock says where pip ran: {said}"
    );
    assert!(said.contains("the locked Python 3.11."), "{said}");
    let wheels = locked_wheels(p);
    assert_eq!(
        wheels.keys().map(String::as_str).collect::<Vec<_>>(),
        ["app-a", "dep-b"],
        "markers were evaluated for the pinned 3.11"
    );
    assert!(
        world.index.requests().iter().any(|r| r.contains("/simple/app-a/")),
        "pip read the index through the proxy"
    );

    let out = lock_with(&world, "far-pkg==1.0\n", None);
    assert!(
        out.status.success(),
        "a file the index lists elsewhere: {}",
        stderr(&out)
    );
    assert!(locked_wheels(p).contains_key("far-pkg"));
    let far_direct = |w: &PipWorld| w.far.requests().iter().any(|r| r.contains("far_direct"));
    assert!(!far_direct(&world));

    let out = lock_with(&world, "app-b==1.0\n", None);
    assert!(!out.status.success(), "a file the index does not list is out of reach");
    let err = stderr(&out);
    assert!(err.contains("far-direct") || err.contains("far_direct"), "{err}");
    assert!(
        err.contains("403") && err.contains("farm's relay"),
        "the proxy refused it, and farm says why: {err}"
    );
    assert!(!p.join("farm.lock").exists(), "no lock is written");
    assert!(
        !far_direct(&world),
        "the second server never saw the request: {:?}",
        world.far.requests()
    );

    let out = lock_with(&world, "app-b==1.0\n", Some("host"));
    assert!(
        stderr(&out).contains("FARM_PIP_RESOLVER=host") && stderr(&out).contains("outside the sandbox"),
        "the host fallback is never silent: {}",
        stderr(&out)
    );
    assert!(far_direct(&world), "on the host pip reached the other server");
}

/// Proves pip's explanation of a conflict reaches the lock error with the
/// requirement's line, and the status reads `exit status 1`, once.
#[test]
fn pip_conflicts_are_explained_with_the_requirement_lines() {
    let world = pip_world();
    let out = lock_with(&world, "app-a==1.0\ndep-b==2.0\n", None);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("The conflict is caused by"), "{err}");
    assert!(
        err.contains("requirements.txt:2"),
        "the conflicting line is named: {err}"
    );
    assert!(err.contains("exit status 1"), "{err}");
    assert!(!err.contains("exit status exit status"), "{err}");
}
