//! Remote execution against a real REAPI server (BuildGrid): the blobs
//! farm uploads for a step's input root make its store entries whole in
//! the CAS, so a worker can write them back out bit for bit, and a second
//! upload finds them there (FindMissingBlobs) and sends nothing; farm's
//! worker (Remote Workers API) takes a lease from BuildGrid with its
//! `!execution` service, runs the Command in farm's sandbox and reports an
//! ActionResult whose `out` holds what the command wrote from its inputs;
//! a command that tries the network on the worker fails, as it does in a
//! local step's sandbox.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use common::remote_client;
use farm_engine::remote_cache::entry_blobs;
use farm_remote::tree::{file_digest, MerkleTree};
use farm_remote::{Client, RemoteConfig};
use farm_store::Store;
use farm_testkit::buildgrid::BuildGrid;
use farm_testkit::buildgrid_exec::{pg_bin, BuildGridExec};
use farm_testkit::{require, require_root, require_tool, wait_until};

/// A directory entry and a file entry uploaded with `entry_blobs` come
/// back from the CAS identical (same Merkle root, same bytes), and are
/// not sent twice.
#[test]
fn input_store_entries_are_uploaded_whole() {
    if !require_tool("bgd") {
        return;
    }
    let server = BuildGrid::start();
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    let staging = store.temp_dir().unwrap();
    let tree = staging.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    std::fs::set_permissions(tree.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(tree.join("data.txt"), "input data\n").unwrap();
    std::os::unix::fs::symlink("data.txt", tree.join("alias")).unwrap();
    let dir_entry = store.adopt_tree(&tree, "inputs-tree", "test").unwrap();
    let file = staging.path().join("blob.bin");
    std::fs::write(&file, vec![7u8; 100_000]).unwrap();
    let file_entry = store.adopt_file(&file, "inputs-file", "test").unwrap();

    let (rt, client) = remote_client(&server.url);
    let entries = [dir_entry.clone(), file_entry.clone()];
    let sent = rt.block_on(client.upload(entry_blobs(&entries).unwrap())).unwrap();
    assert!(sent >= 100_000, "the file entry was sent ({sent} bytes)");
    let again = rt.block_on(client.upload(entry_blobs(&entries).unwrap())).unwrap();
    assert_eq!(again, 0, "entries already in the CAS are not sent again");

    let root = MerkleTree::of(&dir_entry.path).unwrap().root;
    let out = tempfile::tempdir().unwrap();
    let back = out.path().join("tree");
    rt.block_on(client.materialize(&root, &back)).unwrap();
    assert_eq!(MerkleTree::of(&back).unwrap().root, root);
    assert_eq!(std::fs::read(back.join("bin/tool")).unwrap(), b"#!/bin/sh\necho tool\n");
    let file_d = file_digest(&file_entry.path).unwrap();
    assert_eq!(rt.block_on(client.read_blob(&file_d)).unwrap(), vec![7u8; 100_000]);
}

fn platform() -> farm_remote::proto::Platform {
    let isa = match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        other => other,
    };
    farm_remote::proto::Platform {
        properties: [("ISA", isa), ("OSFamily", "linux"), ("farm-sandbox", "host")]
            .iter()
            .map(|(n, v)| farm_remote::proto::platform::Property {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
    }
}

/// Uploads an Action running `script` with `/bin/sh -c` over `input`; its digest.
fn action(rt: &tokio::runtime::Runtime, client: &Client, input: &std::path::Path, script: &str) -> farm_remote::Digest {
    use farm_remote::proto::{Action, Command};
    use farm_remote::{encode, BlobData};
    let tree = MerkleTree::of(input).unwrap();
    rt.block_on(client.upload_tree(&tree)).unwrap();
    let command = Command {
        arguments: vec!["/bin/sh".into(), "-c".into(), script.into()],
        output_paths: vec!["out".into()],
        environment_variables: vec![farm_remote::proto::command::EnvironmentVariable {
            name: "PATH".into(),
            value: "/usr/bin:/bin".into(),
        }],
        ..Default::default()
    };
    let (cmd_d, cmd_b) = encode(&command);
    let a = Action {
        command_digest: Some(cmd_d.clone()),
        input_root_digest: Some(tree.root.clone()),
        platform: Some(platform()),
        do_not_cache: true,
        ..Default::default()
    };
    let (a_d, a_b) = encode(&a);
    rt.block_on(client.upload(vec![
        (cmd_d, BlobData::Bytes(cmd_b)),
        (a_d.clone(), BlobData::Bytes(a_b)),
    ]))
    .unwrap();
    a_d
}

/// Runs `body` with a farm worker of BuildGrid `server` serving in this
/// process (its own store, the native sandbox or a container) and a
/// client of the server; the worker is stopped and joined however `body`
/// ends.
fn with_worker(
    server: &BuildGridExec,
    name: &str,
    body: impl FnOnce(&farm_engine::worker::WorkerOptions, &tokio::runtime::Runtime, &Client),
) {
    let work = tempfile::tempdir().unwrap();
    let opts = farm_engine::worker::WorkerOptions {
        server: RemoteConfig {
            url: server.url.clone(),
            ..Default::default()
        },
        jobs: 1,
        name: name.into(),
        store: Store::open(work.path().join("w")).unwrap(),
        executor: farm_engine::executor::select(farm_engine::executor::SandboxChoice::Auto).unwrap(),
        timeout: std::time::Duration::from_secs(600),
        max_size: None,
        ttl: None,
    };
    let stop = std::sync::atomic::AtomicBool::new(false);
    /// Stops the worker however the test ends, so the scope can join it.
    struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let worker = s.spawn(|| farm_engine::worker::serve(&opts, &stop));
        let stopper = Stop(&stop);
        let (rt, client) = remote_client(&server.url);
        body(&opts, &rt, &client);
        drop(stopper);
        worker.join().unwrap().unwrap();
    });
}

/// A farm worker runs a leased Action in the sandbox: its output comes
/// back through the CAS; the network is off on the worker.
#[test]
fn a_farm_worker_runs_leased_actions_in_the_sandbox() {
    if !require_tool("bgd")
        || !require(pg_bin().is_some(), "PostgreSQL's initdb under /usr/lib/postgresql")
        || !require_root()
    {
        return;
    }
    let server = BuildGridExec::start();
    with_worker(&server, "test-worker", |opts, rt, client| {
        // The input root holds a store entry under its store file name.
        let input = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        std::fs::write(data.path().join("data.txt"), "from the CAS\n").unwrap();
        let digest = farm_store::tree_digest(data.path()).unwrap();
        let entry = format!("{}-inp-data", digest.to_hex());
        std::fs::create_dir_all(input.path().join("farm/store").join(&entry)).unwrap();
        std::fs::write(
            input.path().join("farm/store").join(&entry).join("data.txt"),
            "from the CAS\n",
        )
        .unwrap();

        // Inputs in, outputs out.
        let ok = action(
            rt,
            client,
            input.path(),
            &format!("mkdir -p /out/d && cat /farm/store/{entry}/data.txt > /out/d/a.txt && echo ran"),
        );
        let resp = rt.block_on(client.execute(&ok, true)).unwrap();
        assert_eq!(
            resp.status.clone().unwrap_or_default().code,
            0,
            "{:?}\n{}",
            resp.status,
            server.log()
        );
        let result = resp.result.unwrap();
        let log = rt
            .block_on(client.read_blob(result.stdout_digest.as_ref().unwrap()))
            .unwrap();
        assert_eq!(result.exit_code, 0, "log: {}", String::from_utf8_lossy(&log));
        assert_eq!(log, b"ran\n");
        let out = &result.output_directories[0];
        assert_eq!(out.path, "out");
        let back_dir = tempfile::tempdir().unwrap();
        let back = back_dir.path().join("back");
        rt.block_on(client.materialize(out.root_directory_digest.as_ref().unwrap(), &back))
            .unwrap();
        assert_eq!(std::fs::read(back.join("d/a.txt")).unwrap(), b"from the CAS\n");

        // The network is off: a connection to the server itself fails.
        let port = server.port;
        let net = action(
            rt,
            client,
            input.path(),
            &format!("python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3)\""),
        );
        let resp = rt.block_on(client.execute(&net, true)).unwrap();
        let result = resp.result.unwrap();
        let log = rt
            .block_on(client.read_blob(result.stdout_digest.as_ref().unwrap()))
            .unwrap();
        let log = String::from_utf8_lossy(&log);
        assert_ne!(result.exit_code, 0, "the connection succeeded: {log}");
        assert!(
            log.contains("Connection refused") || log.contains("unreachable"),
            "{log}"
        );
        assert!(result.output_directories.is_empty());
        // The same command on the host reaches the server: the sandbox made the difference.
        let host = std::process::Command::new("python3")
            .args([
                "-c",
                &format!("import socket; socket.create_connection(('127.0.0.1', {port}), 3)"),
            ])
            .status()
            .unwrap();
        assert!(host.success());

        // The worker's store now holds the entry, under the same name.
        assert!(opts.store.entry(&entry).unwrap().is_some());

        // An entry whose contents do not give the digest its name claims is
        // refused before anything runs.
        let lie = tempfile::tempdir().unwrap();
        let liar = format!("{}-inp-data", "ab".repeat(32));
        std::fs::create_dir_all(lie.path().join("farm/store").join(&liar)).unwrap();
        std::fs::write(lie.path().join("farm/store").join(&liar).join("data.txt"), "other\n").unwrap();
        let bad = action(rt, client, lie.path(), "echo never > /out/x");
        let resp = rt.block_on(client.execute(&bad, true)).unwrap();
        let status = resp.status.unwrap_or_default();
        assert_ne!(status.code, 0);
        assert!(
            status.message.contains(&liar) && status.message.contains("not the one its name gives"),
            "{}",
            status.message
        );
        assert!(opts.store.entry(&liar).unwrap().is_none());
    });
}

/// Whether a process's command line is `sleep <arg>` (scanning /proc).
fn sleeping(arg: &str) -> bool {
    let want = format!("sleep\0{arg}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()))
}

/// A client cancels the operation of a step running on a farm worker:
/// the server cancels the lease, the worker sees it on its next keepalive
/// and kills the step (its process is gone), and the worker goes on
/// serving: the next action runs.
#[test]
fn a_cancelled_operation_kills_the_step_on_the_worker() {
    if !require_tool("bgd")
        || !require(pg_bin().is_some(), "PostgreSQL's initdb under /usr/lib/postgresql")
        || !require_root()
    {
        return;
    }
    let server = BuildGridExec::start();
    with_worker(&server, "cancel-worker", |_, rt, client| {
        let empty = tempfile::tempdir().unwrap();
        // A sleep no other process has: its argument names this test run.
        let arg = format!("86399.{}", std::process::id());
        let slow = action(rt, client, empty.path(), &format!("exec sleep {arg}"));
        let name = rt.block_on(client.execute_start(&slow)).unwrap();
        assert!(
            wait_until(std::time::Duration::from_secs(60), || sleeping(&arg)),
            "the step never started:\n{}",
            server.log()
        );
        rt.block_on(client.cancel_operation(&name)).unwrap();
        assert!(
            wait_until(std::time::Duration::from_secs(30), || !sleeping(&arg)),
            "the cancelled step still runs"
        );
        // The worker serves the next lease.
        let next = action(rt, client, empty.path(), "echo after > /out/x");
        let resp = rt.block_on(client.execute(&next, true)).unwrap();
        assert_eq!(resp.result.unwrap().exit_code, 0);
    });
}
