//! The Python lockfile readers against fixture uv.lock, poetry.lock and
//! pylock.toml files: markers evaluated per target (3.11 and 3.13 differ),
//! one wheel picked per package by the tag rules, extras and groups, and
//! every refusal (git/path/editable sources, sdist-only packages).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use farm_lockfiles::lock::PythonWheel;
use farm_lockread::py::{
    parse_poetry_lock, parse_pylock, parse_uv_lock, read_py_lock, select_wheels, PyLock, PyTarget,
};
use sha2::Digest;

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// The sha256 the fixture generator wrote for a file.
fn sha(filename: &str) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(filename.as_bytes())))
}

fn target(python: &str) -> PyTarget {
    PyTarget::cpython(python, (2, 36))
}

fn with(mut t: PyTarget, extras: &[&str], groups: &[&str]) -> PyTarget {
    t.extras = extras.iter().map(|s| s.to_string()).collect();
    t.groups = groups.iter().map(|s| s.to_string()).collect();
    t
}

fn filenames(w: &[PythonWheel]) -> Vec<&str> {
    w.iter().map(|w| w.filename.as_str()).collect()
}

fn uv() -> PyLock {
    read_py_lock(&fixture("uv-workspace/uv.lock")).unwrap()
}

fn poetry() -> PyLock {
    read_py_lock(&fixture("poetry/poetry.lock")).unwrap()
}

fn pylock() -> PyLock {
    read_py_lock(&fixture("pylock/pylock.toml")).unwrap()
}

/// uv workspace on CPython 3.11: members are roots, not downloads; the
/// win32-only dependency is left out; the `< 3.12` numpy fork is chosen;
/// each package gets its most specific compatible wheel (never musllinux,
/// i686, Windows, macOS or PyPy); URLs are `pypi://` lock URLs with the
/// lock's sha256 and size.
#[test]
fn uv_workspace_on_311() {
    let wheels = select_wheels(&uv(), &target("3.11")).unwrap();
    assert_eq!(
        filenames(&wheels),
        [
            "annotated_types-0.7.0-py3-none-any.whl",
            "anyio-4.8.0-py3-none-any.whl",
            "fastapi-0.115.6-py3-none-any.whl",
            "idna-3.10-py3-none-any.whl",
            "numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "pydantic-2.10.4-py3-none-any.whl",
            "pydantic_core-2.27.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "sniffio-1.3.1-py3-none-any.whl",
            "starlette-0.41.3-py3-none-any.whl",
            "typing_extensions-4.12.2-py3-none-any.whl",
            "uvicorn-0.34.0-py3-none-any.whl",
            "uvloop-0.21.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        ]
    );
    let core = &wheels[6];
    assert_eq!(core.artifact.name, "pydantic-core");
    assert_eq!(core.artifact.version, "2.27.2");
    assert_eq!(
        core.artifact.url,
        "pypi://pydantic-core/pydantic_core-2.27.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    );
    assert_eq!(core.artifact.integrity.to_string(), sha(&core.filename));
    assert_eq!(core.artifact.size, Some(2001234));
    // Selecting only `backend` gives the same set: `shop` adds nothing of its own.
    let mut only = target("3.11");
    only.members = Some(BTreeSet::from(["backend".to_string()]));
    assert_eq!(select_wheels(&uv(), &only).unwrap(), wheels);
}

/// The same lock on CPython 3.13: `typing-extensions` (marker `< 3.13`)
/// goes, numpy takes the `>= 3.12` fork, and among numpy's cp313 wheels
/// manylinux_2_28 beats manylinux_2_17 on glibc 2.36 while the
/// free-threaded `cp313t` one never fits; on glibc 2.17 only 2_17 fits.
#[test]
fn uv_workspace_on_313_and_older_glibc() {
    let wheels = select_wheels(&uv(), &target("3.13")).unwrap();
    let names = filenames(&wheels);
    assert!(!names.iter().any(|n| n.starts_with("typing_extensions")), "{names:?}");
    assert!(
        names.contains(&"numpy-2.1.3-cp313-cp313-manylinux_2_28_x86_64.whl"),
        "{names:?}"
    );
    assert!(names.contains(&"pydantic_core-2.27.2-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"));
    assert!(names.contains(&"uvloop-0.21.0-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"));
    assert_eq!(wheels.len(), 11);
    let old = select_wheels(&uv(), &PyTarget::cpython("3.13.1", (2, 17))).unwrap();
    assert!(filenames(&old).contains(&"numpy-2.1.3-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"));
}

/// Dev groups are excluded unless asked; asking adds them.
#[test]
fn uv_groups() {
    let wheels = select_wheels(&uv(), &with(target("3.11"), &[], &["dev"])).unwrap();
    let names = filenames(&wheels);
    assert!(names.contains(&"pytest-8.3.4-py3-none-any.whl") && names.contains(&"iniconfig-2.0.0-py3-none-any.whl"));
    assert!(!names.iter().any(|n| n.starts_with("colorama")), "win32-only");
    let err = select_wheels(&uv(), &with(target("3.11"), &[], &["docs"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("group `docs`") && err.contains("dev, lint, local, vcs"),
        "{err}"
    );
}

/// A needed package from git, an editable path outside the workspace, or
/// with only an sdist is refused with the package and the reason.
#[test]
fn uv_refusals() {
    let err = select_wheels(&uv(), &with(target("3.11"), &[], &["vcs"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("package `internal-tool==0.3.0`")
            && err.contains("a git repository")
            && err.contains("git.example.invalid"),
        "{err}"
    );
    assert!(err.contains("uv.lock:"), "the line of the package: {err}");
    let err = select_wheels(&uv(), &with(target("3.11"), &[], &["local"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`shared-utils==0.2.0`") && err.contains("editable path outside the workspace"),
        "{err}"
    );
    let err = select_wheels(&uv(), &with(target("3.11"), &[], &["lint"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`legacy-sdist==1.0.2`")
            && err.contains("only a source distribution")
            && err.contains("wheels only"),
        "{err}"
    );
    let err = select_wheels(&uv(), &target("3.10")).unwrap_err().to_string();
    assert!(
        err.contains("requires-python") && err.contains(">=3.11") && err.contains("3.10.0"),
        "{err}"
    );
    let err = parse_uv_lock("uv.lock", "version = 2\n").unwrap_err().to_string();
    assert!(err.contains("version 2") && err.contains("version 1"), "{err}");
    let err = parse_uv_lock("uv.lock", "version = 1\n\n[[package]]\nname = \"x\"\nversion = \n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("uv.lock:5:"), "{err}");
    let missing = "version = 1\n[manifest]\nmembers = [\"a\"]\n[[package]]\nname = \"a\"\nversion = \"1\"\nsource = { editable = \".\" }\ndependencies = [{ name = \"ghost\" }]\n";
    let err = parse_uv_lock("uv.lock", missing).unwrap_err().to_string();
    assert!(
        err.starts_with("uv.lock:5: package `a`") && err.contains("`ghost`"),
        "{err}"
    );
}

/// A package with wheels, none for the target, names the wheels it has.
#[test]
fn no_compatible_wheel_lists_what_there_is() {
    let lock = format!(
        "version = 1\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\nsource = {{ editable = \".\" }}\ndependencies = [{{ name = \"winonly\" }}]\n\n[[package]]\nname = \"winonly\"\nversion = \"1.0\"\nsource = {{ registry = \"https://pypi.example.invalid/simple\" }}\nwheels = [{{ url = \"https://files.example.invalid/winonly-1.0-cp311-cp311-win_amd64.whl\", hash = \"{}\" }}]\n",
        sha("winonly-1.0-cp311-cp311-win_amd64.whl")
    );
    let err = select_wheels(&parse_uv_lock("uv.lock", &lock).unwrap(), &target("3.11"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`winonly==1.0`") && err.contains("win_amd64") && err.contains("manylinux_2_36"),
        "{err}"
    );
}

/// poetry.lock with pyproject.toml: main dependencies only by default;
/// `python = "<3.11"` and markers leave tomli out; fastapi's `standard`
/// extra brings uvicorn with its own `standard` extra (httptools, uvloop);
/// wheels have no URLs in the lock and are locked as `pypi://`.
#[test]
fn poetry_main() {
    let wheels = select_wheels(&poetry(), &target("3.11")).unwrap();
    assert_eq!(
        filenames(&wheels),
        [
            "anyio-4.8.0-py3-none-any.whl",
            "fastapi-0.115.6-py3-none-any.whl",
            "httptools-0.6.4-cp311-cp311-manylinux_2_5_x86_64.manylinux1_x86_64.manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "idna-3.10-py3-none-any.whl",
            "sniffio-1.3.1-py3-none-any.whl",
            "starlette-0.41.3-py3-none-any.whl",
            "typing_extensions-4.12.2-py3-none-any.whl",
            "uvicorn-0.34.0-py3-none-any.whl",
            "uvloop-0.21.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        ]
    );
    assert_eq!(wheels[8].artifact.url, format!("pypi://uvloop/{}", wheels[8].filename));
    assert_eq!(wheels[8].artifact.integrity.to_string(), sha(&wheels[8].filename));
    assert_eq!(wheels[8].artifact.size, None);
    // 3.13 drops typing-extensions (`python_version < "3.13"`).
    let w13 = select_wheels(&poetry(), &target("3.13")).unwrap();
    assert!(!filenames(&w13).iter().any(|n| n.starts_with("typing_extensions")));
    assert!(filenames(&w13).contains(&"uvloop-0.21.0-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"));
}

/// Extras and groups of a poetry project, and their refusals.
#[test]
fn poetry_extras_groups_and_refusals() {
    let w = select_wheels(&poetry(), &with(target("3.11"), &["fast"], &["dev"])).unwrap();
    let names = filenames(&w);
    for n in [
        "orjson-3.10.12-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "pytest-8.3.4-py3-none-any.whl",
        "iniconfig-2.0.0-py3-none-any.whl",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("colorama")));
    let err = select_wheels(&poetry(), &with(target("3.11"), &[], &["tools"]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`internal-tool==0.3.0`") && err.contains("git repository"),
        "{err}"
    );
    let err = select_wheels(&poetry(), &target("3.10")).unwrap_err().to_string();
    assert!(err.contains(">=3.11,<4"), "poetry's ^3.11 as PEP 440: {err}");
    let pp = std::fs::read_to_string(fixture("poetry/pyproject.toml")).unwrap();
    let md5 = "[[package]]\nname = \"x\"\nversion = \"1.0\"\nfiles = [{file = \"x-1.0-py3-none-any.whl\", hash = \"md5:0123\"}]\n\n[metadata]\nlock-version = \"2.0\"\n";
    let err = parse_poetry_lock("poetry.lock", md5, "pyproject.toml", &pp)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("poetry.lock:2: package `x`") && err.contains("sha256"),
        "{err}"
    );
    let err = parse_poetry_lock(
        "poetry.lock",
        "[metadata]\nlock-version = \"1.0\"\n",
        "pyproject.toml",
        &pp,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("lock-version 1.0"), "{err}");
}

/// pylock.toml: package markers with `extras` and `dependency_groups`,
/// per-package `requires-python`, an index (`pypi://`) and a direct wheel
/// URL (kept); 3.11 and 3.13 differ.
#[test]
fn pylock_markers() {
    let w = select_wheels(&pylock(), &target("3.11")).unwrap();
    assert_eq!(
        filenames(&w),
        [
            "anyio-4.8.0-py3-none-any.whl",
            "direct_wheel-1.0-py3-none-any.whl",
            "pydantic_core-2.27.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "typing_extensions-4.12.2-py3-none-any.whl",
            "uvloop-0.21.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        ]
    );
    assert_eq!(
        w[1].artifact.url,
        "https://downloads.example.invalid/wheels/direct_wheel-1.0-py3-none-any.whl"
    );
    assert_eq!(w[1].artifact.size, Some(2048));
    assert_eq!(w[0].artifact.url, "pypi://anyio/anyio-4.8.0-py3-none-any.whl");
    let w13 = select_wheels(&pylock(), &target("3.13")).unwrap();
    assert_eq!(
        filenames(&w13),
        [
            "anyio-4.8.0-py3-none-any.whl",
            "direct_wheel-1.0-py3-none-any.whl",
            "pydantic_core-2.27.2-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
            "uvloop-0.21.0-cp313-cp313-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        ]
    );
    let all = select_wheels(&pylock(), &with(target("3.11"), &["fast"], &["dev"])).unwrap();
    let names = filenames(&all);
    assert!(names.contains(&"pytest-8.3.4-py3-none-any.whl"));
    assert!(names.iter().any(|n| n.starts_with("orjson-3.10.12-cp311")));
    assert_eq!(names.len(), 7);
}

/// pylock.toml refusals: another environment, vcs and local-path sources, an
/// unknown lock-version, a malformed marker with its line.
#[test]
fn pylock_refusals() {
    let win = "lock-version = \"1.0\"\nenvironments = [\"sys_platform == 'win32'\"]\n";
    let err = select_wheels(&parse_pylock("pylock.toml", win).unwrap(), &target("3.11"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sys_platform == 'win32'") && err.contains("Linux x86_64"),
        "{err}"
    );
    let vcs = "lock-version = \"1.0\"\n\n[[packages]]\nname = \"tool\"\nversion = \"0.3\"\nvcs = { type = \"git\", url = \"https://git.example.invalid/tool.git\", commit-id = \"abc\" }\n";
    let err = select_wheels(&parse_pylock("pylock.toml", vcs).unwrap(), &target("3.11"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("pylock.toml:4: package `tool==0.3`") && err.contains("version control"),
        "{err}"
    );
    let path = format!(
        "lock-version = \"1.0\"\n\n[[packages]]\nname = \"local\"\nversion = \"1\"\nwheels = [{{ path = \"dist/local-1-py3-none-any.whl\", hashes = {{ sha256 = \"{}\" }} }}]\n",
        hex::encode([0u8; 32])
    );
    let err = select_wheels(&parse_pylock("pylock.toml", &path).unwrap(), &target("3.11"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("local wheel file") && err.contains("dist/local-1"),
        "{err}"
    );
    let err = parse_pylock("pylock.toml", "lock-version = \"2.0\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("lock-version 2.0"), "{err}");
    let bad = "lock-version = \"1.0\"\n\n[[packages]]\nname = \"x\"\nmarker = \"python_version >=\"\n";
    let err = parse_pylock("pylock.toml", bad).unwrap_err().to_string();
    assert!(err.starts_with("pylock.toml:4: package `x`: marker"), "{err}");
}
