//! Locking must not run a package's code on this machine. A requirements
//! line naming a local directory makes pip run its `setup.py`; a VCS line
//! makes pip run `git`. Both are refused before pip starts: each attack
//! below is first shown to be live (pip itself runs the code), then made
//! through farm, which must refuse it with the file and line and leave no
//! trace of the code having run.

use std::ffi::OsString;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Output};

use farm_lockfiles::pypi::{self, HostPython, PipInvocation, PipRunner, PythonTarget};

/// The host runner with a `PATH` whose first directory holds a fake `git`,
/// as a user's own `PATH` might.
struct FakeGitFirst {
    host: HostPython,
    path: OsString,
}

impl PipRunner for FakeGitFirst {
    fn describe(&self) -> String {
        self.host.describe()
    }

    fn run<'a>(
        &'a self,
        invocation: &'a PipInvocation,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Output>> + Send + 'a>> {
        Box::pin(async move {
            let mut inv = invocation.clone();
            inv.env.push(("PATH".into(), self.path.clone()));
            self.host.run(&inv).await
        })
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

/// A fake `git` in `bin` that records each run in `marker`, and the PATH
/// that finds it first.
fn fake_git(bin: &Path, marker: &Path) -> OsString {
    std::fs::create_dir_all(bin).unwrap();
    let git = bin.join("git");
    std::fs::write(
        &git,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 1\n", marker.display()),
    )
    .unwrap();
    std::fs::set_permissions(&git, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut path = OsString::from(bin);
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    path
}

/// A project directory `pkg` whose setup.py writes `marker` when run.
fn evil_package(project: &Path, marker: &Path) -> PathBuf {
    let pkg = project.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        pkg.join("setup.py"),
        format!(
            "open({:?}, 'w').write('setup.py ran')\nfrom setuptools import setup\nsetup(name='evil', version='1.0')\n",
            marker.display().to_string()
        ),
    )
    .unwrap();
    pkg
}

/// Proves a local directory and a VCS URL in requirements.txt (also
/// through `-r` and as an editable install) are refused naming
/// `requirements.txt:LINE:`, and that neither setup.py nor git ran — while
/// pip itself, given the same lines, runs both.
#[tokio::test]
async fn local_directories_and_vcs_lines_are_refused_before_any_code_runs() {
    if !has_pip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("api");
    let setup_marker = dir.path().join("setup-py-ran");
    let git_marker = dir.path().join("git-ran");
    evil_package(&project, &setup_marker);
    let path = fake_git(&dir.path().join("bin"), &git_marker);

    // The attacks are live: pip runs setup.py of a local directory, and git for a VCS line.
    let pip = |line: &str| {
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--isolated",
                "--dry-run",
                "--no-deps",
                "--no-build-isolation",
            ])
            .args(["--no-index", "--quiet", "--target"])
            .arg(dir.path().join("pip-target"))
            .arg(line)
            .current_dir(&project)
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    pip("./pkg");
    assert!(setup_marker.exists(), "control: pip must run setup.py of ./pkg here");
    std::fs::remove_file(&setup_marker).unwrap();
    pip("git+https://127.0.0.1:9/x.git#egg=x");
    assert!(git_marker.exists(), "control: pip must run the fake git here");
    std::fs::remove_file(&git_marker).unwrap();

    let runner = FakeGitFirst {
        host: HostPython {
            python: "python3".into(),
        },
        path,
    };
    let target = PythonTarget::new("3.11", None).unwrap();
    let pkg = project.join("pkg").display().to_string();
    let cases: Vec<(String, &str, &str)> = vec![
        ("./pkg".into(), "requirements.txt:2: a local path", "./pkg"),
        (pkg.clone(), "requirements.txt:2: a local path", &pkg),
        ("file:pkg".into(), "requirements.txt:2: a URL", "file:pkg"),
        ("-e ./pkg".into(), "requirements.txt:2: an editable install", "-e ./pkg"),
        (
            "git+https://127.0.0.1:9/x.git#egg=x".into(),
            "requirements.txt:2: a VCS URL",
            "git+https://127.0.0.1:9/x.git#egg=x",
        ),
        (
            "x @ git+https://127.0.0.1:9/x.git".into(),
            "requirements.txt:2: a VCS URL",
            "x @ git+https://127.0.0.1:9/x.git",
        ),
        (
            "-r nested.txt".into(),
            "nested.txt:1: a VCS URL",
            "git+https://127.0.0.1:9/y.git#egg=y",
        ),
    ];
    std::fs::write(project.join("nested.txt"), "git+https://127.0.0.1:9/y.git#egg=y\n").unwrap();
    for (line, want, text) in cases {
        let req = project.join("requirements.txt");
        std::fs::write(&req, format!("anyio==4.8.0\n{line}\n")).unwrap();
        let err = pypi::resolve_requirements_with(&req, &project, "http://127.0.0.1:9/simple", &target, &runner)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(want), "{line}: {err}");
        assert!(err.contains(&format!("`{text}`")), "{line}: the offending text: {err}");
        assert!(err.contains("\nhint: "), "{line}: {err}");
        assert!(!setup_marker.exists(), "{line}: setup.py ran");
        assert!(!git_marker.exists(), "{line}: git ran");
    }
    assert!(
        !dir.path().join("pip-target").join("evil").exists(),
        "nothing was installed"
    );
}
