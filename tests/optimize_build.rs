//! `[frontend] optimize-images = true` (spec/optimize.md, "As a build
//! step"): after the frontend step, farm's own optimiser copies the built
//! output with its images losslessly optimised, in the sandbox, as a cached
//! step whose tree is the manifest's `frontend` output. A small frontend
//! whose build (plain Node, no npm packages) copies an unoptimised PNG and
//! an editor's SVG into dist/ is built hermetically with the real binary.

mod common;

use std::io::Cursor;
use std::path::Path;

use common::{farm, run, stderr, workspace};
use farm_testkit::shared_farm_home;

/// A 48×48 RGB gradient stored uncompressed (zlib level 0) with a 300-byte
/// text chunk: valid, and much larger than it needs to be.
fn unoptimised_png() -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut enc = png::Encoder::new(&mut bytes, 48, 48);
    enc.set_color(png::ColorType::Rgb);
    enc.set_compression(png::Compression::NoCompression);
    enc.add_text_chunk("Comment".into(), "x".repeat(300)).unwrap();
    let mut w = enc.write_header().unwrap();
    let pixels: Vec<u8> = (0..48u32)
        .flat_map(|y| (0..48u32).flat_map(move |x| [(x * 5) as u8, (y * 5) as u8, 128]))
        .collect();
    w.write_image_data(&pixels).unwrap();
    drop(w);
    bytes
}

/// Width, height and every pixel as 8-bit RGBA, whatever the PNG's colour type.
fn rgba(bytes: &[u8]) -> (u32, u32, Vec<[u8; 4]>) {
    let mut d = png::Decoder::new(Cursor::new(bytes.to_vec()));
    d.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = d.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    let buf = &buf[..info.buffer_size()];
    let px = match info.color_type {
        png::ColorType::Rgb => buf.chunks_exact(3).map(|p| [p[0], p[1], p[2], 255]).collect(),
        png::ColorType::Rgba => buf.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect(),
        png::ColorType::Grayscale => buf.iter().map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::GrayscaleAlpha => buf.chunks_exact(2).map(|p| [p[0], p[0], p[0], p[1]]).collect(),
        png::ColorType::Indexed => panic!("EXPAND leaves no palette"),
    };
    (info.width, info.height, px)
}

/// The fixture project, `optimize-images` as given, locked and fetched
/// into the shared test store (Node and the Debian root).
fn project(optimize: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let web = p.join("web");
    std::fs::create_dir_all(web.join("src")).unwrap();
    std::fs::write(
        p.join("farm.toml"),
        format!(
            "[project]\nname = \"opt-fixture\"\nversion = \"1.0.0\"\n\n\
             [toolchains.node]\nversion = \"22.19.0\"\nnpm = \"10\"\n\n\
             [toolchains.debian]\nsuite = \"bookworm\"\narchitecture = \"amd64\"\n\n\
             [frontend]\npath = \"web\"\nbuild-script = \"build\"\noutput-dir = \"dist\"\noptimize-images = {optimize}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        web.join("package.json"),
        r#"{"name":"opt-fixture","version":"1.0.0","private":true,"scripts":{"build":"node build.mjs"}}"#,
    )
    .unwrap();
    std::fs::write(
        web.join("package-lock.json"),
        r#"{"name":"opt-fixture","version":"1.0.0","lockfileVersion":3,"requires":true,"packages":{"":{"name":"opt-fixture","version":"1.0.0"}}}"#,
    )
    .unwrap();
    std::fs::write(
        web.join("build.mjs"),
        "import { mkdirSync, copyFileSync, writeFileSync, readdirSync } from \"node:fs\";\n\
         mkdirSync(\"dist/img\", { recursive: true });\n\
         for (const f of readdirSync(\"src\").sort()) copyFileSync(`src/${f}`, `dist/img/${f}`);\n\
         writeFileSync(\"dist/index.html\", \"<!doctype html><img src=img/logo.png>\\n\");\n",
    )
    .unwrap();
    std::fs::write(web.join("src/logo.png"), unoptimised_png()).unwrap();
    std::fs::copy(
        workspace().join("tests/fixtures/optimize/drawing.svg"),
        web.join("src/drawing.svg"),
    )
    .unwrap();
    let home = shared_farm_home();
    assert!(run(&mut farm(p, &home, &["lock"])).status.success(), "lock");
    assert!(run(&mut farm(p, &home, &["fetch"])).status.success(), "fetch");
    dir
}

fn build(p: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["build", "--hermetic"];
    all.extend_from_slice(args);
    run(&mut farm(p, &shared_farm_home(), &all))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// With the option on, the placed dist PNG and SVG are smaller than what
/// the frontend's build copied, the PNG decodes to the same size and
/// pixels, other files are unchanged; the step is cached the second time
/// (same key), and two clean builds (one without the cache) give the same
/// manifest digest, whose `frontend` output is the optimised tree.
#[test]
fn optimised_dist_images_are_smaller_same_pixels_reproducible_and_cached() {
    let dir = project(true);
    let p = dir.path();
    let out = p.join(".farm/out");
    let first = build(p, &["--no-cache"]);
    assert!(first.status.success(), "first build: {}", stderr(&first));
    let m1 = json(&out.join("farm-metrics.json"));
    let step1 = &m1["steps"]["optimize-images"];
    assert_eq!(step1["cached"], false, "the step ran: {m1}");
    let digest1 = json(&out.join("farm-manifest.json"))["digest"].clone();

    let src_png = std::fs::read(p.join("web/src/logo.png")).unwrap();
    let dist_png = std::fs::read(out.join("frontend/img/logo.png")).unwrap();
    assert!(
        dist_png.len() < src_png.len(),
        "the placed PNG is smaller: {} vs {} bytes",
        dist_png.len(),
        src_png.len()
    );
    assert_eq!(rgba(&dist_png), rgba(&src_png), "the same size and pixels");
    let src_svg = std::fs::read_to_string(p.join("web/src/drawing.svg")).unwrap();
    let dist_svg = std::fs::read_to_string(out.join("frontend/img/drawing.svg")).unwrap();
    assert!(dist_svg.len() < src_svg.len(), "the SVG is smaller");
    assert!(
        dist_svg.contains("<svg") && !dist_svg.contains("inkscape:") && !dist_svg.contains("<!--"),
        "the SVG lost the editor's data and comments only: {dist_svg}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("frontend/index.html")).unwrap(),
        "<!doctype html><img src=img/logo.png>\n",
        "other files are copied as they are"
    );

    // A second clean build: the step comes from the action cache, same bytes.
    std::fs::remove_dir_all(&out).unwrap();
    let second = build(p, &[]);
    assert!(second.status.success(), "second build: {}", stderr(&second));
    let m2 = json(&out.join("farm-metrics.json"));
    assert_eq!(m2["steps"]["optimize-images"]["cached"], true, "a cache hit: {m2}");
    assert_eq!(
        m2["steps"]["optimize-images"]["key"], step1["key"],
        "the same action key"
    );
    assert_eq!(
        json(&out.join("farm-manifest.json"))["digest"],
        digest1,
        "two clean builds, one without the cache: the same manifest digest"
    );
    assert_eq!(std::fs::read(out.join("frontend/img/logo.png")).unwrap(), dist_png);
}

/// With the option off there is no optimize-images step and the placed
/// images are exactly the frontend build's copies.
#[test]
fn without_the_option_dist_images_are_left_as_built() {
    let dir = project(false);
    let p = dir.path();
    let b = build(p, &[]);
    assert!(b.status.success(), "build: {}", stderr(&b));
    let out = p.join(".farm/out");
    let m = json(&out.join("farm-metrics.json"));
    assert!(m["steps"].get("optimize-images").is_none(), "no such step: {m}");
    for f in ["logo.png", "drawing.svg"] {
        assert_eq!(
            std::fs::read(out.join("frontend/img").join(f)).unwrap(),
            std::fs::read(p.join("web/src").join(f)).unwrap(),
            "{f} is as the build wrote it"
        );
    }
}

/// A corrupt PNG in the frontend's output fails the build with an error
/// naming the file (relative to the output) and what is wrong with it, and
/// nothing is placed: no `.farm/out`, no staging directory beside it.
#[test]
fn a_corrupt_image_in_dist_fails_the_build_naming_it() {
    let dir = project(true);
    let p = dir.path();
    // Unique bytes, so that no earlier run's frontend output is reused.
    let marker = format!("not a png {:?} {}", std::time::SystemTime::now(), std::process::id());
    std::fs::write(p.join("web/src/broken.png"), marker).unwrap();
    // The lock's inputs are unchanged (sources are not lock inputs).
    let b = build(p, &[]);
    assert!(!b.status.success(), "the build fails");
    let err = stderr(&b);
    assert!(
        err.contains("img/broken.png") && err.contains("not a valid PNG file") && err.contains("optimize-images"),
        "the error names the step, the file and why: {err}"
    );
    assert!(!p.join(".farm/out").exists(), "no output directory was written");
    let left: Vec<String> = std::fs::read_dir(p.join(".farm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".out."))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}
