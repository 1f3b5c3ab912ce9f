//! Archives whose links are each harmless alone but escape the unpacked
//! tree together: chains through earlier links, links that a later member
//! redirects, hard links to symlinks. Each test unpacks the attack and
//! asserts the refusal names the member, that nothing was written outside,
//! and that the partial tree is gone.

mod support;

use std::fs;
use std::path::Path;

use farm_archive::{unpack_archive, ArchiveFormat, UnpackError, UnpackLimits};
use support::{raw_tar, Member};

/// Unpacks `members` (as an uncompressed tar) into `<tmp>/root/out`; a file
/// `<tmp>/root/etc/shadow` and `<tmp>/etc/shadow` stand for what an escape would reach.
fn unpack(members: &[Member]) -> (tempfile::TempDir, Result<farm_archive::UnpackStats, UnpackError>) {
    let t = tempfile::tempdir().unwrap();
    for outside in [t.path().join("etc"), t.path().join("root/etc")] {
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("shadow"), "secret").unwrap();
    }
    let archive = t.path().join("attack.tar");
    fs::write(&archive, raw_tar(members)).unwrap();
    let r = unpack_archive(
        &archive,
        ArchiveFormat::Tar { strip: 0 },
        &t.path().join("root/out"),
        UnpackLimits::default(),
    );
    (t, r)
}

/// The refusal left nothing: no unpack directory, and the files outside as they were.
fn assert_nothing_left(t: &Path) {
    assert!(!t.join("root/out").exists(), "the partial tree must be removed");
    for outside in [t.join("etc"), t.join("root/etc")] {
        let names: Vec<_> = fs::read_dir(&outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["shadow"], "nothing was added beside {}", outside.display());
        assert_eq!(fs::read(outside.join("shadow")).unwrap(), b"secret");
    }
}

/// Proves the attack is real: the same links made by hand in a scratch tree
/// do resolve outside it, so the unpacker's refusal is what stops it.
fn kernel_escapes(links: &[(&str, &str)], probe: &str) -> bool {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("deep/er/root");
    fs::create_dir_all(&root).unwrap();
    for (path, target) in links {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &p).unwrap();
    }
    let resolved = fs::canonicalize(root.join(probe)).unwrap();
    !resolved.starts_with(fs::canonicalize(&root).unwrap())
}

/// The audit's chain: `a/b/up -> ../..` points at the root (fine alone),
/// and `esc -> a/b/up/../../etc/shadow` reads as staying inside, but
/// through `up` it climbs out. The one-step form is refused as well.
#[test]
fn a_two_step_chain_through_an_earlier_link_is_refused() {
    assert!(
        kernel_escapes(&[("a/b/up", "../..")], "a/b/up/.."),
        "the chain escapes on a real filesystem"
    );
    let (t, r) = unpack(&[
        Member::dir("a/b"),
        Member::symlink("a/b/up", "../.."),
        Member::symlink("esc", "a/b/up/../../etc/shadow"),
    ]);
    let err = r.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, UnpackError::SymlinkEscapes { .. }), "{msg}");
    assert!(
        msg.contains("`esc`")
            && msg.contains("a/b/up/../../etc/shadow")
            && msg.contains("by way of the symlink `a/b/up`"),
        "names the link, its target and the link it went through: {msg}"
    );
    assert!(msg.contains("attack.tar"), "names the archive: {msg}");
    assert_nothing_left(t.path());

    let (t, r) = unpack(&[
        Member::symlink("a/b/up", "../../.."),
        Member::symlink("esc", "a/b/up/etc/shadow"),
    ]);
    let err = r.unwrap_err();
    assert!(
        matches!(&err, UnpackError::SymlinkEscapes { entry, .. } if entry == "a/b/up"),
        "{err}"
    );
    assert_nothing_left(t.path());
}

/// A link to a link to a link: `d/l1 -> ..`, `d/l2 -> l1`, then
/// `esc -> d/l2/../etc`: only following both links shows the escape.
#[test]
fn a_chain_of_links_to_links_is_followed_to_the_end() {
    assert!(kernel_escapes(&[("d/l1", ".."), ("d/l2", "l1")], "d/l2/.."));
    let (t, r) = unpack(&[
        Member::dir("d"),
        Member::symlink("d/l1", ".."),
        Member::symlink("d/l2", "l1"),
        Member::symlink("esc", "d/l2/../etc"),
    ]);
    let err = r.unwrap_err();
    assert!(
        matches!(&err, UnpackError::SymlinkEscapes { entry, .. } if entry == "esc"),
        "{err}"
    );
    assert!(err.to_string().contains("by way of the symlink `d/l1`"), "{err}");
    assert_nothing_left(t.path());
}

/// The order attack: `d/esc -> x/../..` is inside while `d/x` does not
/// exist (it reads as `d/x/../..` = the root); a later `d/x -> .` would turn
/// it into `d/../..`, one level above the root. The later member is refused.
#[test]
fn a_later_symlink_that_would_redirect_an_earlier_link_is_refused() {
    assert!(kernel_escapes(&[("d/esc", "x/../.."), ("d/x", ".")], "d/esc"));
    let (t, r) = unpack(&[
        Member::dir("d"),
        Member::symlink("d/esc", "x/../.."),
        Member::symlink("d/x", "."),
    ]);
    let err = r.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, UnpackError::ChangesEarlierLink { entry, link, .. } if entry == "d/x" && link == "d/esc"),
        "{msg}"
    );
    assert!(msg.contains("`d/x`") && msg.contains("`d/esc`"), "{msg}");
    assert_nothing_left(t.path());
}

/// A link the resolution followed may not be replaced afterwards, neither
/// by another symlink nor by a directory (which moves `..` elsewhere).
#[test]
fn replacing_a_link_an_earlier_link_went_through_is_refused() {
    // d/a -> s/.. is the root while d/s -> . ; with d/s -> .. it is above it.
    assert!(kernel_escapes(&[("d/s", ".."), ("d/a", "s/..")], "d/a"));
    for replacement in [Member::symlink("d/s", ".."), Member::dir("d/s")] {
        let (t, r) = unpack(&[
            Member::dir("d"),
            Member::symlink("d/s", "."),
            Member::symlink("d/a", "s/.."),
            replacement,
        ]);
        let err = r.unwrap_err();
        assert!(
            matches!(&err, UnpackError::ChangesEarlierLink { path, link, .. } if path == "d/s" && link == "d/a"),
            "{err}"
        );
        assert_nothing_left(t.path());
    }
}

/// Hard links: to a path outside, through a symlinked parent, and to a
/// symlink. link(2) links the symlink itself, so `x` would be a new
/// `../..` link read from the root: above it.
#[test]
fn hard_links_outside_through_links_and_to_escaping_symlinks_are_refused() {
    let (t, r) = unpack(&[Member::hardlink("h", "../../etc/shadow")]);
    assert!(matches!(r.unwrap_err(), UnpackError::UnsafePath { .. }));
    assert_nothing_left(t.path());

    let (t, r) = unpack(&[Member::symlink("l", "/etc"), Member::hardlink("h", "l/shadow")]);
    assert!(matches!(r.unwrap_err(), UnpackError::ThroughSymlink { .. }));
    assert_nothing_left(t.path());

    let (t, r) = unpack(&[
        Member::dir("a/b"),
        Member::symlink("a/b/up", "../.."),
        Member::hardlink("x", "a/b/up"),
    ]);
    let err = r.unwrap_err();
    assert!(
        matches!(&err, UnpackError::SymlinkEscapes { entry, target, .. } if entry == "x" && target == "../.."),
        "{err}"
    );
    assert_nothing_left(t.path());

    // A hard link to a symlink may not redirect an earlier link either.
    let (t, r) = unpack(&[
        Member::dir("d"),
        Member::symlink("d/esc", "x/../.."),
        Member::symlink("d/dot", "."),
        Member::hardlink("d/x", "d/dot"),
    ]);
    assert!(matches!(r.unwrap_err(), UnpackError::ChangesEarlierLink { .. }));
    assert_nothing_left(t.path());
}

/// Absolute links are kept as they are, but a relative link that goes
/// through one is resolved from the root and may not climb past it.
#[test]
fn a_relative_link_through_an_absolute_one_may_not_climb_out() {
    let (t, r) = unpack(&[Member::symlink("abs", "/"), Member::symlink("esc", "abs/../etc/shadow")]);
    let err = r.unwrap_err();
    assert!(
        matches!(&err, UnpackError::SymlinkEscapes { entry, .. } if entry == "esc"),
        "{err}"
    );
    assert_nothing_left(t.path());
}

/// Writing a file through a chain is refused like writing through one link.
#[test]
fn a_member_under_a_symlink_is_refused() {
    let (t, r) = unpack(&[
        Member::dir("a/b"),
        Member::symlink("a/b/up", "../.."),
        Member::file("a/b/up/etc/shadow", b"pwned"),
    ]);
    assert!(matches!(r.unwrap_err(), UnpackError::ThroughSymlink { .. }));
    assert_nothing_left(t.path());
}

/// A loop is refused rather than followed forever.
#[test]
fn a_symlink_loop_is_refused() {
    let (t, r) = unpack(&[
        Member::symlink("l1", "l2"),
        Member::symlink("l2", "l1"),
        Member::symlink("esc", "l1/x"),
    ]);
    let err = r.unwrap_err();
    assert!(err.to_string().contains("more than 40 links"), "{err}");
    assert_nothing_left(t.path());
}

/// What real packages do still unpacks: links to directories made later
/// (`usr/bin/java -> ../lib/jvm/default/bin/java` before
/// `usr/lib/jvm/default -> java-17`), links through links that stay below
/// them, merged-/usr style links, and a later member replacing a link no
/// other link went through.
#[test]
fn real_package_shapes_still_unpack() {
    let (t, r) = unpack(&[
        Member::dir("usr/bin"),
        Member::symlink("usr/bin/java", "../lib/jvm/default/bin/java"),
        Member::dir("usr/lib/jvm/java-17/bin"),
        Member::file("usr/lib/jvm/java-17/bin/java", b"#!java"),
        Member::symlink("usr/lib/jvm/default", "java-17"),
        Member::symlink("lib", "usr/lib"),
        Member::dir("lib64"),
        Member::symlink("lib64/ld.so", "../lib/jvm/java-17/bin/java"),
        Member::symlink("usr/share/doc/p", "../../lib/jvm/default/../java-17"),
        Member::symlink("usr/share/doc/q", "p"),
        Member::symlink("usr/share/doc/q", "../../lib"),
        Member::symlink("abs", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
    ]);
    let stats = r.unwrap();
    assert_eq!(stats.symlinks, 8);
    let out = t.path().join("root/out");
    assert_eq!(
        fs::read(out.join("usr/bin/java")).unwrap(),
        b"#!java",
        "the chain resolves inside"
    );
    assert_eq!(fs::read(out.join("lib64/ld.so")).unwrap(), b"#!java");
    assert_eq!(
        fs::read_link(out.join("usr/share/doc/q")).unwrap(),
        Path::new("../../lib")
    );
}
