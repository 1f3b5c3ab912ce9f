//! Fixture images made by the tests (with encoders farm-optimize does not
//! use to optimise), each carrying what an optimiser may remove, and
//! decoders that turn any of them into frames of RGBA to compare. Shared
//! with the `farm optimize images` CLI tests.
#![allow(dead_code)]

use std::io::Cursor;

/// A 48×32 RGBA picture of four colours, with fully transparent pixels
/// whose colours differ (an optimiser must keep them).
fn pattern() -> Vec<u8> {
    let mut px = Vec::new();
    for y in 0..32u32 {
        for x in 0..48u32 {
            let p = match ((x / 8) + (y / 8)) % 4 {
                0 => [200, 30, 30, 255],
                1 => [30, 200, 30, 255],
                2 => [30, 30, 200, 128],
                _ => [(x * 5) as u8, (y * 7) as u8, 9, 0],
            };
            px.extend_from_slice(&p);
        }
    }
    px
}

fn png_with(width: u32, height: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, width, height);
    e.set_color(color);
    e.set_depth(depth);
    e.set_compression(png::Compression::NoCompression);
    e.set_source_gamma(png::ScaledFloat::new(0.45455));
    e.add_text_chunk("Software".into(), "a painting program, version 1".into())
        .unwrap();
    e.add_itxt_chunk("Description".into(), "x".repeat(300)).unwrap();
    let mut w = e.write_header().unwrap();
    w.write_image_data(data).unwrap();
    w.finish().unwrap();
    out
}

/// RGBA, stored uncompressed, with text chunks and a gamma.
pub fn png() -> Vec<u8> {
    png_with(48, 32, png::ColorType::Rgba, png::BitDepth::Eight, &pattern())
}

/// 16-bit grey whose samples fit in 8 bits (high byte = low byte).
pub fn png16() -> Vec<u8> {
    let data: Vec<u8> = (0..40 * 20).flat_map(|i| [(i % 7 * 30) as u8; 2]).collect();
    png_with(40, 20, png::ColorType::Grayscale, png::BitDepth::Sixteen, &data)
}

/// A fake ICC profile: any bytes do, the optimiser must keep them as they are.
pub const ICC: &[u8] = b"not really an ICC profile, but bytes to keep";

/// A TIFF block with an Orientation of `orientation`, a camera name and 600 bytes of thumbnail-like padding.
pub fn exif(orientation: Option<u16>) -> Vec<u8> {
    let mut entries: Vec<[u8; 12]> = Vec::new();
    let mut e = [0u8; 12];
    e[..2].copy_from_slice(&0x010Fu16.to_le_bytes());
    e[2..4].copy_from_slice(&2u16.to_le_bytes());
    e[4..8].copy_from_slice(&4u32.to_le_bytes());
    e[8..12].copy_from_slice(b"Cam\0");
    entries.push(e);
    if let Some(o) = orientation {
        let mut e = [0u8; 12];
        e[..2].copy_from_slice(&0x0112u16.to_le_bytes());
        e[2..4].copy_from_slice(&3u16.to_le_bytes());
        e[4..8].copy_from_slice(&1u32.to_le_bytes());
        e[8..10].copy_from_slice(&o.to_le_bytes());
        entries.push(e);
    }
    let mut t = b"II\x2a\0\x08\0\0\0".to_vec();
    t.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    for e in entries {
        t.extend_from_slice(&e);
    }
    t.extend_from_slice(&[0; 4]);
    t.extend(std::iter::repeat_n(0xAB, 600));
    t
}

pub const XMP: &[u8] = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>an editor's history</x:xmpmeta>";

/// Inserts segments after the JPEG's first segment and junk after its end.
fn with_segments(jpeg: &[u8], segments: &[(u8, &[u8])]) -> Vec<u8> {
    let app0_len = usize::from(u16::from_be_bytes([jpeg[4], jpeg[5]]));
    let at = 4 + app0_len;
    let mut out = jpeg[..at].to_vec();
    for (marker, body) in segments {
        out.extend_from_slice(&[0xFF, *marker]);
        out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(body);
    }
    out.extend_from_slice(&jpeg[at..]);
    out.extend_from_slice(b"trailing bytes after the end of the image");
    out
}

fn jpeg_of(color: jpeg_encoder::ColorType, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = jpeg_encoder::Encoder::new(&mut out, 85);
    e.add_icc_profile(ICC).unwrap();
    e.encode(data, 48, 32, color).unwrap();
    let mut exif_body = b"Exif\0\0".to_vec();
    exif_body.extend_from_slice(&exif(Some(6)));
    with_segments(
        &out,
        &[
            (0xE1, &exif_body),
            (0xE1, XMP),
            (0xED, b"Photoshop 3.0\0resources"),
            (0xFE, b"a comment"),
        ],
    )
}

/// RGB with an ICC profile, EXIF (orientation 6), XMP, Photoshop data, a comment and trailing bytes.
pub fn jpeg() -> Vec<u8> {
    let rgb: Vec<u8> = pattern().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
    jpeg_of(jpeg_encoder::ColorType::Rgb, &rgb)
}

/// CMYK (Adobe APP14 says how to read it) with the same extras.
pub fn jpeg_cmyk() -> Vec<u8> {
    let cmyk: Vec<u8> = pattern().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2], 40]).collect();
    jpeg_of(jpeg_encoder::ColorType::Cmyk, &cmyk)
}

/// Two frames looping forever, with a comment and an XMP application extension.
pub fn gif() -> Vec<u8> {
    let palette = [0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255];
    let mut out = Vec::new();
    {
        let mut e = gif::Encoder::new(&mut out, 16, 8, &palette).unwrap();
        e.set_repeat(gif::Repeat::Infinite).unwrap();
        e.write_raw_extension(gif::AnyExtension(0xFE), &[b"made by a test"])
            .unwrap();
        e.write_raw_extension(gif::AnyExtension(0xFF), &[b"XMP DataXMP", &[b'x'; 400]])
            .unwrap();
        for shift in 0..2u8 {
            let pixels: Vec<u8> = (0..16 * 8).map(|i| ((i / 4) as u8 + shift) % 4).collect();
            let mut f = gif::Frame::from_indexed_pixels(16, 8, pixels, Some(3));
            f.delay = 10;
            e.write_frame(&f).unwrap();
        }
    }
    out
}

/// Lossless (VP8L) written without the predictor transform, so a
/// re-encode is smaller, with XMP and an EXIF block without orientation.
pub fn webp() -> Vec<u8> {
    let mut px = Vec::new();
    for y in 0..64u32 {
        for x in 0..64u32 {
            px.extend_from_slice(&[(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8, 255]);
        }
    }
    let mut out = Vec::new();
    let mut e = image_webp::WebPEncoder::new(&mut out);
    let mut params = image_webp::EncoderParams::default();
    params.use_predictor_transform = false;
    e.set_params(params);
    e.set_xmp_metadata(XMP.to_vec());
    e.set_exif_metadata(exif(None));
    e.encode(&px, 64, 64, image_webp::ColorType::Rgba8).unwrap();
    out
}

/// An SVG as editors save it.
pub const SVG: &str = include_str!("../../../../tests/fixtures/optimize/drawing.svg");

/// One decoded frame: width, height and 16-bit RGBA samples.
pub type Frame = (u32, u32, Vec<u16>);

/// The frames a file shows, decoded by the format's reference decoder (SVG: its text).
pub fn frames(name: &str, data: &[u8]) -> Vec<Frame> {
    match name.rsplit('.').next().unwrap() {
        "png" => {
            let mut d = png::Decoder::new(Cursor::new(data));
            d.set_transformations(png::Transformations::EXPAND);
            let mut r = d.read_info().unwrap();
            let mut buf = vec![0; r.output_buffer_size().unwrap()];
            let info = r.next_frame(&mut buf).unwrap();
            let buf = &buf[..info.buffer_size()];
            let samples: Vec<u16> = if info.bit_depth == png::BitDepth::Sixteen {
                buf.chunks_exact(2).map(|s| u16::from_be_bytes([s[0], s[1]])).collect()
            } else {
                buf.iter().map(|&s| u16::from(s) << 8 | u16::from(s)).collect()
            };
            let rgba = match info.color_type {
                png::ColorType::Grayscale => samples.iter().flat_map(|&g| [g, g, g, 0xFFFF]).collect(),
                png::ColorType::GrayscaleAlpha => samples.chunks(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect(),
                png::ColorType::Rgb => samples.chunks(3).flat_map(|p| [p[0], p[1], p[2], 0xFFFF]).collect(),
                png::ColorType::Rgba => samples,
                png::ColorType::Indexed => panic!("expanded"),
            };
            vec![(info.width, info.height, rgba)]
        }
        "jpg" | "jpeg" => {
            let mut d = jpeg_decoder::Decoder::new(data);
            let px = d.decode().unwrap();
            let info = d.info().unwrap();
            vec![(
                u32::from(info.width),
                u32::from(info.height),
                px.into_iter().map(u16::from).collect(),
            )]
        }
        "gif" => {
            let mut o = gif::DecodeOptions::new();
            o.set_color_output(gif::ColorOutput::RGBA);
            let mut d = o.read_info(Cursor::new(data)).unwrap();
            let mut out = Vec::new();
            while let Some(f) = d.read_next_frame().unwrap() {
                out.push((
                    u32::from(f.width),
                    u32::from(f.height),
                    f.buffer.iter().map(|&b| u16::from(b)).collect(),
                ));
            }
            out
        }
        "webp" => {
            let mut d = image_webp::WebPDecoder::new(Cursor::new(data)).unwrap();
            let (w, h) = d.dimensions();
            let mut buf = vec![0; d.output_buffer_size().unwrap()];
            d.read_image(&mut buf).unwrap();
            let rgba: Vec<u16> = if d.has_alpha() {
                buf.iter().map(|&b| u16::from(b)).collect()
            } else {
                buf.chunks(3)
                    .flat_map(|p| [p[0], p[1], p[2], 255])
                    .map(u16::from)
                    .collect()
            };
            vec![(w, h, rgba)]
        }
        "svg" => vec![(0, 0, data.iter().map(|&b| u16::from(b)).collect())],
        other => panic!("no decoder for .{other}"),
    }
}

/// Every fixture, by file name.
pub fn all() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("logo.png", png()),
        ("grey16.png", png16()),
        ("photo.jpg", jpeg()),
        ("print.jpeg", jpeg_cmyk()),
        ("spinner.gif", gif()),
        ("gradient.webp", webp()),
        ("drawing.svg", SVG.as_bytes().to_vec()),
    ]
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
