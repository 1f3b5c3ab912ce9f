//! The Release → Packages → .deb trust chain against a small archive each
//! test builds itself: real gpg keys and signatures, a real xz index, served
//! over loopback HTTP and as file:// URLs. Needs `gpg`, `gpg-agent`,
//! `gpgconf` and `gpgv` on PATH (Debian packages of the same names).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use farm_lockfiles::debian::{self, DebianError, DebianRequest, ReleaseTrust, ROLE_BASE};
use farm_lockfiles::http::{Client, ClientOptions, HttpError};
use farm_lockfiles::integrity::sha256_of;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SUITE: &str = "farmtest";

/// A GnuPG home with one signing key; its agent is stopped on drop.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new(name: &str) -> Gpg {
        let home = tempfile::Builder::new().prefix("g").tempdir_in("/tmp").unwrap();
        let gpg = Gpg { home };
        gpg.run(&[
            "--quick-gen-key",
            &format!("{name} <{name}@example.invalid>"),
            "ed25519",
            "sign",
            "never",
        ]);
        gpg
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args([
                "--batch",
                "--yes",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .expect("gpg is installed (Debian package `gpg`)");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Writes the public key as a binary keyring (or armoured when `armor`).
    fn export(&self, dest: &Path, armor: bool) -> PathBuf {
        let mut args = vec!["--export"];
        if armor {
            args.insert(0, "--armor");
        }
        std::fs::write(dest, self.run(&args)).unwrap();
        dest.to_path_buf()
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// A one-suite archive on disk: `dists/farmtest/{InRelease,Release}`, an xz
/// Packages index and the .deb files it names.
struct Archive {
    root: tempfile::TempDir,
    gpg: Gpg,
    debs: Vec<(String, Vec<u8>)>,
}

const PACKAGES: &[(&str, &str, &str)] = &[
    // (name, version, extra fields)
    (
        "app",
        "1.0-1",
        "Pre-Depends: libc (>= 2)\nDepends: shell, helper | other\n",
    ),
    ("libc", "2.36-9", ""),
    ("zsh", "5.9", "Provides: shell\nDepends: libc\n"),
    ("helper", "1", "Depends: libc (>= 0:2.0)\n"),
];

impl Archive {
    fn new() -> Archive {
        let root = tempfile::tempdir().unwrap();
        let gpg = Gpg::new("archive");
        let mut archive = Archive {
            root,
            gpg,
            debs: Vec::new(),
        };
        let mut packages = String::new();
        for (name, version, extra) in PACKAGES {
            let filename = format!("pool/main/{}/{name}/{name}_{version}_amd64.deb", &name[..1]);
            // Not a usable .deb: resolution pins bytes, it never opens them.
            let body = format!("!<arch>\ndebian-binary   {name} {version}\n").into_bytes();
            let path = archive.root.path().join(&filename);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &body).unwrap();
            packages.push_str(&format!(
                "Package: {name}\nVersion: {version}\nArchitecture: amd64\n{extra}Filename: {filename}\nSize: {}\nSHA256: {}\nDescription: test\n long text\n\n",
                body.len(),
                sha256_of(&body).hex()
            ));
            archive.debs.push((name.to_string(), body));
        }
        archive.write_index(packages.as_bytes(), SUITE, false);
        archive
    }

    fn dists(&self) -> PathBuf {
        self.root.path().join("dists").join(SUITE)
    }

    /// Writes Packages.xz and a Release/InRelease pair describing it.
    fn write_index(&self, packages: &[u8], codename: &str, by_hash: bool) {
        let dir = self.dists().join("main/binary-amd64");
        std::fs::create_dir_all(&dir).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(packages).unwrap();
        let xz = xz.finish().unwrap();
        std::fs::write(dir.join("Packages.xz"), &xz).unwrap();
        if by_hash {
            let hashed = dir.join("by-hash/SHA256");
            std::fs::create_dir_all(&hashed).unwrap();
            std::fs::write(hashed.join(sha256_of(&xz).hex()), &xz).unwrap();
            // The canonical path is stale, as on a mirror mid-sync.
            std::fs::write(dir.join("Packages.xz"), b"stale").unwrap();
        }
        let release = format!(
            "Origin: farm test\nSuite: testing\nCodename: {codename}\nAcquire-By-Hash: {}\nArchitectures: amd64\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages\n {} {} main/binary-amd64/Packages.xz\n",
            if by_hash { "yes" } else { "no" },
            sha256_of(packages).hex(),
            packages.len(),
            sha256_of(&xz).hex(),
            xz.len(),
        );
        std::fs::write(self.dists().join("Release"), &release).unwrap();
        let (r, i) = (self.dists().join("Release"), self.dists().join("InRelease"));
        self.gpg
            .run(&["--clearsign", "--output", i.to_str().unwrap(), r.to_str().unwrap()]);
    }

    fn keyring(&self, armor: bool) -> PathBuf {
        self.gpg
            .export(&self.root.path().join(if armor { "key.asc" } else { "key.gpg" }), armor)
    }

    fn request(&self, mirror: &str, keyring: Option<PathBuf>) -> DebianRequest {
        let mut req = DebianRequest::new(mirror, SUITE, "amd64");
        req.roots = vec![("app".into(), ROLE_BASE.into())];
        req.keyring = keyring;
        req
    }

    fn file_url(&self) -> String {
        format!("file://{}/", self.root.path().display())
    }
}

/// A static file server on 127.0.0.1 (HTTP/1.1, GET only, 404 for missing
/// files), stopped when dropped.
struct Server {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn serve(root: PathBuf) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let root = root.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&req);
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or("/")
                        .trim_start_matches('/')
                        .to_string();
                    let (status, body) = match std::fs::read(root.join(&path)) {
                        Ok(b) if !path.contains("..") => ("200 OK", b),
                        _ => ("404 Not Found", Vec::new()),
                    };
                    let header = format!(
                        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(header.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                });
            }
        });
        Server { url, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn client() -> Client {
    Client::new(ClientOptions {
        attempts: 1,
        ..Default::default()
    })
}

fn names(res: &debian::DebianResolution) -> Vec<&str> {
    res.packages.iter().map(|p| p.artifact.name.as_str()).collect()
}

#[tokio::test]
async fn signed_archive_over_http_resolves_verified_and_debs_match_their_pins() {
    let archive = Archive::new();
    let server = Server::serve(archive.root.path().to_path_buf()).await;
    let req = archive.request(&server.url, Some(archive.keyring(false)));
    let res = debian::resolve(&client(), &req).await.unwrap();
    assert_eq!(
        res.trust,
        ReleaseTrust::Verified {
            keyring: req.keyring.clone().unwrap()
        }
    );
    assert_eq!(res.release_url, format!("{}/dists/{SUITE}/InRelease", server.url));
    assert_eq!(names(&res), ["app", "helper", "libc", "zsh"]);
    for p in &res.packages {
        let body = &archive.debs.iter().find(|(n, _)| *n == p.artifact.name).unwrap().1;
        assert_eq!(
            p.artifact.integrity,
            sha256_of(body),
            "{} is pinned to the bytes the archive serves",
            p.artifact.name
        );
        let got = client().get_bytes(&p.artifact.url).await.unwrap();
        assert_eq!(&got, body, "{} URL serves the pinned file", p.artifact.url);
    }
}

#[tokio::test]
async fn armoured_keyring_and_file_urls_work_too() {
    let archive = Archive::new();
    let req = archive.request(&archive.file_url(), Some(archive.keyring(true)));
    let res = debian::resolve(&client(), &req).await.unwrap();
    assert!(matches!(res.trust, ReleaseTrust::Verified { .. }), "{:?}", res.trust);
    assert!(res.packages[0]
        .artifact
        .url
        .starts_with(&format!("file://{}/pool/", archive.root.path().display())));
}

#[tokio::test]
async fn a_key_outside_the_keyring_is_refused() {
    let archive = Archive::new();
    let stranger = Gpg::new("stranger");
    let keyring = stranger.export(&archive.root.path().join("stranger.gpg"), false);
    let err = debian::resolve(&client(), &archive.request(&archive.file_url(), Some(keyring.clone())))
        .await
        .unwrap_err();
    assert!(matches!(err, DebianError::Signature { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("InRelease") && msg.contains(&keyring.display().to_string()) && msg.contains("hint:"),
        "{msg}"
    );
}

#[tokio::test]
async fn an_altered_inrelease_fails_the_signature_check() {
    let archive = Archive::new();
    let path = archive.dists().join("InRelease");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("Origin: farm test", "Origin: farm evil");
    std::fs::write(&path, text).unwrap();
    let err = debian::resolve(
        &client(),
        &archive.request(&archive.file_url(), Some(archive.keyring(false))),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("BADSIG"), "{err}");
}

#[tokio::test]
async fn a_packages_index_that_does_not_match_release_is_refused() {
    let archive = Archive::new();
    let path = archive.dists().join("main/binary-amd64/Packages.xz");
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(b"Package: evil\nVersion: 1\n\n").unwrap();
    std::fs::write(&path, xz.finish().unwrap()).unwrap();
    let err = debian::resolve(
        &client(),
        &archive.request(&archive.file_url(), Some(archive.keyring(false))),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, DebianError::Http(HttpError::Integrity { .. })), "{err}");
    assert!(err.to_string().contains("Packages.xz"), "{err}");
}

#[tokio::test]
async fn without_a_keyring_the_release_is_used_but_marked_unchecked() {
    let archive = Archive::new();
    let res = debian::resolve(&client(), &archive.request(&archive.file_url(), None))
        .await
        .unwrap();
    match &res.trust {
        ReleaseTrust::Unchecked { reason } => assert!(reason.contains("no keyring"), "{reason}"),
        other => panic!("expected Unchecked, got {other:?}"),
    }
    assert_eq!(names(&res), ["app", "helper", "libc", "zsh"]);
}

#[tokio::test]
async fn release_with_detached_signature_is_used_when_inrelease_is_missing() {
    let archive = Archive::new();
    std::fs::remove_file(archive.dists().join("InRelease")).unwrap();
    let (r, sig) = (archive.dists().join("Release"), archive.dists().join("Release.gpg"));
    archive
        .gpg
        .run(&["--detach-sign", "--output", sig.to_str().unwrap(), r.to_str().unwrap()]);
    let server = Server::serve(archive.root.path().to_path_buf()).await;
    let res = debian::resolve(&client(), &archive.request(&server.url, Some(archive.keyring(false))))
        .await
        .unwrap();
    assert!(matches!(res.trust, ReleaseTrust::Verified { .. }), "{:?}", res.trust);
    assert!(res.release_url.ends_with("/Release"), "{}", res.release_url);

    // A Release altered after signing no longer matches Release.gpg.
    let text = std::fs::read_to_string(&r).unwrap().replace("farm test", "farm evil");
    std::fs::write(&r, text).unwrap();
    let err = debian::resolve(&client(), &archive.request(&server.url, Some(archive.keyring(false))))
        .await
        .unwrap_err();
    assert!(matches!(err, DebianError::Signature { .. }), "{err}");
}

#[tokio::test]
async fn by_hash_index_is_preferred_when_release_offers_it() {
    let archive = Archive::new();
    let packages = xz_decode(&std::fs::read(archive.dists().join("main/binary-amd64/Packages.xz")).unwrap());
    archive.write_index(&packages, SUITE, true);
    let server = Server::serve(archive.root.path().to_path_buf()).await;
    let res = debian::resolve(&client(), &archive.request(&server.url, Some(archive.keyring(false))))
        .await
        .unwrap();
    assert_eq!(
        names(&res),
        ["app", "helper", "libc", "zsh"],
        "the stale canonical Packages.xz was not used"
    );
}

#[tokio::test]
async fn release_for_another_suite_is_refused() {
    let archive = Archive::new();
    let packages = xz_decode(&std::fs::read(archive.dists().join("main/binary-amd64/Packages.xz")).unwrap());
    archive.write_index(&packages, "elsewhere", false);
    let err = debian::resolve(
        &client(),
        &archive.request(&archive.file_url(), Some(archive.keyring(false))),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("expected suite farmtest") && err.contains("Codename: elsewhere"),
        "{err}"
    );
}

#[tokio::test]
async fn cached_index_is_reused_and_a_damaged_entry_is_replaced() {
    let archive = Archive::new();
    let cache = tempfile::tempdir().unwrap();
    let mut req = archive.request(&archive.file_url(), Some(archive.keyring(false)));
    req.cache_dir = Some(cache.path().to_path_buf());
    let first = debian::resolve(&client(), &req).await.unwrap();
    let entries: Vec<PathBuf> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(entries.len(), 1, "one decompressed index cached");
    let good = std::fs::read(&entries[0]).unwrap();
    assert!(
        good.starts_with(b"Package: app"),
        "the cache holds the decompressed text"
    );

    // With the archive's index gone, only the cache can answer.
    let xz_path = archive.dists().join("main/binary-amd64/Packages.xz");
    let xz = std::fs::read(&xz_path).unwrap();
    std::fs::remove_file(&xz_path).unwrap();
    let second = debian::resolve(&client(), &req).await.unwrap();
    assert_eq!(second.packages, first.packages);

    // A damaged cache entry is not trusted: with no index to refetch, resolution fails.
    std::fs::write(&entries[0], b"Package: evil\nVersion: 1\n").unwrap();
    let err = debian::resolve(&client(), &req).await.unwrap_err();
    assert!(err.to_string().contains("Packages.xz"), "{err}");

    // Once the index is back, the damaged entry is rewritten from it.
    std::fs::write(&xz_path, xz).unwrap();
    let third = debian::resolve(&client(), &req).await.unwrap();
    assert_eq!(third.packages, first.packages);
    assert_eq!(
        std::fs::read(&entries[0]).unwrap(),
        good,
        "the damaged cache entry was replaced"
    );
}

fn xz_decode(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut liblzma::read::XzDecoder::new(bytes), &mut out).unwrap();
    out
}

// ------------------------------------------------ several suites, one mirror

/// Writes `dists/<dir>/` (signed InRelease, Release, Packages.xz) and the
/// pool files for `packages` (name, version, extra fields).
fn write_suite(
    root: &Path,
    gpg: &Gpg,
    dir: &str,
    suite: &str,
    codename: &str,
    version: Option<&str>,
    packages: &[(&str, &str, &str)],
) {
    let mut index = String::new();
    for (name, ver, extra) in packages {
        let filename = format!("pool/main/{}/{name}/{name}_{ver}_amd64.deb", &name[..1]);
        let body = format!("!<arch>\ndebian-binary   {name} {ver}\n").into_bytes();
        let path = root.join(&filename);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &body).unwrap();
        index.push_str(&format!(
            "Package: {name}\nVersion: {ver}\nArchitecture: amd64\n{extra}Filename: {filename}\nSize: {}\nSHA256: {}\nDescription: test\n\n",
            body.len(),
            sha256_of(&body).hex()
        ));
    }
    let dists = root.join("dists").join(dir);
    let bin = dists.join("main/binary-amd64");
    std::fs::create_dir_all(&bin).unwrap();
    let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(index.as_bytes()).unwrap();
    let xz = xz.finish().unwrap();
    std::fs::write(bin.join("Packages.xz"), &xz).unwrap();
    let release = format!(
        "Origin: farm test\nSuite: {suite}\n{}Codename: {codename}\nArchitectures: amd64\nComponents: main\nSHA256:\n {} {} main/binary-amd64/Packages.xz\n",
        version.map(|v| format!("Version: {v}\n")).unwrap_or_default(),
        sha256_of(&xz).hex(),
        xz.len(),
    );
    let (r, i) = (dists.join("Release"), dists.join("InRelease"));
    std::fs::write(&r, release).unwrap();
    gpg.run(&["--clearsign", "--output", i.to_str().unwrap(), r.to_str().unwrap()]);
}

/// One mirror carrying bookworm (Python 3.11, also served as `oldstable`)
/// and trixie (Python 3.13, also served as `stable`), like Debian's archive.
struct TwoSuites {
    root: tempfile::TempDir,
    gpg: Gpg,
}

impl TwoSuites {
    fn new() -> TwoSuites {
        let root = tempfile::tempdir().unwrap();
        let gpg = Gpg::new("archive");
        let python = |minor: &str, pkg: &str, libc: &str| {
            vec![
                ("libc6".to_string(), libc.to_string(), String::new()),
                (
                    format!("python{minor}-minimal"),
                    pkg.to_string(),
                    format!("Depends: libc6 (>= {libc})\n"),
                ),
                (
                    format!("libpython{minor}-stdlib"),
                    pkg.to_string(),
                    format!("Depends: python{minor}-minimal (= {pkg}), libc6\n"),
                ),
            ]
        };
        let bookworm = python("3.11", "3.11.2-6", "2.36-9");
        let trixie = python("3.13", "3.13.5-2", "2.41-12");
        let refs = |v: &[(String, String, String)]| -> Vec<(String, String, String)> { v.to_vec() };
        for (dir, suite, codename, version, pkgs) in [
            ("bookworm", "oldstable", "bookworm", Some("12.9"), refs(&bookworm)),
            ("oldstable", "oldstable", "bookworm", Some("12.9"), refs(&bookworm)),
            ("trixie", "stable", "trixie", Some("13.1"), refs(&trixie)),
            ("stable", "stable", "trixie", Some("13.1"), refs(&trixie)),
        ] {
            let pkgs: Vec<(&str, &str, &str)> = pkgs
                .iter()
                .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
                .collect();
            write_suite(root.path(), &gpg, dir, suite, codename, version, &pkgs);
        }
        TwoSuites { root, gpg }
    }

    /// apt's configuration listing only bookworm on `mirror`, signed by this archive's key.
    fn apt_etc(&self, mirror: &str) -> tempfile::TempDir {
        let etc = tempfile::tempdir().unwrap();
        let keyring = self.gpg.export(&etc.path().join("archive.gpg"), false);
        std::fs::create_dir_all(etc.path().join("sources.list.d")).unwrap();
        std::fs::write(
            etc.path().join("sources.list.d/debian.sources"),
            format!(
                "Types: deb\nURIs: {mirror}/\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: {}\n",
                keyring.display()
            ),
        )
        .unwrap();
        etc
    }
}

fn python_request(archive: &farm_lockfiles::endpoints::DebianArchive, suite: &str, python: &str) -> DebianRequest {
    let mut req = DebianRequest::new(archive.mirror.clone(), suite, "amd64");
    req.roots = debian::python_roots(python)
        .into_iter()
        .map(|p| (p, debian::ROLE_PYTHON.to_string()))
        .collect();
    req.keyring = archive.signed_by.clone();
    req
}

/// The apt sources list only bookworm, yet trixie (and its Python 3.13) is
/// locked from the same mirror, with the source's keyring checking trixie's
/// Release.
#[tokio::test]
async fn a_suite_the_apt_sources_do_not_list_is_locked_from_the_same_mirror() {
    let mirror = TwoSuites::new();
    let server = Server::serve(mirror.root.path().to_path_buf()).await;
    let etc = mirror.apt_etc(&server.url);
    let sources = farm_lockfiles::endpoints::apt_sources(etc.path()).unwrap();
    let archive =
        farm_lockfiles::endpoints::debian_archive_for(&sources, "trixie").expect("Debian's archive is configured");
    assert_eq!(archive.mirror, server.url);
    assert!(!archive.lists_suite);

    let req = python_request(&archive, "trixie", "3.13");
    let res = debian::resolve(&client(), &req).await.unwrap();
    assert!(matches!(res.trust, ReleaseTrust::Verified { .. }), "{:?}", res.trust);
    assert_eq!(res.release_url, format!("{}/dists/trixie/InRelease", server.url));
    assert_eq!(names(&res), ["libc6", "libpython3.13-stdlib", "python3.13-minimal"]);
    let py = res
        .packages
        .iter()
        .find(|p| p.artifact.name == "python3.13-minimal")
        .unwrap();
    assert_eq!(py.artifact.version, "3.13.5-2");
    assert!(
        py.artifact.url.starts_with(&format!("{}/pool/", server.url)),
        "{}",
        py.artifact.url
    );
    assert_eq!(
        res.packages[0].artifact.version, "2.41-12",
        "trixie's libc6, not bookworm's"
    );
}

/// Asking bookworm for a Python it lacks lists each suite of the mirror once
/// (aliases folded into their codename) with its Python, and names the suite
/// to set; a Python no suite has says so and offers the suite's own.
#[tokio::test]
async fn a_python_the_suite_lacks_lists_which_suites_have_which() {
    let mirror = TwoSuites::new();
    let server = Server::serve(mirror.root.path().to_path_buf()).await;
    let etc = mirror.apt_etc(&server.url);
    let sources = farm_lockfiles::endpoints::apt_sources(etc.path()).unwrap();
    let archive = farm_lockfiles::endpoints::debian_archive_for(&sources, "bookworm").unwrap();

    let err = debian::resolve(&client(), &python_request(&archive, "bookworm", "3.13"))
        .await
        .unwrap_err();
    assert!(matches!(err, DebianError::PythonUnavailable { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("Python 3.13 is not in the Debian suite bookworm"), "{msg}");
    assert!(
        msg.contains("bookworm (oldstable 12.9): Python 3.11 (python3.11-minimal 3.11.2-6)"),
        "{msg}"
    );
    assert!(
        msg.contains("trixie (stable 13.1): Python 3.13 (python3.13-minimal 3.13.5-2)"),
        "{msg}"
    );
    assert_eq!(
        msg.matches("trixie (").count(),
        1,
        "stable is folded into trixie: {msg}"
    );
    assert!(
        msg.find("bookworm (").unwrap() < msg.find("trixie (").unwrap(),
        "older release first: {msg}"
    );
    assert!(
        msg.contains("hint: set [toolchains.debian] suite = \"trixie\" in farm.toml"),
        "{msg}"
    );

    let err = debian::resolve(&client(), &python_request(&archive, "bookworm", "3.12"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Python 3.12 is not in the Debian suite bookworm"), "{err}");
    assert!(err.contains("Python 3.11 (") && err.contains("Python 3.13 ("), "{err}");
    assert!(
        err.contains("no suite of this mirror has Python 3.12")
            && err.contains("keep suite \"bookworm\" with [toolchains.python] version = \"3.11\""),
        "{err}"
    );
}
