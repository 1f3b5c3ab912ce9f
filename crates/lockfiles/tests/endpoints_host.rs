//! Endpoint discovery against this machine's real configuration and tools:
//! apt's sources, `npm config get registry`, and pip's own default index.
//! The expected values come from the tools themselves, never from hosts
//! written here.

use std::path::Path;
use std::process::Command;

use farm_lockfiles::endpoints;

fn tool_answer(program: &str, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(out.status.success(), "{program} {args:?} failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn this_machines_apt_sources_name_a_mirror_and_keyring_for_bookworm() {
    let sources = endpoints::apt_sources(Path::new("/etc/apt")).unwrap();
    let mirror = endpoints::debian_mirror_for(&sources, "bookworm").expect("an apt source lists bookworm");
    assert!(
        mirror.starts_with("http://") || mirror.starts_with("https://"),
        "{mirror}"
    );
    assert!(!mirror.ends_with('/'), "trailing slash is normalised away: {mirror}");
    let source = sources
        .iter()
        .find(|s| s.suites.iter().any(|x| x == "bookworm"))
        .unwrap();
    let keyring = source.signed_by.as_ref().expect("the bookworm source has Signed-By");
    assert!(keyring.is_file(), "{} exists", keyring.display());
}

#[test]
fn farm_apt_etc_redirects_apt_discovery() {
    // The only test in this binary that reads FARM_APT_ETC, so setting it is race-free.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("sources.list.d")).unwrap();
    std::fs::write(
        dir.path().join("sources.list.d/t.sources"),
        "Types: deb\nURIs: http://127.0.0.1:9/debian/\nSuites: farmtest\nComponents: main\n",
    )
    .unwrap();
    std::env::set_var("FARM_APT_ETC", dir.path());
    let etc = endpoints::default_apt_etc();
    std::env::remove_var("FARM_APT_ETC");
    assert_eq!(etc, dir.path());
    let sources = endpoints::apt_sources(&etc).unwrap();
    assert_eq!(
        endpoints::debian_mirror_for(&sources, "farmtest").as_deref(),
        Some("http://127.0.0.1:9/debian")
    );
    assert_eq!(endpoints::default_apt_etc(), Path::new("/etc/apt"));
}

#[test]
fn npm_registry_matches_npm_and_a_project_npmrc_overrides_it() {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("NPM_CONFIG_REGISTRY").is_none() && std::env::var_os("npm_config_registry").is_none() {
        let npm = tool_answer("npm", &["config", "get", "registry"], dir.path());
        assert_eq!(endpoints::npm_registry(dir.path()).unwrap(), npm.trim_end_matches('/'));
        std::fs::write(dir.path().join(".npmrc"), "registry=http://127.0.0.1:9/npm/\n").unwrap();
        assert_eq!(endpoints::npm_registry(dir.path()).unwrap(), "http://127.0.0.1:9/npm");
    } else {
        // The environment outranks every file; check that instead.
        std::fs::write(dir.path().join(".npmrc"), "registry=http://127.0.0.1:9/npm/\n").unwrap();
        assert_ne!(endpoints::npm_registry(dir.path()).unwrap(), "http://127.0.0.1:9/npm");
    }
}

#[test]
fn pypi_index_is_the_configured_one_or_pips_own_default() {
    let dir = tempfile::tempdir().unwrap();
    let got = endpoints::pypi_index(dir.path()).unwrap();
    assert!(url::Url::parse(&got).is_ok() && !got.ends_with('/'), "{got}");
    if let Ok(env) = std::env::var("PIP_INDEX_URL") {
        assert_eq!(got, env.trim_end_matches('/'));
        return;
    }
    // What pip would use for `pip install` here, asked from pip itself.
    let probe = "from pip._internal.configuration import Configuration as C\n\
                 from pip._internal.models.index import PyPI\n\
                 c = C(isolated=False); c.load(); d = dict(c.items())\n\
                 print(d.get('install.index-url') or d.get('global.index-url') or PyPI.simple_url)";
    let pip = tool_answer("python3", &["-c", probe], dir.path());
    assert_eq!(got, pip.trim_end_matches('/'));
}
