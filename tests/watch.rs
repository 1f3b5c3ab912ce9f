//! `farm build --watch`: one edit of a backend file, one backend rebuild;
//! SIGINT ends it cleanly. Waits are for output lines, with deadlines.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use common::farm;
use farm_testkit::shared_farm_home;

#[test]
fn editing_a_backend_file_triggers_exactly_one_backend_rebuild() {
    let Some(dir) = common::fetched_example() else { return };
    let p = dir.path();
    let home = shared_farm_home();

    let mut child = farm(p, &home, &["build", "--hermetic", "--watch", "backend"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("farm: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str, deadline: Duration| -> String {
        let until = std::time::Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => continue,
                Err(_) => panic!("no line containing {needle:?} within {deadline:?}"),
            }
        }
    };
    wait_for("[watch] watching for changes", Duration::from_secs(180));

    let main_py = p.join("apps/api/app/main.py");
    let mut text = std::fs::read_to_string(&main_py).unwrap();
    // Unique, so the shared store's action cache has never seen this source.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    text.push_str(&format!("\n# edited while watching {nanos}\n"));
    std::fs::write(&main_py, text).unwrap();
    let line = wait_for("[watch] rebuilt", Duration::from_secs(180));
    assert!(line.contains("apps/api/app/main.py"), "names the change: {line}");
    assert!(line.contains("ran backend"), "the backend step ran: {line}");

    // SIGINT: a clean stop; the remaining output has no second rebuild.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut rest = Vec::new();
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while let Ok(l) = rx.recv_timeout(until.saturating_duration_since(std::time::Instant::now())) {
        rest.push(l);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "Ctrl-C exits cleanly: {status:?}");
    assert!(rest.iter().any(|l| l.contains("[watch] stopped")), "{rest:?}");
    assert!(
        !rest.iter().any(|l| l.contains("[watch] rebuilt")),
        "exactly one rebuild: {rest:?}"
    );
}
