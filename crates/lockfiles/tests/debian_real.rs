//! Resolves a real Debian base + Python 3.11 closure from the mirror this
//! machine's apt is configured for (never a host written here), checks the
//! Release signature with the source's own `Signed-By` keyring, and fetches
//! one .deb to prove the pinned SHA-256 is the archive's.
//!
//! The decompressed Packages index is cached under CARGO_TARGET_TMPDIR, so
//! reruns fetch only the small Release file (and the one .deb).

use std::path::{Path, PathBuf};

use farm_lockfiles::debian::{self, DebianRequest, ReleaseTrust, ROLE_BASE, ROLE_PYTHON};
use farm_lockfiles::endpoints;
use farm_lockfiles::http::{Client, ClientOptions};
use farm_lockfiles::integrity::sha256_of;
use farm_lockfiles::lock::Unpack;

const SUITE: &str = "bookworm";

fn request() -> DebianRequest {
    let etc = endpoints::default_apt_etc();
    let sources = endpoints::apt_sources(&etc).expect("this machine's apt sources parse");
    let mirror = endpoints::debian_mirror_for(&sources, SUITE)
        .unwrap_or_else(|| panic!("no apt source under {} lists suite {SUITE}", etc.display()));
    let keyring = sources
        .iter()
        .find(|s| s.suites.iter().any(|x| x == SUITE))
        .and_then(|s| s.signed_by.clone());
    let mut req = DebianRequest::new(mirror, SUITE, "amd64");
    req.roots = debian::python_roots("3.11")
        .into_iter()
        .map(|p| (p, ROLE_PYTHON.to_string()))
        .collect();
    req.roots.extend(
        debian::default_base_roots()
            .into_iter()
            .map(|p| (p, ROLE_BASE.to_string())),
    );
    req.exclude = debian::default_excludes();
    req.keyring = keyring;
    req.cache_dir = Some(cache_dir());
    req
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-index-cache")
}

/// The index cache entries and their modification times.
fn cache_state() -> Vec<(PathBuf, std::time::SystemTime)> {
    let mut out: Vec<_> = std::fs::read_dir(cache_dir())
        .map(|d| {
            d.flatten()
                .map(|e| (e.path(), e.metadata().unwrap().modified().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn resolves_bookworm_python_and_base_closure_from_this_machines_mirror() {
    let client = Client::new(ClientOptions::default());
    let req = request();
    let first = debian::resolve(&client, &req).await.expect("resolution succeeds");

    // The Release anchor was signature-checked with the apt source's keyring.
    assert!(
        req.keyring.is_some(),
        "the {SUITE} apt source names a Signed-By keyring"
    );
    assert!(
        matches!(first.trust, ReleaseTrust::Verified { .. }),
        "Release must be verified: {:?}",
        first.trust
    );

    let find = |name: &str| first.packages.iter().find(|p| p.artifact.name == name);
    for name in [
        "libc6",
        "libpython3.11-stdlib",
        "python3.11-minimal",
        "libssl3",
        "libsqlite3-0",
        "dash",
        "coreutils",
    ] {
        assert!(find(name).is_some(), "{name} missing from the closure");
    }
    assert_eq!(
        find("libc6").unwrap().roles,
        [ROLE_BASE, ROLE_PYTHON],
        "libc6 is needed by both roots"
    );
    assert_eq!(find("libpython3.11-stdlib").unwrap().roles, [ROLE_PYTHON]);
    assert_eq!(find("coreutils").unwrap().roles, [ROLE_BASE]);
    // Excluded and never-depended-on packages stay out.
    for absent in ["dpkg", "mawk", "gawk", "perl-base", "debconf", "tzdata", "python3-pip"] {
        assert!(find(absent).is_none(), "{absent} must not be in the closure");
    }
    assert!(
        first.packages.len() < 80,
        "closure unexpectedly large: {} packages",
        first.packages.len()
    );

    let mirror = req.mirror.trim_end_matches('/');
    let mut names: Vec<&str> = first.packages.iter().map(|p| p.artifact.name.as_str()).collect();
    let sorted = {
        let mut s = names.clone();
        s.sort();
        s
    };
    assert_eq!(names, sorted, "packages come sorted by name");
    names.dedup();
    assert_eq!(names.len(), first.packages.len(), "one version per package");
    for p in &first.packages {
        let a = &p.artifact;
        assert!(
            a.url.ends_with(".deb") && a.url.starts_with(&format!("{mirror}/pool/")),
            "{}",
            a.url
        );
        assert!(a.integrity.to_string().starts_with("sha256:"), "{}", a.integrity);
        assert!(a.size.is_some_and(|s| s > 0));
        assert_eq!(a.unpack, Unpack::Deb);
        assert!(!p.roles.is_empty(), "{} has no role", a.name);
    }

    // Fetch the smallest .deb and check its bytes against the pinned digest.
    let small = first.packages.iter().min_by_key(|p| p.artifact.size).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("pkg.deb");
    let got = client
        .download(&small.artifact.url, Some(&small.artifact.integrity), &dest, &|_, _| {})
        .await
        .expect("the .deb matches its pinned SHA-256");
    let bytes = std::fs::read(&dest).unwrap();
    assert_eq!(sha256_of(&bytes), small.artifact.integrity);
    assert_eq!(got, small.artifact.integrity);
    assert_eq!(Some(bytes.len() as u64), small.artifact.size);
    assert!(bytes.starts_with(b"!<arch>\ndebian-binary"), "a .deb is an ar archive");

    // A second lock reads the cached index (left untouched) and gives the same pins.
    let cached = cache_state();
    assert!(
        !cached.is_empty(),
        "the decompressed index is cached in {}",
        cache_dir().display()
    );
    let second = debian::resolve(&client, &req)
        .await
        .expect("second resolution succeeds");
    assert_eq!(cache_state(), cached, "the cache entry was reused, not rewritten");
    assert_eq!(second.packages, first.packages, "resolution is deterministic");
}

/// The machine's apt lists only bookworm, yet trixie's Python 3.13 locks
/// from that same mirror: the archive is found by what the source is
/// (Debian's components and suites), the suite is the request's, and
/// trixie's Release checks out against the bookworm source's keyring.
#[tokio::test]
async fn trixie_python_3_13_locks_from_the_mirror_configured_for_bookworm() {
    let etc = endpoints::default_apt_etc();
    let sources = endpoints::apt_sources(&etc).expect("this machine's apt sources parse");
    if sources.iter().any(|s| s.suites.iter().any(|x| x == "trixie")) {
        eprintln!("NOTE: an apt source lists trixie itself; this still checks trixie resolves");
    }
    let archive = endpoints::debian_archive_for(&sources, "trixie")
        .unwrap_or_else(|| panic!("no apt source under {} serves Debian's archive", etc.display()));
    assert_eq!(
        Some(archive.mirror.clone()),
        endpoints::debian_mirror_for(&sources, SUITE),
        "the mirror is the one configured for {SUITE}"
    );
    let mut req = DebianRequest::new(archive.mirror.clone(), "trixie", "amd64");
    req.roots = debian::python_roots("3.13")
        .into_iter()
        .map(|p| (p, ROLE_PYTHON.to_string()))
        .collect();
    req.exclude = debian::default_excludes();
    req.keyring = archive.signed_by.clone();
    req.cache_dir = Some(cache_dir());
    let res = debian::resolve(&Client::new(ClientOptions::default()), &req)
        .await
        .expect("trixie resolves from the bookworm mirror");
    assert!(
        matches!(res.trust, ReleaseTrust::Verified { .. }),
        "trixie's Release must verify: {:?}",
        res.trust
    );
    assert!(res.release_url.contains("/dists/trixie/"), "{}", res.release_url);
    let py = res
        .packages
        .iter()
        .find(|p| p.artifact.name == "python3.13-minimal")
        .expect("python3.13-minimal in the closure");
    assert!(
        debian::upstream_version(&py.artifact.version).starts_with("3.13."),
        "{}",
        py.artifact.version
    );
    assert!(
        py.artifact.url.starts_with(&format!("{}/pool/", archive.mirror)),
        "{}",
        py.artifact.url
    );
    assert!(res.packages.iter().any(|p| p.artifact.name == "libpython3.13-stdlib"));
}
