//! Archives made by independent tools (GNU tar, xz, zstd, dpkg-deb, ar)
//! unpack into entries that hash exactly like the trees they were made from.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{assert_no_trace, payload, run, write};
use farm_store::{tree_digest, ArchiveFormat, Store, StoreError, UnpackError, UnpackLimits};

/// `payload` under `parent/package/` (npm's tarball layout), and its digest.
fn package_dir(parent: &Path) -> farm_store::Digest {
    payload(&parent.join("package"));
    tree_digest(&parent.join("package")).unwrap()
}

#[test]
fn gnu_tar_in_every_supported_compression_unpacks_to_the_original_tree() {
    let t = common::scratch();
    let src = t.path().join("src");
    let expected = package_dir(&src);
    let store = Store::open(t.path().join("home")).unwrap();
    for (file, flag) in [
        ("p.tar", None),
        ("p.tgz", Some("--gzip")),
        ("p.txz", Some("--xz")),
        ("p.tzst", Some("--zstd")),
    ] {
        let archive = t.path().join(file);
        let mut cmd = Command::new("tar");
        cmd.arg("-C").arg(&src).arg("-cf").arg(&archive);
        if let Some(flag) = flag {
            cmd.arg(flag);
        }
        run(cmd.arg("package"));
        let (entry, stats) = store
            .add_archive_with_stats(
                &archive,
                ArchiveFormat::Tar { strip: 1 },
                UnpackLimits::default(),
                "pkg",
                "npm",
            )
            .unwrap();
        assert_eq!(
            entry.digest, expected,
            "{file}: same tree as the directory tar was given"
        );
        assert_eq!(
            stats.hardlinks, 1,
            "{file}: GNU tar stores the second name of a hardlinked file as a link"
        );
        assert_eq!(stats.symlinks, 2, "{file}");
        assert_eq!(stats.skipped_special, 0, "{file}");
    }
    assert_eq!(
        store.status().unwrap().entries,
        1,
        "four archives of one tree are one entry"
    );
}

#[test]
fn pax_format_archive_unpacks_to_the_original_tree() {
    let t = common::scratch();
    let src = t.path().join("src");
    let expected = package_dir(&src);
    let archive = t.path().join("p.tar.gz");
    run(Command::new("tar")
        .arg("--format=pax")
        .arg("-C")
        .arg(&src)
        .arg("-czf")
        .arg(&archive)
        .arg("package"));
    let store = Store::open(t.path().join("home")).unwrap();
    let entry = store
        .add_archive(
            &archive,
            ArchiveFormat::Tar { strip: 1 },
            UnpackLimits::default(),
            "pkg",
            "npm",
        )
        .unwrap();
    assert_eq!(entry.digest, expected);
}

fn control(pkg: &Path) {
    write(
        &pkg.join("DEBIAN/control"),
        b"Package: farm-test\nVersion: 1.0\nArchitecture: all\nMaintainer: farm tests <tests@example.invalid>\nDescription: test package\n",
        0o644,
    );
}

#[test]
fn deb_built_by_dpkg_deb_unpacks_its_data_tar_in_every_compression() {
    let t = common::scratch();
    let reference = t.path().join("reference");
    payload(&reference);
    let expected = tree_digest(&reference).unwrap();
    let pkg = t.path().join("pkg");
    payload(&pkg);
    control(&pkg);
    let store = Store::open(t.path().join("home")).unwrap();
    for compression in ["xz", "zstd", "gzip", "none"] {
        let deb = t.path().join(format!("farm-test-{compression}.deb"));
        run(Command::new("dpkg-deb")
            .arg("--root-owner-group")
            .arg(format!("-Z{compression}"))
            .arg("--build")
            .arg(&pkg)
            .arg(&deb));
        let entry = store
            .add_archive(
                &deb,
                ArchiveFormat::Deb,
                UnpackLimits::default(),
                "farm-test_1.0_all",
                "deb",
            )
            .unwrap();
        assert_eq!(
            entry.digest, expected,
            "data.tar of -Z{compression} is the payload, without DEBIAN/"
        );
        assert!(!entry.path.join("DEBIAN").exists());
    }
}

#[test]
fn deb_assembled_with_ar_and_data_tar_xz_unpacks() {
    let t = common::scratch();
    let data = t.path().join("data");
    payload(&data);
    let expected = tree_digest(&data).unwrap();
    let parts = t.path().join("parts");
    fs::create_dir(&parts).unwrap();
    fs::write(parts.join("debian-binary"), "2.0\n").unwrap();
    let ctl = t.path().join("ctl");
    control(&ctl);
    run(Command::new("tar")
        .arg("-C")
        .arg(ctl.join("DEBIAN"))
        .arg("-cJf")
        .arg(parts.join("control.tar.xz"))
        .arg("."));
    run(Command::new("tar")
        .arg("-C")
        .arg(&data)
        .arg("-cJf")
        .arg(parts.join("data.tar.xz"))
        .arg("."));
    let deb = t.path().join("handmade.deb");
    run(Command::new("ar")
        .current_dir(&parts)
        .arg("rc")
        .arg(&deb)
        .arg("debian-binary")
        .arg("control.tar.xz")
        .arg("data.tar.xz"));
    let store = Store::open(t.path().join("home")).unwrap();
    let entry = store
        .add_archive(&deb, ArchiveFormat::Deb, UnpackLimits::default(), "handmade", "deb")
        .unwrap();
    assert_eq!(entry.digest, expected);
    assert_eq!(
        fs::read_link(entry.path.join("lib64/ld.so")).unwrap(),
        Path::new("/usr/lib/libx.so.1")
    );
}

#[test]
fn a_tarball_is_not_a_deb() {
    let t = common::scratch();
    let src = t.path().join("src");
    package_dir(&src);
    let archive = t.path().join("p.tgz");
    run(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-czf")
        .arg(&archive)
        .arg("package"));
    let store = Store::open(t.path().join("home")).unwrap();
    let err = store
        .add_archive(&archive, ArchiveFormat::Deb, UnpackLimits::default(), "p", "deb")
        .unwrap_err();
    assert!(matches!(err, StoreError::Unpack(UnpackError::NotDeb { .. })), "{err}");
    assert!(err.to_string().contains("p.tgz"), "names the file: {err}");
    assert_no_trace(&store);
}

#[test]
fn tar_with_dotdot_or_absolute_members_is_refused_and_leaves_no_trace() {
    let t = common::scratch();
    let work = t.path().join("work/inner");
    fs::create_dir_all(&work).unwrap();
    write(&t.path().join("work/evil"), b"evil", 0o644);
    write(&work.join("fine"), b"fine", 0o644);
    let store = Store::open(t.path().join("home")).unwrap();

    // -P keeps `..` and leading `/` exactly as given.
    let dotdot = t.path().join("dotdot.tar");
    run(Command::new("tar")
        .current_dir(&work)
        .arg("-P")
        .arg("-cf")
        .arg(&dotdot)
        .arg("fine")
        .arg("../evil"));
    let err = store
        .add_archive(
            &dotdot,
            ArchiveFormat::Tar { strip: 0 },
            UnpackLimits::default(),
            "dotdot",
            "test",
        )
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Unpack(UnpackError::UnsafePath { entry, .. }) if entry == "../evil"),
        "{err}"
    );
    assert_no_trace(&store);
    assert!(!store.root().join("evil").exists() && !store.tmp_dir().join("evil").exists());

    let absolute = t.path().join("absolute.tar");
    let abs_member = t.path().join("work/evil");
    run(Command::new("tar").arg("-P").arg("-cf").arg(&absolute).arg(&abs_member));
    let err = store
        .add_archive(
            &absolute,
            ArchiveFormat::Tar { strip: 0 },
            UnpackLimits::default(),
            "absolute",
            "test",
        )
        .unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Unpack(UnpackError::UnsafePath {
                reason: "absolute path",
                ..
            })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains(abs_member.to_str().unwrap()),
        "names the member: {err}"
    );
    assert_no_trace(&store);
}

#[test]
fn symlink_then_write_through_it_is_refused() {
    let t = common::scratch();
    let a = t.path().join("a");
    fs::create_dir(&a).unwrap();
    std::os::unix::fs::symlink(t.path().join("outside"), a.join("link")).unwrap();
    let b = t.path().join("b/link");
    write(&b.join("planted"), b"gotcha", 0o644);
    let archive = t.path().join("two-step.tar");
    // The same name, first as a symlink pointing outside, then as a directory with a file.
    run(Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&a)
        .arg("link")
        .arg("-C")
        .arg(t.path().join("b"))
        .arg("link/planted"));
    let store = Store::open(t.path().join("home")).unwrap();
    let err = store
        .add_archive(
            &archive,
            ArchiveFormat::Tar { strip: 0 },
            UnpackLimits::default(),
            "two-step",
            "test",
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unpack(UnpackError::ThroughSymlink { .. })),
        "{err}"
    );
    assert!(!t.path().join("outside").exists(), "nothing was written outside");
    assert_no_trace(&store);
}

/// The audit's two-step chain (`a/b/up -> ../..`, then
/// `esc -> a/b/up/../../etc/shadow`), made by GNU tar from real links,
/// is refused by `add_archive` and leaves nothing in the store.
#[test]
fn a_symlink_chain_made_by_gnu_tar_is_refused_without_a_trace() {
    let t = common::scratch();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    std::os::unix::fs::symlink("../..", src.join("a/b/up")).unwrap();
    std::os::unix::fs::symlink("a/b/up/../../etc/shadow", src.join("esc")).unwrap();
    let archive = t.path().join("chain.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("-cf")
        .arg(&archive)
        .args(["a", "esc"]));
    let store = Store::open(t.path().join("home")).unwrap();
    let err = store
        .add_archive(
            &archive,
            ArchiveFormat::Tar { strip: 0 },
            UnpackLimits::default(),
            "chain",
            "test",
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Unpack(UnpackError::SymlinkEscapes { ref entry, .. }) if entry == "esc"),
        "{err}"
    );
    assert_no_trace(&store);
}

/// A zstd archive of 64 MiB of zeros (made by the zstd tool, ~2 KiB) with
/// `[limits] unpack-size = 1MiB`: refused, the error names the key, and
/// neither store/ nor tmp/ keeps any of it.
#[test]
fn an_archive_past_the_unpack_limit_is_refused_without_a_trace() {
    let t = common::scratch();
    let src = t.path().join("src");
    write(&src.join("zeros"), &vec![0u8; 64 << 20], 0o644);
    let archive = t.path().join("zeros.tar.zst");
    run(Command::new("tar")
        .arg("-C")
        .arg(&src)
        .arg("--zstd")
        .arg("-cf")
        .arg(&archive)
        .arg("zeros"));
    let store = Store::open(t.path().join("home")).unwrap();
    let limits = UnpackLimits {
        max_size: Some(1 << 20),
        max_ratio: None,
    };
    let err = store
        .add_archive(&archive, ArchiveFormat::Tar { strip: 0 }, limits, "zeros", "test")
        .unwrap_err();
    assert!(matches!(err, StoreError::Unpack(UnpackError::TooLarge { .. })), "{err}");
    assert!(err.to_string().contains("[limits] unpack-size"), "{err}");
    assert_no_trace(&store);
    // The same archive within the default limits (ratio ~30000 > 1000) is refused too.
    let err = store
        .add_archive(
            &archive,
            ArchiveFormat::Tar { strip: 0 },
            UnpackLimits::default(),
            "zeros",
            "test",
        )
        .unwrap_err();
    assert!(err.to_string().contains("[limits] unpack-ratio"), "{err}");
    assert_no_trace(&store);
}
