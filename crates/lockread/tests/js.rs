//! The JS lockfile readers against fixture lockfiles of each format and
//! version: exact install paths, URLs, integrities, links and bins; the
//! hoisted layout of graph-based locks; workspace detection; registry
//! pinning for what a lock does not record; and every refusal.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use farm_lockread::js::workspace::yarn_manifests;
use farm_lockread::js::{
    detect_js_lock, parse_bun_lock, parse_package_lock, parse_pnpm_lock, parse_pnpm_lock_with, parse_yarn_berry,
    parse_yarn_classic, parse_yarn_classic_syntax, read_js_lock, JsBinDir, JsInstall, JsLink, JsLockKind, PnpmLayout,
};
use farm_testkit::{HttpServer, Reply};
use sha2::Digest;

const R: &str = "https://npm.example.invalid/repo/";

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// The SRI string the fixture generator wrote for `what`.
fn sri(what: &str) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(what.as_bytes()))
    )
}

fn url(name: &str, version: &str) -> String {
    let base = name.rsplit('/').next().unwrap();
    format!("https://npm.example.invalid/repo/{name}/-/{base}-{version}.tgz")
}

/// `(path, name, version)` of every package, in order.
fn layout(i: &JsInstall) -> Vec<(String, String, String)> {
    i.packages
        .iter()
        .map(|p| (p.path.clone(), p.artifact.name.clone(), p.artifact.version.clone()))
        .collect()
}

fn row(path: &str, name: &str, version: &str) -> (String, String, String) {
    (path.into(), name.into(), version.into())
}

fn link(path: &str, target: &str) -> JsLink {
    JsLink {
        path: path.into(),
        target: target.into(),
    }
}

fn text(rel: &str) -> String {
    std::fs::read_to_string(fixture(rel)).unwrap()
}

/// package-lock.json v3 of an npm workspace: member-nested installs keep
/// their `apps/web/node_modules/…` path, members are links with their
/// project-relative target, foreign-platform optionals (and what is nested
/// in them) are skipped, registry-shaped URLs move to the configured
/// registry while other tarball URLs stay, and bins come from the lock.
#[test]
fn npm_workspace_lock() {
    let loc = detect_js_lock(&fixture("npm-workspace/apps/web"), &fixture("npm-workspace"))
        .unwrap()
        .unwrap();
    assert_eq!(loc.kind, JsLockKind::Npm);
    assert_eq!(loc.lockfile, fixture("npm-workspace/package-lock.json"));
    assert_eq!(loc.member, "apps/web");
    let i = read_js_lock(&loc, R).unwrap();
    assert!(i.is_settled() && i.bins_recorded);
    assert_eq!(
        layout(&i),
        [
            row("apps/web/node_modules/react", "react", "19.0.0"),
            row("node_modules/@esbuild/linux-x64", "@esbuild/linux-x64", "0.21.5"),
            row("node_modules/@tanstack/router-cli", "@tanstack/router-cli", "1.87.0"),
            row("node_modules/esbuild", "esbuild", "0.21.5"),
            row("node_modules/js-tokens", "js-tokens", "4.0.0"),
            row("node_modules/loose-envify", "loose-envify", "1.4.0"),
            row("node_modules/react", "react", "18.3.1"),
            row("node_modules/tiny-tarball", "tiny-tarball", "1.0.0"),
            row("node_modules/vite", "vite", "5.4.11"),
        ]
    );
    let by_path: BTreeMap<&str, _> = i.packages.iter().map(|p| (p.path.as_str(), &p.artifact)).collect();
    assert_eq!(by_path["apps/web/node_modules/react"].url, url("react", "19.0.0"));
    assert_eq!(
        by_path["node_modules/react"].url,
        url("react", "18.3.1"),
        "no `resolved`: derived"
    );
    assert_eq!(
        by_path["node_modules/vite"].url,
        url("vite", "5.4.11"),
        "another registry's URL is rebased"
    );
    assert_eq!(
        by_path["node_modules/tiny-tarball"].url, "https://cdn.example.invalid/builds/tiny-tarball-1.0.0.tgz",
        "a non-registry tarball URL stays as written"
    );
    assert_eq!(
        by_path["node_modules/@tanstack/router-cli"].integrity.to_sri(),
        sri("@tanstack/router-cli@1.87.0")
    );
    assert_eq!(
        i.links,
        [
            link("node_modules/@shop/ui", "packages/ui"),
            link("node_modules/web", "apps/web")
        ]
    );
    let bins: Vec<(&str, Vec<(&str, &str)>)> = i
        .bins
        .iter()
        .map(|(p, m)| (p.as_str(), m.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()))
        .collect();
    assert_eq!(
        bins,
        [
            ("node_modules/@tanstack/router-cli", vec![("tsr", "bin/tsr.cjs")]),
            ("node_modules/esbuild", vec![("esbuild", "bin/esbuild")]),
            ("node_modules/loose-envify", vec![("loose-envify", "cli.js")]),
            ("node_modules/vite", vec![("vite", "bin/vite.js")]),
        ]
    );
}

/// lockfileVersion 2 (with the legacy `dependencies` section beside
/// `packages`) reads like v3.
#[test]
fn npm_v2_lock() {
    let i = parse_package_lock("package-lock.json", &text("npm-v2/package-lock.json"), R).unwrap();
    assert_eq!(layout(&i), [row("node_modules/js-tokens", "js-tokens", "4.0.0")]);
    assert_eq!(i.packages[0].artifact.integrity.to_sri(), sri("js-tokens@4.0.0"));
}

/// Detection walks up from a nested frontend to the workspace root whose
/// globs include it, for every manager's workspace declaration, and stops
/// at a member the globs exclude.
#[test]
fn detection_finds_the_workspace_root_lock() {
    for (root, member, kind, lock) in [
        ("pnpm-v9", "apps/web", JsLockKind::Pnpm, "pnpm-lock.yaml"),
        ("yarn-classic", "packages/web", JsLockKind::YarnClassic, "yarn.lock"),
        ("yarn-berry", "packages/web", JsLockKind::YarnBerry, "yarn.lock"),
        ("bun", "apps/web", JsLockKind::Bun, "bun.lock"),
    ] {
        let loc = detect_js_lock(&fixture(root).join(member), &fixture(root))
            .unwrap()
            .unwrap();
        assert_eq!((loc.kind, loc.member.as_str()), (kind, member), "{root}");
        assert_eq!(loc.lockfile, fixture(root).join(lock));
        assert_eq!(loc.root, fixture(root));
    }
    // `!apps/legacy` excludes it from the workspace; it has no lock of its own.
    assert_eq!(
        detect_js_lock(&fixture("npm-workspace/apps/legacy"), &fixture("npm-workspace")).unwrap(),
        None
    );
    // A frontend that is its own project.
    let loc = detect_js_lock(&fixture("npm-v2"), &fixture("npm-v2")).unwrap().unwrap();
    assert_eq!((loc.kind, loc.member.as_str()), (JsLockKind::Npm, ""));
}

/// Ambiguous or unreadable lock situations are errors that say what to do.
#[test]
fn detection_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("package.json"), r#"{"name":"a"}"#).unwrap();
    std::fs::write(root.join("package-lock.json"), "{}").unwrap();
    std::fs::write(root.join("yarn.lock"), "# yarn lockfile v1\n").unwrap();
    let err = detect_js_lock(root, root).unwrap_err().to_string();
    assert!(
        err.contains("several lockfiles (package-lock.json, yarn.lock)") && err.contains("packageManager"),
        "{err}"
    );
    std::fs::write(
        root.join("package.json"),
        r#"{"name":"a","packageManager":"yarn@1.22.22"}"#,
    )
    .unwrap();
    let loc = detect_js_lock(root, root).unwrap().unwrap();
    assert_eq!(loc.kind, JsLockKind::YarnClassic);

    let bun = tempfile::tempdir().unwrap();
    std::fs::write(bun.path().join("bun.lockb"), [0u8, 1, 2]).unwrap();
    let err = detect_js_lock(bun.path(), bun.path()).unwrap_err().to_string();
    assert!(
        err.contains("bun.lockb") && err.contains("--save-text-lockfile"),
        "{err}"
    );

    let ws = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ws.path().join("web")).unwrap();
    std::fs::write(ws.path().join("package.json"), r#"{"workspaces":{"packages":["web"]}}"#).unwrap();
    let err = detect_js_lock(&ws.path().join("web"), ws.path())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("workspaces include `web`") && err.contains("no lockfile"),
        "{err}"
    );
}

const HOISTED: PnpmLayout = PnpmLayout {
    hoisted: true,
    hoist: true,
    shamefully_hoist: false,
};

/// pnpm-lock.yaml v9 of a workspace laid out as pnpm does by default: each
/// package once under `node_modules/.pnpm/<key>/node_modules/<name>` (peer
/// suffix and scope in pnpm's spelling), its dependencies as links beside
/// it, each importer's direct dependencies linked in its own node_modules
/// (aliases by their alias, the member link to the member), bins of direct
/// dependencies in the importer's `.bin`, the hidden hoist in
/// `.pnpm/node_modules`, and nothing transitive in an importer's
/// node_modules.
#[test]
fn pnpm_v9_workspace_is_isolated() {
    let i = parse_pnpm_lock("pnpm-lock.yaml", &text("pnpm-v9/pnpm-lock.yaml"), R).unwrap();
    let p = |k: &str, n: &str| format!("node_modules/.pnpm/{k}/node_modules/{n}");
    assert_eq!(
        layout(&i),
        [
            row(
                &p("@esbuild+linux-x64@0.21.5", "@esbuild/linux-x64"),
                "@esbuild/linux-x64",
                "0.21.5"
            ),
            row(&p("esbuild@0.21.5", "esbuild"), "esbuild", "0.21.5"),
            row(&p("js-tokens@4.0.0", "js-tokens"), "js-tokens", "4.0.0"),
            row(&p("loose-envify@1.4.0", "loose-envify"), "loose-envify", "1.4.0"),
            row(&p("react-dom@18.3.1_react@18.3.1", "react-dom"), "react-dom", "18.3.1"),
            row(&p("react@18.3.1", "react"), "react", "18.3.1"),
            row(&p("react@19.0.0", "react"), "react", "19.0.0"),
            row(&p("scheduler@0.23.2", "scheduler"), "scheduler", "0.23.2"),
            row(&p("string-width@4.2.3", "string-width"), "string-width", "4.2.3"),
            row(&p("typescript@5.6.3", "typescript"), "typescript", "5.6.3"),
        ]
    );
    assert_eq!(i.links, [link("apps/web/node_modules/@shop/ui", "packages/ui")]);
    let links: BTreeMap<&str, &str> = i
        .tree_links
        .iter()
        .map(|l| (l.path.as_str(), l.target.as_str()))
        .collect();
    assert_eq!(links["node_modules/typescript"], p("typescript@5.6.3", "typescript"));
    assert_eq!(
        links["apps/web/node_modules/react-dom"],
        p("react-dom@18.3.1_react@18.3.1", "react-dom")
    );
    assert_eq!(
        links["apps/web/node_modules/string-width-cjs"],
        p("string-width@4.2.3", "string-width")
    );
    assert_eq!(links["packages/ui/node_modules/react"], p("react@19.0.0", "react"));
    // Dependencies beside the package, peers included; the platform's optional only.
    assert_eq!(
        links["node_modules/.pnpm/react-dom@18.3.1_react@18.3.1/node_modules/react"],
        p("react@18.3.1", "react")
    );
    assert_eq!(
        links["node_modules/.pnpm/esbuild@0.21.5/node_modules/@esbuild/linux-x64"],
        p("@esbuild+linux-x64@0.21.5", "@esbuild/linux-x64")
    );
    assert!(!links.contains_key("node_modules/.pnpm/esbuild@0.21.5/node_modules/@esbuild/darwin-arm64"));
    // Strictness: transitive packages are reachable from no importer's node_modules.
    for transitive in ["loose-envify", "scheduler", "js-tokens"] {
        for importer in ["node_modules", "apps/web/node_modules", "packages/ui/node_modules"] {
            assert!(
                !links.contains_key(format!("{importer}/{transitive}").as_str()),
                "{importer}/{transitive}"
            );
        }
        assert!(links.contains_key(format!("node_modules/.pnpm/node_modules/{transitive}").as_str()));
    }
    assert_eq!(
        i.bin_dirs,
        [
            JsBinDir {
                dir: "apps/web/node_modules/.bin".into(),
                package: p("esbuild@0.21.5", "esbuild"),
            },
            JsBinDir {
                dir: "node_modules/.bin".into(),
                package: p("typescript@5.6.3", "typescript"),
            },
            JsBinDir {
                dir: format!("{}/node_modules/.bin", p("react-dom@18.3.1_react@18.3.1", "react-dom")),
                package: p("loose-envify@1.4.0", "loose-envify"),
            },
            JsBinDir {
                dir: format!("{}/node_modules/.bin", p("react@18.3.1", "react")),
                package: p("loose-envify@1.4.0", "loose-envify"),
            },
            JsBinDir {
                dir: format!("{}/node_modules/.bin", p("scheduler@0.23.2", "scheduler")),
                package: p("loose-envify@1.4.0", "loose-envify"),
            },
        ]
    );
}

/// The workspace's `.npmrc` chooses the layout: `node-linker=hoisted` gives
/// npm's, as pnpm does; `node-linker=pnp` is refused naming the file.
#[test]
fn pnpm_npmrc_chooses_the_layout() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pnpm-lock.yaml"), text("pnpm-v9/pnpm-lock.yaml")).unwrap();
    let lockfile = dir.path().join("pnpm-lock.yaml");
    let isolated = farm_lockread::js::read_js_lock_file(&lockfile, JsLockKind::Pnpm, R).unwrap();
    assert!(isolated
        .packages
        .iter()
        .all(|p| p.path.starts_with("node_modules/.pnpm/")));
    std::fs::write(
        dir.path().join(".npmrc"),
        "node-linker=hoisted
",
    )
    .unwrap();
    let hoisted = farm_lockread::js::read_js_lock_file(&lockfile, JsLockKind::Pnpm, R).unwrap();
    assert!(hoisted.packages.iter().any(|p| p.path == "node_modules/react"));
    assert!(hoisted.tree_links.is_empty() && hoisted.bin_dirs.is_empty());
    std::fs::write(
        dir.path().join(".npmrc"),
        "node-linker=pnp
",
    )
    .unwrap();
    let err = farm_lockread::js::read_js_lock_file(&lockfile, JsLockKind::Pnpm, R)
        .unwrap_err()
        .to_string();
    assert!(err.contains(".npmrc") && err.contains("pnp"), "{err}");
}

/// pnpm-lock.yaml v9 of a workspace: importers by directory, snapshots with
/// peer suffixes, an `npm:` alias, a `link:` to another member, a tarball
/// outside the registry and a foreign-platform optional; with
/// `node-linker=hoisted` laid out as npm hoists, with the member's
/// conflicting react nested in the member.
#[test]
fn pnpm_v9_workspace_is_hoisted() {
    let i = parse_pnpm_lock_with("pnpm-lock.yaml", &text("pnpm-v9/pnpm-lock.yaml"), R, HOISTED).unwrap();
    assert!(!i.bins_recorded && i.is_settled());
    assert_eq!(
        layout(&i),
        [
            row("node_modules/@esbuild/linux-x64", "@esbuild/linux-x64", "0.21.5"),
            row("node_modules/esbuild", "esbuild", "0.21.5"),
            row("node_modules/js-tokens", "js-tokens", "4.0.0"),
            row("node_modules/loose-envify", "loose-envify", "1.4.0"),
            row("node_modules/react", "react", "18.3.1"),
            row("node_modules/react-dom", "react-dom", "18.3.1"),
            row("node_modules/scheduler", "scheduler", "0.23.2"),
            row("node_modules/string-width-cjs", "string-width", "4.2.3"),
            row("node_modules/typescript", "typescript", "5.6.3"),
            row("packages/ui/node_modules/react", "react", "19.0.0"),
        ]
    );
    assert_eq!(i.links, [link("node_modules/@shop/ui", "packages/ui")]);
    let by_path: BTreeMap<&str, _> = i.packages.iter().map(|p| (p.path.as_str(), &p.artifact)).collect();
    assert_eq!(
        by_path["node_modules/string-width-cjs"].url,
        url("string-width", "4.2.3")
    );
    assert_eq!(
        by_path["node_modules/react-dom"].integrity.to_sri(),
        sri("react-dom@18.3.1")
    );
    assert_eq!(
        by_path["node_modules/typescript"].url,
        "https://builds.example.invalid/typescript/typescript-5.6.3-patched.tgz"
    );
}

/// pnpm-lock.yaml v6 of a single project (top-level importer, `/name@version`
/// keys): a direct js-tokens@3 keeps the root, so loose-envify's js-tokens@4
/// nests under it, while the `npm:` alias of js-tokens@4 sits at its own name.
#[test]
fn pnpm_v6_nests_conflicting_versions() {
    let i = parse_pnpm_lock_with("pnpm-lock.yaml", &text("pnpm-v6/pnpm-lock.yaml"), R, HOISTED).unwrap();
    assert_eq!(
        layout(&i),
        [
            row("node_modules/@vitejs/plugin-react", "@vitejs/plugin-react", "4.2.1"),
            row("node_modules/js-tokens", "js-tokens", "3.0.2"),
            row("node_modules/loose-envify", "loose-envify", "1.4.0"),
            row("node_modules/loose-envify/node_modules/js-tokens", "js-tokens", "4.0.0"),
            row("node_modules/react", "react", "18.2.0"),
            row("node_modules/react-dom", "react-dom", "18.2.0"),
            row("node_modules/scheduler", "scheduler", "0.23.0"),
            row("node_modules/tokens-next", "js-tokens", "4.0.0"),
        ]
    );
}

/// yarn.lock v1 with the workspace's package.json files: multi-descriptor
/// entries, an `npm:` alias, a member dependency resolved to the member,
/// every member linked at the root; optional packages whose platform yarn
/// does not record are listed as unknown.
#[test]
fn yarn_classic_workspace_is_hoisted() {
    let root = fixture("yarn-classic");
    let manifests = yarn_manifests(&root).unwrap();
    let dirs: Vec<&str> = manifests.iter().map(|m| m.dir.as_str()).collect();
    assert_eq!(dirs, ["", "packages/ui", "packages/web"]);
    let i = parse_yarn_classic("yarn.lock", &text("yarn-classic/yarn.lock"), R, &manifests).unwrap();
    assert_eq!(
        layout(&i),
        [
            row("node_modules/@esbuild/darwin-arm64", "@esbuild/darwin-arm64", "0.21.5"),
            row("node_modules/@esbuild/linux-x64", "@esbuild/linux-x64", "0.21.5"),
            row("node_modules/esbuild", "esbuild", "0.21.5"),
            row("node_modules/js-tokens", "js-tokens", "3.0.2"),
            row("node_modules/loose-envify", "loose-envify", "1.4.0"),
            row("node_modules/loose-envify/node_modules/js-tokens", "js-tokens", "4.0.0"),
            row("node_modules/react", "react", "18.3.1"),
            row("node_modules/string-width-cjs", "string-width", "4.2.3"),
            row("node_modules/typescript", "typescript", "5.6.3"),
        ]
    );
    assert_eq!(
        i.platform_unknown,
        ["node_modules/@esbuild/darwin-arm64", "node_modules/@esbuild/linux-x64"]
    );
    assert_eq!(
        i.links,
        [
            link("node_modules/ui", "packages/ui"),
            link("node_modules/web", "packages/web")
        ]
    );
    // The `#sha1` fragment is dropped and the registry is the configured one.
    assert!(i
        .packages
        .iter()
        .all(|p| p.artifact.url == url(&p.artifact.name, &p.artifact.version)));
    assert_eq!(i.packages[6].artifact.integrity.to_sri(), sri("react@18.3.1"));
}

/// The yarn v1 text format: quoted and bare keys, nested blocks, comments.
#[test]
fn yarn_classic_syntax() {
    let entries = parse_yarn_classic_syntax(
        "yarn.lock",
        "# yarn lockfile v1\n\n\"a@^1\", a@~1.2:\n  version \"1.2.3\"\n  # note\n  dependencies:\n    \"@s/b\" \"^2 || ^3\"\n    c 1.0.0\n\nd@npm:e@1:\n  version \"1.0.0\"\n",
    )
    .unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].keys, ["a@^1", "a@~1.2"]);
    assert_eq!(entries[0].line, 3);
    let deps = match &entries[0].fields["dependencies"] {
        farm_lockread::js::YarnValue::Map(m, line) => {
            assert_eq!(*line, 6);
            m
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(deps["@s/b"].as_str(), Some("^2 || ^3"));
    assert_eq!(deps["c"].as_str(), Some("1.0.0"));
    assert_eq!(entries[1].keys, ["d@npm:e@1"]);
}

/// A version document server for `/repo/<name>/<version>`.
fn registry(docs: Vec<(&str, &str, &str)>) -> HttpServer {
    let docs: BTreeMap<String, String> = docs
        .into_iter()
        .map(|(name, version, extra)| {
            (
                format!("/repo/{}/{version}", name.replace('/', "%2f")),
                format!(
                    r#"{{"name":"{name}","version":"{version}","dist":{{"integrity":"{}","tarball":"x"}}{extra}}}"#,
                    sri(&format!("registry:{name}@{version}"))
                ),
            )
        })
        .collect();
    HttpServer::start(move |path, _| match docs.get(&path.replace("%2F", "%2f")) {
        Some(body) => Reply::Ok(body.clone().into_bytes()),
        None => Reply::Status(404),
    })
}

/// yarn Berry: `npm:` entries, a built-in compatibility `patch:` of
/// typescript read as the package itself, `conditions` skipping another
/// platform, workspaces as importers and links, bins from the lock. Berry's
/// checksum is of its zip cache, so every package is unpinned until the
/// registry's `dist.integrity` pins it.
#[tokio::test]
async fn yarn_berry_is_pinned_from_the_registry() {
    let server = registry(vec![
        ("@esbuild/linux-x64", "0.21.5", r#","os":["linux"],"cpu":["x64"]"#),
        ("esbuild", "0.21.5", ""),
        ("js-tokens", "4.0.0", ""),
        ("loose-envify", "1.4.0", ""),
        ("react", "18.3.1", ""),
        ("typescript", "5.6.3", ""),
    ]);
    let reg = format!("{}/repo/", server.url);
    let mut i = parse_yarn_berry("yarn.lock", &text("yarn-berry/yarn.lock"), &reg).unwrap();
    assert!(i.packages.is_empty() && !i.is_settled());
    let paths: Vec<&str> = i.unpinned.iter().map(|u| u.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "node_modules/@esbuild/linux-x64",
            "node_modules/esbuild",
            "node_modules/js-tokens",
            "node_modules/loose-envify",
            "node_modules/react",
            "node_modules/typescript",
        ]
    );
    assert_eq!(i.links, [link("node_modules/web", "packages/web")]);
    assert_eq!(i.bins["node_modules/typescript"]["tsc"], "bin/tsc");
    let client = farm_lockfiles::http::Client::new(farm_lockfiles::http::ClientOptions::default());
    i.pin_from_registry(&client, &reg).await.unwrap();
    assert!(i.is_settled() && i.unpinned.is_empty());
    assert_eq!(i.packages.len(), 6);
    let ts = i.packages.iter().find(|p| p.path == "node_modules/typescript").unwrap();
    assert_eq!(ts.artifact.integrity.to_sri(), sri("registry:typescript@5.6.3"));
    assert_eq!(
        ts.artifact.url,
        format!("{}/repo/typescript/-/typescript-5.6.3.tgz", server.url)
    );
}

/// yarn.lock v1 does not record platforms: the registry's version
/// document says `@esbuild/darwin-arm64` is for darwin, so it is dropped.
#[tokio::test]
async fn yarn_classic_optional_platforms_come_from_the_registry() {
    let server = registry(vec![
        ("@esbuild/darwin-arm64", "0.21.5", r#","os":["darwin"],"cpu":["arm64"]"#),
        ("@esbuild/linux-x64", "0.21.5", r#","os":["linux"],"cpu":["x64"]"#),
    ]);
    let reg = format!("{}/repo/", server.url);
    let root = fixture("yarn-classic");
    let mut i = parse_yarn_classic(
        "yarn.lock",
        &text("yarn-classic/yarn.lock"),
        &reg,
        &yarn_manifests(&root).unwrap(),
    )
    .unwrap();
    let client = farm_lockfiles::http::Client::new(farm_lockfiles::http::ClientOptions::default());
    i.pin_from_registry(&client, &reg).await.unwrap();
    assert!(i.is_settled());
    let paths: Vec<&str> = i.packages.iter().map(|p| p.path.as_str()).collect();
    assert!(!paths.contains(&"node_modules/@esbuild/darwin-arm64"), "{paths:?}");
    assert!(paths.contains(&"node_modules/@esbuild/linux-x64"));
    assert_eq!(paths.len(), 8);
    // The lock's own integrity stays: the registry was asked about the platform only.
    assert_eq!(
        i.packages[0].artifact.integrity.to_sri(),
        sri("@esbuild/linux-x64@0.21.5")
    );
}

/// A registry that does not know a package, or serves no sha512, fails the
/// pinning with the package named.
#[tokio::test]
async fn registry_pinning_errors_name_the_package() {
    let server = HttpServer::start(|path, _| {
        if path.contains("react") {
            Reply::Ok(br#"{"version":"18.3.1","dist":{"shasum":"abc"}}"#.to_vec())
        } else {
            Reply::Status(404)
        }
    });
    let reg = format!("{}/repo/", server.url);
    let lock = "__metadata:\n  version: 8\n  cacheKey: 10c0\n\n\"a@workspace:.\":\n  version: 0.0.0-use.local\n  resolution: \"a@workspace:.\"\n  dependencies:\n    react: \"npm:^18.3.1\"\n  languageName: unknown\n  linkType: soft\n\n\"react@npm:^18.3.1\":\n  version: 18.3.1\n  resolution: \"react@npm:18.3.1\"\n  checksum: 10c0/00\n  languageName: node\n  linkType: hard\n";
    let client = farm_lockfiles::http::Client::new(farm_lockfiles::http::ClientOptions::default());
    let mut i = parse_yarn_berry("yarn.lock", lock, &reg).unwrap();
    let err = i.pin_from_registry(&client, &reg).await.unwrap_err().to_string();
    assert!(
        err.contains("react@18.3.1") && err.contains("dist.integrity") && err.contains("missing"),
        "{err}"
    );
    let mut i = parse_yarn_berry(
        "yarn.lock",
        &lock.replace("react", "left-pad").replace("18.3.1", "1.3.0"),
        &reg,
    )
    .unwrap();
    let err = i.pin_from_registry(&client, &reg).await.unwrap_err().to_string();
    assert!(err.contains("left-pad@1.3.0") && err.contains("404"), "{err}");
}

/// yarn 3 (`__metadata.version: 6`) writes dependency ranges without `npm:`.
#[test]
fn yarn_berry_v6_ranges_without_protocol() {
    let lock = "__metadata:\n  version: 6\n  cacheKey: 8\n\n\"app@workspace:.\":\n  version: 0.0.0-use.local\n  resolution: \"app@workspace:.\"\n  dependencies:\n    js-tokens: ^4.0.0\n  languageName: unknown\n  linkType: soft\n\n\"js-tokens@npm:^4.0.0\":\n  version: 4.0.0\n  resolution: \"js-tokens@npm:4.0.0\"\n  checksum: 0123abcd\n  languageName: node\n  linkType: hard\n";
    let i = parse_yarn_berry("yarn.lock", lock, R).unwrap();
    assert_eq!(i.unpinned.len(), 1);
    assert_eq!(i.unpinned[0].path, "node_modules/js-tokens");
    assert_eq!(i.unpinned[0].url, url("js-tokens", "4.0.0"));
}

/// bun.lock: keys are the layout (nested keys and keys under a workspace's
/// name), workspaces are links, `os`/`cpu` skip another platform, the
/// registry item may be a full tarball URL, bins come from the lock.
#[test]
fn bun_lock_keys_are_the_layout() {
    let i = parse_bun_lock("bun.lock", &text("bun/bun.lock"), R).unwrap();
    assert!(i.is_settled() && i.bins_recorded);
    assert_eq!(
        layout(&i),
        [
            row("node_modules/@esbuild/linux-x64", "@esbuild/linux-x64", "0.21.5"),
            row("node_modules/esbuild", "esbuild", "0.21.5"),
            row("node_modules/esbuild/node_modules/js-tokens", "js-tokens", "3.0.2"),
            row("node_modules/js-tokens", "js-tokens", "4.0.0"),
            row("node_modules/loose-envify", "loose-envify", "1.4.0"),
            row("node_modules/react", "react", "18.3.1"),
            row("node_modules/typescript", "typescript", "5.6.3"),
            row("packages/ui/node_modules/react", "react", "19.0.0"),
        ]
    );
    assert_eq!(
        i.links,
        [
            link("node_modules/ui", "packages/ui"),
            link("node_modules/web", "apps/web")
        ]
    );
    assert!(i
        .packages
        .iter()
        .all(|p| p.artifact.url == url(&p.artifact.name, &p.artifact.version)));
    assert_eq!(i.packages[7].artifact.integrity.to_sri(), sri("react@19.0.0"));
    assert_eq!(i.bins["node_modules/typescript"]["tsserver"], "bin/tsserver");
}

fn lock_err(r: Result<JsInstall, farm_lockread::LockReadError>) -> String {
    r.unwrap_err().to_string()
}

/// package-lock.json refusals: git and file sources, no integrity, v1.
#[test]
fn npm_refusals() {
    let lock =
        |entry: &str| format!(r#"{{"name":"a","lockfileVersion":3,"packages":{{"":{{}},"node_modules/x":{entry}}}}}"#);
    let git = lock(&format!(
        r#"{{"version":"1.0.0","resolved":"git+ssh://git@git.example.invalid/x.git#abc","integrity":"{}"}}"#,
        sri("x")
    ));
    let err = lock_err(parse_package_lock("web/package-lock.json", &git, R));
    assert!(
        err.contains("web/package-lock.json: entry `node_modules/x`") && err.contains("not a registry tarball"),
        "{err}"
    );
    let file = lock(&format!(
        r#"{{"version":"1.0.0","resolved":"file:../x","integrity":"{}"}}"#,
        sri("x")
    ));
    assert!(lock_err(parse_package_lock("p", &file, R)).contains("file:../x"));
    let err = lock_err(parse_package_lock("p", &lock(r#"{"version":"1.0.0"}"#), R));
    assert!(
        err.contains("has no `integrity`") && err.contains("npm install"),
        "{err}"
    );
    let err = lock_err(parse_package_lock(
        "p",
        &lock(r#"{"version":"1.0.0","integrity":"sha1-2jmj7l5rSw0yVb/vlWAYkK/YBwk="}"#),
        R,
    ));
    assert!(err.contains("sha1"), "{err}");
    let err = lock_err(parse_package_lock("p", r#"{"lockfileVersion":1,"dependencies":{}}"#, R));
    assert!(
        err.contains("lockfileVersion 1") && err.contains("--lockfile-version 3"),
        "{err}"
    );
    let err = lock_err(parse_package_lock(
        "p",
        "{\n  \"lockfileVersion\": 3,\n  \"packages\": {,\n}",
        R,
    ));
    assert!(err.starts_with("p:3: not valid JSON"), "{err}");
}

/// pnpm refusals: git, directory and file sources, an old lockfile
/// version, a missing integrity, a snapshot that is not in `packages`.
#[test]
fn pnpm_refusals() {
    let lock = |res: &str| {
        format!("lockfileVersion: '9.0'\nimporters:\n  .:\n    dependencies:\n      x:\n        specifier: ^1.0.0\n        version: 1.0.0\npackages:\n  x@1.0.0:\n    resolution: {res}\nsnapshots:\n  x@1.0.0: {{}}\n")
    };
    let err = lock_err(parse_pnpm_lock(
        "pnpm-lock.yaml",
        &lock("{commit: 5c1e8a7, repo: 'https://tok@git.example.invalid/x.git', type: git}"),
        R,
    ));
    assert!(err.contains("package `x@1.0.0`") && err.contains("git source"), "{err}");
    assert!(!err.contains("tok@"), "credentials are redacted: {err}");
    let err = lock_err(parse_pnpm_lock("p", &lock("{directory: ../x, type: directory}"), R));
    assert!(err.contains("directory source") && err.contains("../x"), "{err}");
    let err = lock_err(parse_pnpm_lock("p", &lock("{tarball: 'file:vendor/x-1.0.0.tgz'}"), R));
    assert!(err.contains("local tarball"), "{err}");
    let err = lock_err(parse_pnpm_lock("p", &lock("{}"), R));
    assert!(err.contains("no `integrity`") && err.contains("pnpm install"), "{err}");
    let file_dep = "lockfileVersion: '9.0'\nimporters:\n  .:\n    dependencies:\n      x:\n        specifier: file:../x\n        version: file:../x\n";
    let err = lock_err(parse_pnpm_lock("p", file_dep, R));
    assert!(err.contains("local `file:../x` dependency"), "{err}");
    let err = lock_err(parse_pnpm_lock("p", "lockfileVersion: 5.4\n", R));
    assert!(
        err.contains("lockfileVersion 5.4") && err.contains("6.x and 9.0"),
        "{err}"
    );
    let missing = "lockfileVersion: '9.0'\nimporters:\n  .:\n    dependencies:\n      x:\n        specifier: ^1\n        version: 1.0.0\n";
    let err = lock_err(parse_pnpm_lock("p", missing, R));
    assert!(err.contains("`x@1.0.0`, which is not in `packages`"), "{err}");
    let err = lock_err(parse_pnpm_lock("p", "lockfileVersion: '9.0'\nimporters: [\n", R));
    assert!(err.starts_with("p:"), "{err}");
}

/// yarn.lock v1 refusals, each with the line: a git source, a missing
/// integrity, a file dependency, malformed lines, a dangling dependency.
#[test]
fn yarn_classic_refusals() {
    let root = fixture("yarn-classic");
    let mut manifests = yarn_manifests(&root).unwrap();
    manifests.truncate(1);
    manifests[0].json = serde_json::json!({"dependencies": {"x": "^1.0.0"}});
    let read = |t: &str| lock_err(parse_yarn_classic("yarn.lock", t, R, &manifests));
    let head = "# yarn lockfile v1\n\n";
    let err = read(&format!(
        "{head}x@^1.0.0:\n  version \"1.0.0\"\n  resolved \"git+https://git.example.invalid/x.git#abc\"\n"
    ));
    assert!(
        err.starts_with("yarn.lock:5: entry `x@^1.0.0`") && err.contains("git and file"),
        "{err}"
    );
    let err = read(&format!(
        "{head}x@^1.0.0:\n  version \"1.0.0\"\n  resolved \"https://registry.example.invalid/x/-/x-1.0.0.tgz\"\n"
    ));
    assert!(
        err.starts_with("yarn.lock:3:") && err.contains("no `integrity`"),
        "{err}"
    );
    let err = read(&format!("{head}\"x@file:../x\", x@^1.0.0:\n  version \"1.0.0\"\n"));
    assert!(err.contains("local directory dependency"), "{err}");
    for (body, line, what) in [
        ("x@^1.0.0:\n\tversion \"1.0.0\"\n", 4, "tab"),
        ("x@^1.0.0:\n   version \"1.0.0\"\n", 4, "3 spaces"),
        ("x@^1.0.0:\n  version \"1.0.0\n", 4, "unterminated string"),
        ("<<<<<<< HEAD\nx@^1.0.0:\n", 3, "merge conflict"),
        ("x@^1.0.0:\n  version \"1.0.0\" extra\n", 4, "found 3 items"),
        ("  version \"1.0.0\"\n", 3, "entry header"),
    ] {
        let err = read(&format!("{head}{body}"));
        assert!(
            err.starts_with(&format!("yarn.lock:{line}:")) && err.contains(what),
            "{what}: {err}"
        );
    }
    let err = read(&format!(
        "{head}x@^1.0.0:\n  version \"1.0.0\"\n  resolved \"https://registry.example.invalid/x/-/x-1.0.0.tgz\"\n  integrity {}\n  dependencies:\n    y \"^2\"\n",
        sri("x")
    ));
    assert!(
        err.starts_with("yarn.lock:8:") && err.contains("`y@^2`") && err.contains("no entry"),
        "{err}"
    );
}

/// yarn Berry refusals: git, user patches, portals, an unknown version.
#[test]
fn yarn_berry_refusals() {
    let lock = |res: &str| {
        format!("__metadata:\n  version: 8\n  cacheKey: 10c0\n\n\"a@workspace:.\":\n  version: 0.0.0-use.local\n  resolution: \"a@workspace:.\"\n  dependencies:\n    x: \"{res}\"\n  languageName: unknown\n  linkType: soft\n\n\"x@{res}\":\n  version: 1.0.0\n  resolution: \"x@{res}\"\n  checksum: 10c0/00\n  languageName: node\n  linkType: hard\n")
    };
    let err = lock_err(parse_yarn_berry(
        "yarn.lock",
        &lock("https://git.example.invalid/x.git#commit=abc"),
        R,
    ));
    assert!(
        err.contains("entry `x@https") && err.contains("`https:` source"),
        "{err}"
    );
    let err = lock_err(parse_yarn_berry(
        "yarn.lock",
        &lock("patch:x@npm%3A1.0.0#./.yarn/patches/x.patch"),
        R,
    ));
    assert!(err.contains("patched package"), "{err}");
    let err = lock_err(parse_yarn_berry("yarn.lock", &lock("portal:../x"), R));
    assert!(err.contains("`portal:` source"), "{err}");
    let err = lock_err(parse_yarn_berry("yarn.lock", "__metadata:\n  version: 3\n", R));
    assert!(err.contains("__metadata.version 3") && err.contains("4 to 8"), "{err}");
}

/// bun.lock refusals: git, GitHub and file sources, an unknown lockfile
/// version, a missing integrity, malformed JSONC with its line.
#[test]
fn bun_refusals() {
    let lock = |entry: &str| {
        format!("{{\n  \"lockfileVersion\": 1,\n  \"workspaces\": {{ \"\": {{ \"name\": \"a\" }} }},\n  \"packages\": {{\n    \"x\": {entry},\n  }}\n}}\n")
    };
    for (entry, what) in [
        (r#"["x@github:acme/x#abc", {}, "acme-x-abc"]"#, "`github` source"),
        (
            r#"["x@git+https://git.example.invalid/x.git#abc", {}, "abc"]"#,
            "`git+` source",
        ),
        (r#"["x@file:../x", {}]"#, "`file` source"),
    ] {
        let err = lock_err(parse_bun_lock("bun.lock", &lock(entry), R));
        assert!(err.contains("package `x`") && err.contains(what), "{what}: {err}");
    }
    let err = lock_err(parse_bun_lock("bun.lock", &lock(r#"["x@1.0.0", "", {}, ""]"#), R));
    assert!(err.contains("no `integrity`") && err.contains("bun install"), "{err}");
    let err = lock_err(parse_bun_lock(
        "bun.lock",
        r#"{"lockfileVersion": 2, "packages": {}}"#,
        R,
    ));
    assert!(err.contains("lockfileVersion 2"), "{err}");
    let err = lock_err(parse_bun_lock(
        "bun.lock",
        "{\n  \"lockfileVersion\": 1,\n  \"packages\": {\n    \"x\": [\"x@1.0.0\" \"\"],\n  }\n}",
        R,
    ));
    assert!(err.starts_with("bun.lock:4:"), "{err}");
}
