//! farm.toml `[cache]` (spec/farm-toml.md, spec/store.md "The `[cache]`
//! policy"): after each successful build and on `farm cache gc`, build
//! products past the size limit go least recently used first, and those
//! unused for the TTL go; the last build's entries and everything a lock
//! fetched stay. `farm cache status` shows the policy. Access times are set
//! in the store's database directly (its schema is in spec/store.md), so no
//! test waits on the clock.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{farm, run, stderr, stdout};
use farm_store::{Store, StoreEntry};

/// Adds a build product (kind `output`) of exactly `bytes` bytes.
fn product(store: &Store, name: &str, bytes: usize) -> StoreEntry {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, name.bytes().cycle().take(bytes).collect::<Vec<u8>>()).unwrap();
    store.add_file(&f, name, "output").unwrap()
}

/// Marks `file_name` (every entry and action-cache row when None) as last used `days` ago.
fn age(home: &Path, file_name: Option<&str>, days: i64) {
    let db = rusqlite::Connection::open(home.join("farm.db")).unwrap();
    let when = format!("strftime('%s', 'now') - {}", days * 86_400);
    match file_name {
        Some(f) => db.execute(
            &format!("UPDATE entries SET last_access = {when} WHERE file_name = ?1"),
            [f],
        ),
        None => db
            .execute(&format!("UPDATE entries SET last_access = {when}"), [])
            .and_then(|_| db.execute(&format!("UPDATE actions SET last_access = {when}"), [])),
    }
    .unwrap();
}

fn entries(home: &Path) -> BTreeSet<String> {
    std::fs::read_dir(home.join("store"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write_project(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("farm.toml"),
        format!("[project]\nname = \"t\"\nversion = \"1\"\n{extra}"),
    )
    .unwrap();
}

/// `farm cache status` shows the configured limit, TTL, the build products'
/// size and what the policy would evict; `farm cache gc --dry-run` deletes
/// nothing; `farm cache gc` evicts exactly that: the product unused for
/// longer than the TTL, then the least recently used until the rest fits,
/// never the last build's entry (over the limit or not) nor a fetched one.
#[test]
fn cache_gc_applies_the_policy_that_status_shows() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    write_project(p.path(), "\n[cache]\nmax-size = \"1200\"\nttl = \"7d\"\n");
    let store = Store::open(home.path()).unwrap();
    let fetched = product(&store, "fetched", 4000);
    store.record_artifact("sha256:0123", &fetched).unwrap();
    // In order of last use: a, kept, stale, b, c.
    let a = product(&store, "a", 600);
    let kept = product(&store, "kept", 800);
    let stale = product(&store, "stale", 100);
    let b = product(&store, "b", 600);
    let c = product(&store, "c", 300);
    drop(store);
    age(home.path(), None, 2);
    age(home.path(), Some(&stale.file_name()), 10);
    std::fs::create_dir_all(p.path().join(".farm")).unwrap();
    std::fs::write(
        p.path().join(".farm/last-build.json"),
        serde_json::json!({"steps": {}, "entries": [kept.file_name()]}).to_string(),
    )
    .unwrap();

    let v = json(&run(&mut farm(p.path(), home.path(), &["cache", "status", "--json"])));
    let policy = &v["policy"];
    assert_eq!(policy["max_size"], 1200, "{v}");
    assert_eq!(policy["ttl_secs"], 7 * 86_400, "{v}");
    assert_eq!(
        policy["build_products_bytes"],
        600 + 800 + 100 + 600 + 300,
        "fetched not counted: {v}"
    );
    let would: Vec<String> = policy["would_evict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    // TTL takes stale (2300 left), then LRU: a (1700), b (1100 <= 1200).
    assert_eq!(would, [a.file_name(), stale.file_name(), b.file_name()], "{v}");
    assert!(policy["last_gc"].is_null(), "{v}");
    let table = run(&mut farm(p.path(), home.path(), &["cache", "status"]));
    let text = stdout(&table);
    assert!(
        text.contains("cache policy: max-size 1.2 KiB, ttl 7d ([cache] in "),
        "{text}"
    );
    assert!(text.contains("build products: 2.3 KiB"), "{text}");
    assert!(text.contains("would evict now: 3 entries, 1.3 KiB"), "{text}");
    assert!(text.contains("last applied: never"), "{text}");

    let before = entries(home.path());
    assert!(run(&mut farm(p.path(), home.path(), &["cache", "gc", "--dry-run"]))
        .status
        .success());
    assert_eq!(entries(home.path()), before, "a dry run deletes nothing");

    let gc = run(&mut farm(p.path(), home.path(), &["cache", "gc"]));
    assert!(gc.status.success());
    assert!(stderr(&gc).contains("deleted 3 entries"), "{}", stderr(&gc));
    let left = entries(home.path());
    let expected: BTreeSet<String> = [&fetched, &kept, &c].iter().map(|e| e.file_name()).collect();
    assert_eq!(left, expected);
    let tmp: Vec<_> = std::fs::read_dir(home.path().join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "no staging left behind: {tmp:?}");

    let v = json(&run(&mut farm(p.path(), home.path(), &["cache", "status", "--json"])));
    let last = &v["policy"]["last_gc"];
    assert_eq!(last["trigger"], "gc", "{v}");
    assert_eq!(last["freed"], 600 + 100 + 600, "{v}");
    assert_eq!(last["remaining"], 800 + 300, "{v}");
    assert_eq!(v["policy"]["would_evict"], serde_json::json!([]), "{v}");
}

/// With `[cache] max-size = "none"` and `ttl = "none"` nothing is evicted,
/// however old and large; without `[cache]` status names farm's defaults.
#[test]
fn none_turns_the_limits_off_and_defaults_are_shown() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    write_project(p.path(), "");
    let table = stdout(&run(&mut farm(p.path(), home.path(), &["cache", "status"])));
    assert!(
        table.contains("cache policy: max-size 5.0 GiB, ttl 7d (farm's defaults; farm.toml sets no [cache])"),
        "{table}"
    );

    write_project(p.path(), "\n[cache]\nmax-size = \"none\"\nttl = \"none\"\n");
    let store = Store::open(home.path()).unwrap();
    let old = product(&store, "old", 5000);
    drop(store);
    age(home.path(), None, 400);
    let v = json(&run(&mut farm(p.path(), home.path(), &["cache", "status", "--json"])));
    assert!(
        v["policy"]["max_size"].is_null() && v["policy"]["ttl_secs"].is_null(),
        "{v}"
    );
    assert!(run(&mut farm(p.path(), home.path(), &["cache", "gc"])).status.success());
    assert!(old.path.exists());
}

/// A bad `[cache]` value is refused by every command that reads farm.toml,
/// naming the field and the value found; nothing is deleted.
#[test]
fn bad_cache_values_name_the_field_and_what_was_found() {
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let store = Store::open(home.path()).unwrap();
    let old = product(&store, "old", 100);
    drop(store);
    age(home.path(), None, 30);
    for (section, want) in [
        (
            "max-size = \"5 gigs\"",
            vec!["cache.max-size", "`5 gigs`", "unknown unit `gigs`"],
        ),
        ("max-size = \"-1\"", vec!["cache.max-size", "`-1`"]),
        ("ttl = \"3y\"", vec!["cache.ttl", "`3y`", "unknown unit `y`"]),
        ("ttl = \"30\"", vec!["cache.ttl", "`30`", "needs a unit"]),
        ("ttl = \"0d\"", vec!["cache.ttl", "`0d`", "above 0"]),
        ("max-size = 5", vec!["farm.toml:6:", "integer `5`", "expected a string"]),
        (
            "maxsize = \"1G\"",
            vec!["farm.toml:6:", "unknown field `maxsize`", "`max-size`"],
        ),
    ] {
        write_project(p.path(), &format!("\n[cache]\n{section}\n"));
        for args in [&["cache", "status"][..], &["cache", "gc"]] {
            let out = run(&mut farm(p.path(), home.path(), args));
            assert!(!out.status.success(), "{section}: {args:?} succeeded");
            let err = stderr(&out);
            for w in &want {
                assert!(err.contains(w), "{section}: {args:?}: no {w:?} in {err}");
            }
        }
        assert!(old.path.exists(), "{section}: nothing deleted");
    }
}

/// A successful `farm build` applies the policy: old build products past
/// the limit go, while the fetched model blobs and the build's own entries
/// stay, even with a 1-byte limit and once they are old themselves (they
/// are the last build's); the next build is then entirely cached.
#[test]
fn a_successful_build_applies_the_policy_and_keeps_its_own_entries() {
    if !farm_testkit::require_tool("docker-registry") || !farm_testkit::require_tool("python3") {
        return;
    }
    let registry = farm_testkit::Registry::start();
    common::seed_model(&registry.url);
    let p = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    write_project(
        p.path(),
        "\n[models]\nregistry = \"${FARM_OLLAMA_REGISTRY}\"\nhost = \"models.test.internal\"\nmodels = [\"farm-tiny:latest\"]\n\n[cache]\nmax-size = \"1\"\nttl = \"7d\"\n",
    );
    let with_registry = |args: &[&str]| {
        let mut c = farm(p.path(), home.path(), args);
        c.env("FARM_OLLAMA_REGISTRY", &registry.url);
        run(&mut c)
    };
    assert!(with_registry(&["lock"]).status.success());
    assert!(with_registry(&["fetch"]).status.success());
    let fetched = entries(home.path());
    assert!(!fetched.is_empty());
    let store = Store::open(home.path()).unwrap();
    let junk = [product(&store, "junk-1", 1000), product(&store, "junk-2", 1000)];
    drop(store);
    age(home.path(), None, 2);

    let build = with_registry(&["build"]);
    assert!(build.status.success(), "{}", stderr(&build));
    assert!(
        stderr(&build).contains("cache policy: evicted 2 build products"),
        "{}",
        stderr(&build)
    );
    assert!(junk.iter().all(|j| !j.path.exists()), "old products past the limit go");
    let after = entries(home.path());
    assert!(after.is_superset(&fetched), "fetched entries stay");
    let own: BTreeSet<String> = after.difference(&fetched).cloned().collect();
    assert!(!own.is_empty(), "the build made entries");
    let v = json(&run(&mut farm(p.path(), home.path(), &["cache", "status", "--json"])));
    assert_eq!(v["policy"]["last_gc"]["trigger"], "build", "{v}");
    assert_eq!(v["policy"]["last_gc"]["removed"].as_array().unwrap().len(), 2, "{v}");

    // Old now, and over the limit: the last build's entries still stay.
    age(home.path(), None, 30);
    assert!(run(&mut farm(p.path(), home.path(), &["cache", "gc"])).status.success());
    assert_eq!(entries(home.path()), after);
    assert!(with_registry(&["build"]).status.success());
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(p.path().join(".farm/out/farm-metrics.json")).unwrap()).unwrap();
    assert_eq!(
        metrics["cache_misses"], 0,
        "the kept entries' action rows stay too: {metrics}"
    );
}
