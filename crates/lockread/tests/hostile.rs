//! Hostile lockfiles: install paths that escape node_modules or the
//! project, names that are not package names, links and bins pointing
//! outside, URLs carrying credentials, wheels that claim another project.
//! Each is refused with an error naming the entry, and no secret appears
//! in the message.

use farm_lockread::js::workspace::{member_dirs, Manifest, Patterns};
use farm_lockread::js::{parse_bun_lock, parse_package_lock, parse_pnpm_lock, parse_yarn_berry, parse_yarn_classic};
use farm_lockread::py::{parse_poetry_lock, parse_pylock, parse_uv_lock};

const R: &str = "https://npm.example.invalid/";
const SRI: &str = "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==";
const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn npm(key: &str, entry: &str) -> String {
    let err = parse_package_lock(
        "package-lock.json",
        &format!(r#"{{"lockfileVersion":3,"packages":{{"":{{}},"{key}":{entry}}}}}"#),
        R,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains(&format!("entry `{key}`")), "{err}");
    err
}

/// package-lock.json keys and fields that would write outside node_modules.
#[test]
fn npm_paths_names_links_and_bins() {
    let ok = format!(r#"{{"version":"1.0.0","integrity":"{SRI}"}}"#);
    for key in [
        "node_modules/../../etc/cron.d/x",
        "/srv/node_modules/x",
        "node_modules/x/..",
        "node_modules/Bad Name",
    ] {
        npm(key, &ok);
    }
    let err = npm("node_modules/x", r#"{"resolved":"../../outside","link":true}"#);
    assert!(err.contains("outside the project"), "{err}");
    let err = npm("node_modules/x", r#"{"resolved":"/etc","link":true}"#);
    assert!(err.contains("outside the project"), "{err}");
    let err = npm(
        "node_modules/x",
        &format!(r#"{{"name":"../evil","version":"1.0.0","integrity":"{SRI}"}}"#),
    );
    assert!(err.contains("not a valid npm package name"), "{err}");
    let err = npm(
        "node_modules/x",
        &format!(r#"{{"version":"1.0.0/../../x","integrity":"{SRI}"}}"#),
    );
    assert!(err.contains("not a package version"), "{err}");
    let err = npm(
        "node_modules/x",
        &format!(r#"{{"version":"1.0.0","integrity":"{SRI}","bin":{{"x":"../../../bin/sh"}}}}"#),
    );
    assert!(err.contains("outside the package"), "{err}");
    let err = npm(
        "node_modules/x",
        &format!(r#"{{"version":"1.0.0","integrity":"{SRI}","bin":{{"../x":"cli.js"}}}}"#),
    );
    assert!(err.contains("not a single file name"), "{err}");
    // A workspace member directory key must stay inside the project too.
    let err = parse_package_lock(
        "p",
        r#"{"lockfileVersion":3,"packages":{"../outside":{"name":"x"}}}"#,
        R,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("entry `../outside`") && err.contains("inside the project"),
        "{err}"
    );
}

/// Credentials in a lockfile's URLs are refused, and shown redacted.
#[test]
fn credentials_are_refused_and_redacted() {
    let err = npm(
        "node_modules/x",
        &format!(
            r#"{{"version":"1.0.0","resolved":"https://ci:s3cr3t@registry.example.invalid/x/-/x-1.0.0.tgz","integrity":"{SRI}"}}"#
        ),
    );
    assert!(
        err.contains("ci:***@") && err.contains("credentials") && !err.contains("s3cr3t"),
        "{err}"
    );

    let pnpm = format!("lockfileVersion: '9.0'\nimporters:\n  .:\n    dependencies:\n      x:\n        specifier: ^1\n        version: 1.0.0\npackages:\n  x@1.0.0:\n    resolution: {{integrity: {SRI}, tarball: 'https://builds.example.invalid/x.tgz?access_token=s3cr3t'}}\nsnapshots:\n  x@1.0.0: {{}}\n");
    let err = parse_pnpm_lock("pnpm-lock.yaml", &pnpm, R).unwrap_err().to_string();
    assert!(err.contains("access_token=***") && !err.contains("s3cr3t"), "{err}");

    let yarn = format!("# yarn lockfile v1\n\nx@^1:\n  version \"1.0.0\"\n  resolved \"https://tok3n@registry.example.invalid/x/-/x-1.0.0.tgz\"\n  integrity {SRI}\n");
    let manifests = [Manifest {
        dir: String::new(),
        file: "package.json".into(),
        name: Some("app".into()),
        json: serde_json::json!({"dependencies": {"x": "^1"}}),
    }];
    let err = parse_yarn_classic("yarn.lock", &yarn, R, &manifests)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("yarn.lock:5:") && err.contains("***@") && !err.contains("tok3n"),
        "{err}"
    );

    let berry = "__metadata:\n  version: 8\n  cacheKey: 10c0\n\n\"a@workspace:.\":\n  version: 0.0.0-use.local\n  resolution: \"a@workspace:.\"\n  dependencies:\n    x: \"npm:^1\"\n  languageName: unknown\n  linkType: soft\n\n\"x@npm:^1\":\n  version: 1.0.0\n  resolution: \"x@npm:1.0.0::__archiveUrl=https%3A%2F%2Fu%3As3cr3t%40builds.example.invalid%2Fx.tgz\"\n  languageName: node\n  linkType: hard\n";
    let err = parse_yarn_berry("yarn.lock", berry, R).unwrap_err().to_string();
    assert!(err.contains("u:***@") && !err.contains("s3cr3t"), "{err}");

    let bun = format!("{{\"lockfileVersion\": 1, \"packages\": {{\"x\": [\"x@1.0.0\", \"https://u:s3cr3t@registry.example.invalid/\", {{}}, \"{SRI}\"]}}}}");
    let err = parse_bun_lock("bun.lock", &bun, R).unwrap_err().to_string();
    assert!(err.contains("u:***@") && !err.contains("s3cr3t"), "{err}");

    let uv = format!("version = 1\n\n[[package]]\nname = \"x\"\nversion = \"1.0\"\nsource = {{ registry = \"https://pypi.example.invalid/simple\" }}\nwheels = [{{ url = \"https://files.example.invalid/x-1.0-py3-none-any.whl?X-Amz-Signature=s3cr3t\", hash = \"sha256:{SHA}\" }}]\n");
    let err = parse_uv_lock("uv.lock", &uv).unwrap_err().to_string();
    assert!(
        err.starts_with("uv.lock:4: package `x`") && err.contains("X-Amz-Signature=***") && !err.contains("s3cr3t"),
        "{err}"
    );

    let pylock = format!("lock-version = \"1.0\"\n\n[[packages]]\nname = \"x\"\nversion = \"1.0\"\nwheels = [{{ url = \"https://u:s3cr3t@downloads.example.invalid/x-1.0-py3-none-any.whl\", hashes = {{ sha256 = \"{SHA}\" }} }}]\n");
    let err = parse_pylock("pylock.toml", &pylock).unwrap_err().to_string();
    assert!(err.contains("u:***@") && !err.contains("s3cr3t"), "{err}");
}

/// pnpm's `.pnpm` directory of a package comes from the lock's key, peer
/// suffix included: a key whose suffix holds `/..` parts still names one
/// directory inside `.pnpm` (slashes become `+`), and every install path
/// and link stays below `node_modules`.
#[test]
fn pnpm_keys_cannot_climb_out_of_dot_pnpm() {
    let lock = format!(
        "lockfileVersion: '9.0'\nimporters:\n  .:\n    dependencies:\n      x:\n        specifier: ^1\n        version: 1.0.0(../../../../etc)\npackages:\n  x@1.0.0:\n    resolution: {{integrity: {SRI}}}\nsnapshots:\n  x@1.0.0(../../../../etc): {{}}\n"
    );
    let i = parse_pnpm_lock("pnpm-lock.yaml", &lock, R).unwrap();
    let paths: Vec<&str> = i.packages.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["node_modules/.pnpm/x@1.0.0_..+..+..+..+etc/node_modules/x"]);
    for l in &i.tree_links {
        for p in [&l.path, &l.target] {
            assert!(
                p.starts_with("node_modules/") && !p.split('/').any(|c| c == ".." || c.is_empty()),
                "{l:?}"
            );
        }
    }
}

/// pnpm, Berry and bun paths that leave the project.
#[test]
fn graph_lock_paths_stay_inside() {
    let link = "lockfileVersion: '9.0'\nimporters:\n  apps/web:\n    dependencies:\n      ui:\n        specifier: workspace:*\n        version: link:../../../etc\n";
    let err = parse_pnpm_lock("pnpm-lock.yaml", link, R).unwrap_err().to_string();
    assert!(err.contains("outside the project"), "{err}");
    let importer = "lockfileVersion: '9.0'\nimporters:\n  ../outside:\n    dependencies: {}\n";
    let err = parse_pnpm_lock("pnpm-lock.yaml", importer, R).unwrap_err().to_string();
    assert!(err.contains("importer `../outside`"), "{err}");
    let alias = "lockfileVersion: '9.0'\nimporters:\n  .:\n    dependencies:\n      ../evil:\n        specifier: ^1\n        version: 1.0.0\n";
    let err = parse_pnpm_lock("pnpm-lock.yaml", alias, R).unwrap_err().to_string();
    assert!(err.contains("not a valid npm package name"), "{err}");

    let berry = "__metadata:\n  version: 8\n  cacheKey: 10c0\n\n\"evil@workspace:../outside\":\n  version: 0.0.0-use.local\n  resolution: \"evil@workspace:../outside\"\n  languageName: unknown\n  linkType: soft\n";
    let err = parse_yarn_berry("yarn.lock", berry, R).unwrap_err().to_string();
    assert!(err.contains("outside the project"), "{err}");

    for (key, entry, what) in [
        (
            "../evil",
            format!(r#"["x@1.0.0", "", {{}}, "{SRI}"]"#),
            "valid npm package names",
        ),
        ("x", r#"["x@workspace:../../etc"]"#.to_string(), "outside the project"),
        (
            "x",
            format!(r#"["../x@1.0.0", "", {{}}, "{SRI}"]"#),
            "valid npm package name",
        ),
    ] {
        let bun = format!("{{\"lockfileVersion\": 1, \"packages\": {{\"{key}\": {entry}}}}}");
        let err = parse_bun_lock("bun.lock", &bun, R).unwrap_err().to_string();
        assert!(err.contains(what), "{key}: {err}");
    }
}

/// Wheels must belong to their package and names must be project names.
#[test]
fn python_names_and_wheels() {
    let uv = |name: &str, file: &str| {
        format!("version = 1\n\n[[package]]\nname = \"{name}\"\nversion = \"1.0\"\nsource = {{ registry = \"https://pypi.example.invalid/simple\" }}\nwheels = [{{ url = \"https://files.example.invalid/{file}\", hash = \"sha256:{SHA}\" }}]\n")
    };
    let err = parse_uv_lock("uv.lock", &uv("requests", "evil-1.0-py3-none-any.whl"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("package `requests`") && err.contains("a file of `evil`"),
        "{err}"
    );
    let err = parse_uv_lock("uv.lock", &uv("../x", "x-1.0-py3-none-any.whl"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a valid Python project name"), "{err}");
    let member = "version = 1\n[manifest]\nmembers = [\"b\"]\n\n[[package]]\nname = \"b\"\nversion = \"1\"\nsource = { editable = \"../../b\" }\n";
    let err = parse_uv_lock("uv.lock", member).unwrap_err().to_string();
    assert!(err.contains("outside the project"), "{err}");
    let poetry = format!("[[package]]\nname = \"x\"\nversion = \"1.0\"\nfiles = [{{file = \"../x-1.0-py3-none-any.whl\", hash = \"sha256:{SHA}\"}}]\n\n[metadata]\nlock-version = \"2.0\"\n");
    let err = parse_poetry_lock(
        "poetry.lock",
        &poetry,
        "pyproject.toml",
        "[tool.poetry]\nname = \"a\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a wheel file name"), "{err}");
}

/// Workspace member discovery does not follow a symlink out of the project.
#[test]
fn member_discovery_ignores_symlinks() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("package.json"), r#"{"name":"evil"}"#).unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("packages/ui")).unwrap();
    std::fs::write(root.path().join("packages/ui/package.json"), r#"{"name":"ui"}"#).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.path().join("packages/evil")).unwrap();
    let patterns = Patterns::new(&["packages/*".to_string()]).unwrap();
    assert_eq!(member_dirs(root.path(), &patterns).unwrap(), ["packages/ui"]);
}
