//! Whole trees through a real CAS (BuildGrid, cache-only): a directory
//! uploaded with `upload_tree` comes back from `materialize` with the same
//! Merkle root (files, executable bits, symlinks, nested and large files),
//! a second upload sends nothing, and a root whose blobs are not in the CAS
//! fails naming the missing blob and leaves no directory behind.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use farm_remote::tree::MerkleTree;
use farm_remote::{digest_of, Client, Error, RemoteConfig};
use farm_testkit::buildgrid::BuildGrid;
use farm_testkit::require_tool;

/// upload_tree → materialize round-trips a tree bit for bit (same root).
#[test]
fn a_tree_round_trips_through_the_cas() {
    if !require_tool("bgd") {
        return;
    }
    let server = BuildGrid::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = RemoteConfig {
        url: server.url.clone(),
        ..Default::default()
    };
    let client = rt
        .block_on(Client::connect(
            &config,
            Duration::from_secs(5),
            Duration::from_secs(60),
        ))
        .unwrap();

    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("root");
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("a/b/f"), "hello").unwrap();
    std::fs::write(root.join("a/same"), "hello").unwrap();
    std::fs::write(root.join("x.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("x.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let big: Vec<u8> = (0..(3u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(root.join("a/big"), &big).unwrap();
    std::os::unix::fs::symlink("a/b/f", root.join("link")).unwrap();
    let tree = MerkleTree::of(&root).unwrap();

    let sent = rt.block_on(client.upload_tree(&tree)).unwrap();
    assert!(sent >= big.len() as u64, "the 3 MiB file was sent ({sent} bytes)");
    assert_eq!(
        rt.block_on(client.upload_tree(&tree)).unwrap(),
        0,
        "a second upload sends nothing"
    );

    let dst = tempfile::tempdir().unwrap();
    let out = dst.path().join("in");
    rt.block_on(client.materialize(&tree.root, &out)).unwrap();
    assert_eq!(MerkleTree::of(&out).unwrap().root, tree.root);
    assert_eq!(std::fs::read(out.join("a/big")).unwrap(), big);
    assert_eq!(std::fs::read_link(out.join("link")).unwrap().to_str(), Some("a/b/f"));
    assert!(out.join("empty").is_dir());
    assert_ne!(
        std::fs::metadata(out.join("x.sh")).unwrap().permissions().mode() & 0o111,
        0
    );

    // A root the CAS does not have: a clear error, nothing created.
    let absent = digest_of(b"no such directory message");
    let missing = dst.path().join("missing");
    let err = rt.block_on(client.materialize(&absent, &missing)).unwrap_err();
    assert!(matches!(err, Error::Missing { .. }), "{err}");
    assert!(err.to_string().contains(&absent.hash), "{err}");
    assert!(!missing.exists());
}
