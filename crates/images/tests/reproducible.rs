//! The image builder's guarantees, checked on the bytes it writes: two
//! builds are identical, a change touches only its layer, the cache skips
//! compression, failures leave an old layout alone, and the documents
//! carry what the spec says (no external tools needed).

mod common;

use std::fs;
use std::io::Read;

use common::*;
use farm_images::{build_image, write_docker_archive, Compression, ImageError, LayerContent, LayerSpec};
use sha2::{Digest, Sha256};

/// What farm's build manifest records of a build: its serialisation (run
/// facts such as cache hits are left out of it, so cold and warm agree).
fn identity(built: &farm_images::BuiltImage) -> String {
    serde_json::to_string(built).unwrap()
}

/// Proves reproducibility: the same spec built twice, from copies of the
/// sources at different host paths and with different (newer than epoch)
/// mtimes, gives identical digests and byte-identical layout directories.
#[test]
fn two_builds_from_different_places_are_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let s1 = sources(&tmp.path().join("one"));
    let s2 = sources(&tmp.path().join("elsewhere/two"));
    // Host mtimes after the epoch are clamped to it, so they must not matter.
    make_writable(&s2.app);
    fs::write(
        s2.app.join("main.py"),
        b"from fastapi import FastAPI\napp = FastAPI()\n",
    )
    .unwrap();
    set_mtimes(&s1.app, EPOCH + 60);
    set_mtimes(&s2.app, EPOCH + 86_400 * 365);

    let a = build_image(&app_spec(&s1), &tmp.path().join("a"), None).unwrap();
    let b = build_image(&app_spec(&s2), &tmp.path().join("b"), None).unwrap();
    assert_eq!(identity(&a), identity(&b), "same digests for the same inputs");
    assert_eq!(a.layers.len(), 4);
    let (fa, fb) = (files(&tmp.path().join("a")), files(&tmp.path().join("b")));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (path, bytes) in &fa {
        assert!(bytes == &fb[path], "{path} differs between the two builds");
    }
    // index.json's digest is what BuiltImage reports.
    let index = fs::read(tmp.path().join("a/index.json")).unwrap();
    assert_eq!(a.index_digest.hex(), hex::encode(Sha256::digest(&index)));
    // 4 layers + config + manifest.
    assert_eq!(fa.keys().filter(|k| k.starts_with("blobs/sha256/")).count(), 6);
}

/// Proves layering: changing one app file changes the app layer (and so
/// the config and manifest) but leaves base, deps and frontend untouched.
#[test]
fn a_changed_file_changes_only_its_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources(tmp.path());
    let before = build_image(&app_spec(&s), &tmp.path().join("before"), None).unwrap();
    make_writable(&s.app);
    fs::write(
        s.app.join("main.py"),
        b"from fastapi import FastAPI\napp = FastAPI(title='v2')\n",
    )
    .unwrap();
    normalise(&s.app);
    let after = build_image(&app_spec(&s), &tmp.path().join("after"), None).unwrap();
    for (b, a) in before.layers.iter().zip(&after.layers) {
        if b.name == "app" {
            assert_ne!(b.diff_id, a.diff_id, "the app layer must change");
            assert_ne!(b.digest, a.digest);
        } else {
            assert_eq!(b, a, "layer {} must not change", b.name);
        }
    }
    assert_ne!(before.config_digest, after.config_digest);
    assert_ne!(before.manifest_digest, after.manifest_digest);
}

/// Proves the cache: a second build of unchanged layers runs the
/// compressor zero times and gives the same digests; a changed layer is
/// the only one compressed; a damaged cache entry is recompressed, not used.
/// And that each layer is tarred once (cold: tar, hash and compress in one
/// pass; warm: only hashed), with one more pass only where the cache's
/// hint proved wrong (the damaged entry).
#[test]
fn cached_layers_are_never_compressed_again() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources(tmp.path());
    let cache = tmp.path().join("cache");
    let spec = app_spec(&s);

    let cold = build_image(&spec, &tmp.path().join("cold"), Some(&cache)).unwrap();
    assert_eq!(cold.stats.layers_compressed, 4);
    assert_eq!(cold.stats.layer_tar_passes, 4, "a cold layer is tarred once");
    assert!(cold.layers.iter().all(|l| !l.reused_from_cache));

    let warm = build_image(&spec, &tmp.path().join("warm"), Some(&cache)).unwrap();
    assert_eq!(warm.stats.layers_compressed, 0, "nothing compressed on a warm build");
    assert_eq!(warm.stats.layers_from_cache, 4);
    assert_eq!(
        warm.stats.layer_tar_passes, 4,
        "a warm layer is tarred (only hashed) once"
    );
    assert!(warm.layers.iter().all(|l| l.reused_from_cache));
    assert_eq!(
        identity(&cold),
        identity(&warm),
        "a warm build's digests equal a cold one's"
    );
    assert_eq!(files(&tmp.path().join("cold")), files(&tmp.path().join("warm")));
    let uncached = build_image(&spec, &tmp.path().join("uncached"), None).unwrap();
    assert_eq!(
        identity(&uncached),
        identity(&cold),
        "the cache never changes the result"
    );
    let mut zstd = spec.clone();
    zstd.compression = Compression::Zstd;
    let other = build_image(&zstd, &tmp.path().join("zstd"), Some(&cache)).unwrap();
    assert_eq!(
        other.stats.layers_compressed, 4,
        "the compression settings are part of the key"
    );

    make_writable(&s.frontend);
    fs::write(s.frontend.join("index.html"), b"<!doctype html><p>v2</p>\n").unwrap();
    normalise(&s.frontend);
    let changed = build_image(&spec, &tmp.path().join("changed"), Some(&cache)).unwrap();
    assert_eq!(
        changed.stats.layers_compressed, 1,
        "only the frontend layer is compressed"
    );
    assert_eq!(changed.stats.layer_tar_passes, 4);
    let reused: Vec<&str> = changed
        .layers
        .iter()
        .filter(|l| l.reused_from_cache)
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(reused, ["base", "python-deps", "app"]);

    // Damage the cached app blob: the next build must notice and recompress.
    let app = &cold.layers[2];
    let cached = blob(&cache, &app.digest.to_string());
    fs::write(&cached, b"garbage").unwrap();
    let healed = build_image(&spec, &tmp.path().join("healed"), Some(&cache)).unwrap();
    assert_eq!(healed.stats.layers_compressed, 1);
    assert_eq!(
        healed.stats.layer_tar_passes, 5,
        "the damaged layer: hashed, then tarred again to compress"
    );
    assert_eq!(
        (&healed.layers[2].diff_id, &healed.layers[2].digest),
        (&app.diff_id, &app.digest)
    );
    assert_eq!(
        fs::read(&cached).unwrap().len() as u64,
        app.size,
        "the cache entry is repaired"
    );
}

/// Proves atomicity: a build that fails leaves the previous layout exactly
/// as it was; a successful one replaces it whole (no stale blobs).
#[test]
fn a_failed_build_leaves_the_old_layout_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources(tmp.path());
    let out = tmp.path().join("image");
    let first = build_image(&app_spec(&s), &out, None).unwrap();
    let before = files(&out);

    let mut broken = app_spec(&s);
    // Two contents writing /app/main.py.
    broken.layers[2].contents.push(LayerContent {
        source: s.app.join("main.py"),
        target: "/app/main.py".into(),
        uid: 0,
        gid: 0,
    });
    let err = build_image(&broken, &out, None).unwrap_err();
    assert!(matches!(err, ImageError::Layer(_)), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("/app/main.py") && msg.contains("layer `app`"), "{msg}");
    assert_eq!(files(&out), before, "the old layout is untouched");
    let leftovers: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary directories left behind: {leftovers:?}");

    let mut smaller = app_spec(&s);
    smaller.layers.truncate(1);
    let second = build_image(&smaller, &out, None).unwrap();
    assert_ne!(first.manifest_digest, second.manifest_digest);
    let blobs = files(&out).keys().filter(|k| k.starts_with("blobs/")).count();
    assert_eq!(blobs, 3, "only the new image's blobs remain");
}

/// Proves the documents carry the spec: ref.name in index.json, dates from
/// the epoch in config and history, diffIDs matching the uncompressed
/// layers, OCI media types, the annotations, and the runtime config.
#[test]
fn documents_carry_the_epoch_annotations_and_diff_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources(tmp.path());
    let out = tmp.path().join("image");
    let built = build_image(&app_spec(&s), &out, None).unwrap();

    let index = json(&out.join("index.json"));
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let desc = &index["manifests"][0];
    assert_eq!(desc["annotations"]["org.opencontainers.image.ref.name"], "0.1.0");
    assert_eq!(desc["digest"], built.manifest_digest.to_string());
    assert_eq!(desc["platform"]["architecture"], "amd64");
    assert_eq!(json(&out.join("oci-layout"))["imageLayoutVersion"], "1.0.0");

    let manifest = json(&blob(&out, &built.manifest_digest.to_string()));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let ann = &manifest["annotations"];
    assert_eq!(ann["org.opencontainers.image.created"], "2023-11-14T22:13:20Z");
    assert_eq!(ann["org.opencontainers.image.revision"], "0123456789abcdef");

    let config = json(&blob(&out, &built.config_digest.to_string()));
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["os"], "linux");
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.len(), 4);
    assert!(history.iter().all(|h| h["created"] == "2023-11-14T22:13:20Z"));
    assert_eq!(history[1]["created_by"], "farm layer: python-deps");
    let c = &config["config"];
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8000/tcp": {}}));
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["Labels"]["dev.farm.example"], "yes");

    for (i, layer) in built.layers.iter().enumerate() {
        let d = &manifest["layers"][i];
        assert_eq!(d["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
        assert_eq!(d["digest"], layer.digest.to_string());
        let compressed = fs::read(blob(&out, &layer.digest.to_string())).unwrap();
        assert_eq!(d["size"], compressed.len());
        assert_eq!(
            &compressed[..10],
            &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255],
            "pinned gzip header"
        );
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&compressed[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][i],
            format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
        );
    }

    // Documents are canonical: sorted keys, no whitespace.
    let raw = String::from_utf8(fs::read(blob(&out, &built.config_digest.to_string())).unwrap()).unwrap();
    assert!(raw.starts_with(r#"{"architecture":"amd64","config":{"Cmd":"#), "{raw}");
    assert!(
        !raw.contains('\n') && !raw.contains("\": ") && !raw.contains(", \""),
        "{raw}"
    );
}

/// Proves the zstd option: zstd media type and frames, same diffIDs as gzip.
#[test]
fn zstd_layers_have_their_media_type_and_the_same_diff_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources(tmp.path());
    let gz = build_image(&app_spec(&s), &tmp.path().join("gz"), None).unwrap();
    let mut spec = app_spec(&s);
    spec.compression = Compression::Zstd;
    let zst = build_image(&spec, &tmp.path().join("zst"), None).unwrap();
    assert_eq!(zst.compression.algorithm, "zstd");
    assert_eq!(zst.compression.level, 3);
    for (g, z) in gz.layers.iter().zip(&zst.layers) {
        assert_eq!(g.diff_id, z.diff_id, "compression does not change the tar");
        assert_ne!(g.digest, z.digest);
        assert_eq!(z.media_type, "application/vnd.oci.image.layer.v1.tar+zstd");
        let bytes = fs::read(blob(&tmp.path().join("zst"), &z.digest.to_string())).unwrap();
        assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    }
    assert_eq!(gz.config_digest, zst.config_digest, "the config holds diffIDs only");
}

/// Proves the docker archive: deterministic bytes, manifest.json first with
/// the requested RepoTags, and uncompressed layers hashing to the diffIDs.
#[test]
fn docker_archive_is_deterministic_and_holds_the_diff_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sources(tmp.path());
    let out = tmp.path().join("image");
    let built = build_image(&app_spec(&s), &out, None).unwrap();
    let (a, b) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
    write_docker_archive(&out, "farm-app:0.1.0", &a).unwrap();
    write_docker_archive(&out, "farm-app:0.1.0", &b).unwrap();
    assert!(fs::read(&a).unwrap() == fs::read(&b).unwrap(), "two archives differ");

    let mut archive = tar::Archive::new(fs::File::open(&a).unwrap());
    let mut names = Vec::new();
    let mut manifest = serde_json::Value::Null;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        assert_eq!(entry.header().mtime().unwrap(), 0);
        assert_eq!(entry.header().uid().unwrap(), 0);
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        if name == "manifest.json" {
            manifest = serde_json::from_slice(&data).unwrap();
        }
        if let Some(hexd) = name.strip_suffix("/layer.tar") {
            assert_eq!(
                hex::encode(Sha256::digest(&data)),
                hexd,
                "layer file hashes to its diffID"
            );
        }
        names.push(name);
    }
    assert_eq!(names[0], "manifest.json");
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["farm-app:0.1.0"]));
    assert_eq!(manifest[0]["Config"], format!("{}.json", built.config_digest.hex()));
    let layers: Vec<String> = built
        .layers
        .iter()
        .map(|l| format!("{}/layer.tar", l.diff_id.hex()))
        .collect();
    assert_eq!(manifest[0]["Layers"], serde_json::json!(layers));

    let err = write_docker_archive(&out, "farm-app", &tmp.path().join("c.tar")).unwrap_err();
    assert!(err.to_string().contains("no tag"), "{err}");
    assert!(!tmp.path().join("c.tar").exists());
}

/// Proves an empty image (no layers) and a single-file layer build, and
/// that a file source lands at its exact target with its owner.
#[test]
fn single_files_land_at_their_target() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("config.toml");
    write(&file, b"key = 1\n", 0o444);
    let mut spec = farm_images::ImageSpec::new("single", "1", EPOCH);
    spec.layers = vec![LayerSpec {
        name: "config".into(),
        contents: vec![LayerContent {
            source: file,
            target: "/etc/farm/config.toml".into(),
            uid: 7,
            gid: 8,
        }],
    }];
    let out = tmp.path().join("image");
    let built = build_image(&spec, &out, None).unwrap();
    let compressed = fs::read(blob(&out, &built.layers[0].digest.to_string())).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&compressed[..]));
    let seen: Vec<(String, u64, u32)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().display().to_string(),
                h.uid().unwrap(),
                h.mode().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("etc/".to_string(), 0, 0o755),
            ("etc/farm/".to_string(), 0, 0o755),
            ("etc/farm/config.toml".to_string(), 7, 0o644)
        ]
    );
    let empty = build_image(
        &farm_images::ImageSpec::new("empty", "1", EPOCH),
        &tmp.path().join("e"),
        None,
    )
    .unwrap();
    assert!(empty.layers.is_empty());
}
