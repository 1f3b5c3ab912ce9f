//! farm's layouts read by independent OCI tools that share none of its
//! code: skopeo (containers/image), umoci (unpacks and verifies diffIDs)
//! and oci-image-tool (the image-spec's own validator).

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::*;
use farm_images::{build_image, BuiltImage, Compression};
use farm_testkit::{require_root, require_tool};

fn build(root: &Path, compression: Compression) -> (std::path::PathBuf, BuiltImage) {
    let s = sources(&root.join("src"));
    let mut spec = app_spec(&s);
    spec.compression = compression;
    let out = root.join("layout");
    let built = build_image(&spec, &out, None).unwrap();
    (out, built)
}

fn skopeo_inspect(layout: &Path, built: &BuiltImage) {
    let out = run(Command::new("skopeo").args(["inspect", &format!("oci:{}:0.1.0", layout.display())]));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["Digest"], built.manifest_digest.to_string());
    let layers: Vec<String> = built.layers.iter().map(|l| l.digest.to_string()).collect();
    assert_eq!(info["Layers"], serde_json::json!(layers));
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Os"], "linux");
    assert_eq!(info["Created"], "2023-11-14T22:13:20Z");
    assert_eq!(info["Labels"]["dev.farm.example"], "yes");

    let config = run(Command::new("skopeo").args(["inspect", "--config", &format!("oci:{}:0.1.0", layout.display())]));
    let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
    let diff_ids: Vec<String> = built.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
}

/// Proves skopeo reads the gzip layout: manifest digest, layers, platform,
/// creation date and labels as farm reported them.
#[test]
fn skopeo_inspects_the_gzip_layout() {
    if !require_tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (layout, built) = build(tmp.path(), Compression::Gzip);
    skopeo_inspect(&layout, &built);
}

/// Proves the zstd variant is readable too, and that skopeo can copy it
/// (decompressing every layer) into a fresh layout.
#[test]
fn skopeo_inspects_and_copies_the_zstd_layout() {
    if !require_tool("skopeo") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (layout, built) = build(tmp.path(), Compression::Zstd);
    skopeo_inspect(&layout, &built);
    let copy = tmp.path().join("copy");
    run(Command::new("skopeo").args([
        "copy",
        "--dest-decompress",
        &format!("oci:{}:0.1.0", layout.display()),
        &format!("oci:{}:copied", copy.display()),
    ]));
    let out = run(Command::new("skopeo").args(["inspect", "--config", &format!("oci:{}:copied", copy.display())]));
    let config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][3], built.layers[3].diff_id.to_string());
}

/// Proves the layers unpack as specified: umoci (which checks each layer
/// against its diffID) yields the files with the mapped modes, the given
/// owners, root-owned implied parents, the symlink and the hardlink.
#[test]
fn umoci_unpacks_files_with_the_right_modes_and_owners() {
    umoci_unpacks(Compression::Gzip);
}

/// Proves the same for zstd layers where umoci reads them (0.5.0 and
/// later): umoci decompresses each and checks it against its diffID. An
/// older umoci (Debian 12 ships 0.4.7) must refuse for the media type
/// alone, having read the index, manifest and config; skopeo and Podman
/// read the zstd layers in their own tests.
#[test]
fn umoci_unpacks_the_zstd_layout() {
    if !require_tool("umoci") || !require_root() {
        return;
    }
    let version = run(Command::new("umoci").arg("--version"));
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let numbers: Vec<u32> = version
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or("")
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "umoci --version: {version}");
    if (numbers[0], numbers[1]) >= (0, 5) {
        umoci_unpacks(Compression::Zstd);
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (layout, built) = build(tmp.path(), Compression::Zstd);
    let out = Command::new("umoci")
        .args(["unpack", "--image", &format!("{}:0.1.0", layout.display())])
        .arg(tmp.path().join("bundle"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!("layer {}", built.layers[0].digest))
            && err.contains("not correct mediatype: application/vnd.oci.image.layer.v1.tar+zstd"),
        "{}: expected only the zstd media type refused:\n{err}",
        version.trim()
    );
    eprintln!(
        "NOT VERIFIED: {} predates zstd layers (umoci 0.5.0); it refused only their media type",
        version.trim()
    );
}

fn umoci_unpacks(compression: Compression) {
    if !require_tool("umoci") || !require_root() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = build(tmp.path(), compression);
    let bundle = tmp.path().join("bundle");
    run(Command::new("umoci").args([
        "unpack",
        "--image",
        &format!("{}:0.1.0", layout.display()),
        bundle.to_str().unwrap(),
    ]));
    let rootfs = bundle.join("rootfs");
    let stat = |p: &str| fs::symlink_metadata(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let check = |p: &str, mode: u32, owner: u32| {
        let m = stat(p);
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (mode, owner, owner),
            "{p}: mode/uid/gid"
        );
    };
    check("bin/busybox", 0o755, 0);
    check("etc/passwd", 0o644, 0);
    check("usr", 0o755, 0);
    check("usr/local/lib/python3.11/site-packages", 0o755, 0);
    check("usr/local/lib/python3.11/site-packages/fastapi/__init__.py", 0o644, 0);
    check("usr/local/lib/python3.11/site-packages/bin/uvicorn", 0o755, 0);
    check("app", 0o755, 1000);
    check("app/main.py", 0o644, 1000);
    check("app/run.sh", 0o755, 1000);
    check("app/static/index.html", 0o644, 1000);
    assert_eq!(
        fs::read_link(rootfs.join("app/model")).unwrap(),
        Path::new("data/model.txt")
    );
    assert_eq!(
        stat("app/data/model.txt").ino(),
        stat("app/data/model-alias.txt").ino(),
        "the hardlink is kept"
    );
    assert_eq!(fs::read(rootfs.join("app/data/model-alias.txt")).unwrap(), b"weights");
    assert_eq!(
        stat("app/main.py").mtime(),
        1,
        "store mtimes (below the epoch) are kept"
    );
    let busybox = fs::read(rootfs.join("bin/busybox")).unwrap();
    assert!(
        busybox == fs::read(tmp.path().join("src/base/bin/busybox")).unwrap(),
        "file contents survive"
    );

    // umoci writes the runtime config from the image config.
    let runtime = json(&bundle.join("config.json"));
    assert_eq!(runtime["process"]["cwd"], "/app");
    assert_eq!(runtime["process"]["user"]["uid"], 1000);
    assert_eq!(
        runtime["process"]["args"],
        serde_json::json!(["/bin/sh", "-c", "echo hi"])
    );
}

/// Proves the layout validates against the image-spec with its reference
/// validator.
#[test]
fn oci_image_tool_validates_the_layout() {
    if !require_tool("oci-image-tool") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (layout, _) = build(tmp.path(), Compression::Gzip);
    let out = run(Command::new("oci-image-tool").args([
        "validate",
        "--type",
        "image",
        "--ref",
        "name=0.1.0",
        layout.to_str().unwrap(),
    ]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Validation succeeded"), "{text}");
}

/// Proves GNU tar reads farm's PAX headers: a path and a symlink target too
/// long for ustar come back whole, and `tar --list` shows no PaxHeaders files.
#[test]
fn gnu_tar_extracts_names_only_pax_can_hold() {
    if !require_tool("tar") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let long_dir = "d".repeat(120);
    let long_file = "f".repeat(130);
    write(&src.join(&long_dir).join(&long_file), b"deep\n", 0o444);
    std::os::unix::fs::symlink("t".repeat(150), src.join("link")).unwrap();
    let mut spec = farm_images::ImageSpec::new("pax", "1", EPOCH);
    spec.layers = vec![farm_images::LayerSpec {
        name: "long".into(),
        contents: vec![farm_images::LayerContent {
            source: src,
            target: "/x".into(),
            uid: 0,
            gid: 0,
        }],
    }];
    let layout = tmp.path().join("layout");
    let built = build_image(&spec, &layout, None).unwrap();
    let layer = blob(&layout, &built.layers[0].digest.to_string());
    let listing = run(Command::new("tar").arg("-tzf").arg(&layer));
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(!listing.contains("PaxHeaders"), "{listing}");
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).unwrap();
    run(Command::new("tar").arg("-xzf").arg(&layer).arg("-C").arg(&out));
    assert_eq!(
        fs::read(out.join("x").join(&long_dir).join(&long_file)).unwrap(),
        b"deep\n"
    );
    assert_eq!(fs::read_link(out.join("x/link")).unwrap(), Path::new(&"t".repeat(150)));
}
