//! WebP: first a lossless transform of the RIFF container: XMP and unknown
//! chunks are dropped, EXIF is cut down to its orientation (or dropped when
//! that is absent or 1), every image, alpha, animation and ICC chunk stays
//! byte for byte. Then a still lossless (VP8L) image is re-encoded with
//! image-webp's lossless encoder, and the new bitstream replaces the old
//! one only when it is smaller and decodes to the same RGBA. Lossy (VP8)
//! bitstreams are never re-encoded: a lossless copy of a lossy image is
//! larger, and re-encoding it lossily would change pixels.

use std::io::Cursor;

use crate::{exif, Format, OptimizeError, MAX_DECODED_BYTES};

const FLAG_XMP: u8 = 1 << 2;
const FLAG_EXIF: u8 = 1 << 3;
const FLAG_ANIMATION: u8 = 1 << 1;

pub(crate) fn optimize(data: &[u8]) -> Result<Vec<u8>, OptimizeError> {
    let before = decode(data).map_err(|e| OptimizeError::invalid(Format::Webp, e))?;
    let mut chunks = parse(data).map_err(|e| OptimizeError::invalid(Format::Webp, e))?;
    strip(&mut chunks);
    reencode_lossless(&mut chunks, &before);
    let out = write(&chunks);
    if out.len() >= data.len() {
        return Ok(data.to_vec());
    }
    let after = decode(&out).map_err(|e| OptimizeError::changed(Format::Webp, format!("it does not decode: {e}")))?;
    if before != after {
        return Err(OptimizeError::changed(Format::Webp, "other pixels or frames"));
    }
    Ok(out)
}

/// What a viewer shows: the canvas, the ICC profile, the loop count and
/// each frame's duration and RGBA pixels (animations as composited).
#[derive(PartialEq, Eq)]
struct Shown {
    width: u32,
    height: u32,
    icc: Option<Vec<u8>>,
    loop_count: String,
    orientation: Option<u16>,
    frames: Vec<(u32, Vec<u8>)>,
}

fn decode(data: &[u8]) -> Result<Shown, String> {
    let e = |e: image_webp::DecodingError| e.to_string();
    let mut d = image_webp::WebPDecoder::new(Cursor::new(data)).map_err(e)?;
    d.set_memory_limit(MAX_DECODED_BYTES);
    let (width, height) = d.dimensions();
    let size = d.output_buffer_size().ok_or("the image is too large to decode")?;
    let rgba = |buf: &[u8], alpha: bool| -> Vec<u8> {
        if alpha {
            buf.to_vec()
        } else {
            buf.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect()
        }
    };
    let alpha = d.has_alpha();
    let mut buf = vec![0; size];
    let mut frames = Vec::new();
    if d.is_animated() {
        for _ in 0..d.num_frames() {
            let duration = d.read_frame(&mut buf).map_err(e)?;
            frames.push((duration, rgba(&buf, alpha)));
        }
    } else {
        d.read_image(&mut buf).map_err(e)?;
        frames.push((0, rgba(&buf, alpha)));
    }
    let exif = d.exif_metadata().map_err(e)?;
    Ok(Shown {
        width,
        height,
        icc: d.icc_profile().map_err(e)?,
        loop_count: format!("{:?}", d.loop_count()),
        orientation: exif.as_deref().and_then(exif_orientation),
        frames,
    })
}

/// EXIF chunks hold a TIFF block, by some writers behind JPEG's `Exif\0\0`.
fn exif_orientation(payload: &[u8]) -> Option<u16> {
    let tiff = payload.strip_prefix(b"Exif\0\0").unwrap_or(payload);
    exif::orientation(tiff).filter(|&o| o != 1)
}

struct Chunk {
    fourcc: [u8; 4],
    payload: Vec<u8>,
}

fn parse(data: &[u8]) -> Result<Vec<Chunk>, String> {
    if data.len() < 12 || &data[..4] != b"RIFF" || &data[8..12] != b"WEBP" {
        return Err("it does not start with a RIFF WEBP header".into());
    }
    let riff_len = u32::from_le_bytes(data[4..8].try_into().expect("4 bytes")) as usize;
    // Bytes past the RIFF size are not part of the file; a reader ignores them.
    let end = 8usize
        .checked_add(riff_len)
        .filter(|&e| e <= data.len())
        .ok_or("the RIFF size is larger than the file (truncated?)")?;
    let mut chunks = Vec::new();
    let mut i = 12;
    while i < end {
        let header = data
            .get(i..i + 8)
            .filter(|_| i + 8 <= end)
            .ok_or("a chunk header is cut off")?;
        let len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
        let payload = data
            .get(i + 8..i + 8 + len)
            .filter(|_| i + 8 + len <= end)
            .ok_or_else(|| format!("chunk {} is cut off", String::from_utf8_lossy(&header[..4])))?;
        chunks.push(Chunk {
            fourcc: header[..4].try_into().expect("4 bytes"),
            payload: payload.to_vec(),
        });
        i += 8 + len + (len & 1);
    }
    match chunks.first().map(|c| &c.fourcc) {
        Some(b"VP8 " | b"VP8L" | b"VP8X") => Ok(chunks),
        _ => Err("the first chunk is not VP8, VP8L or VP8X".into()),
    }
}

fn write(chunks: &[Chunk]) -> Vec<u8> {
    let mut body = Vec::new();
    for c in chunks {
        body.extend_from_slice(&c.fourcc);
        body.extend_from_slice(&(c.payload.len() as u32).to_le_bytes());
        body.extend_from_slice(&c.payload);
        if c.payload.len() % 2 == 1 {
            body.push(0);
        }
    }
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    out
}

/// Drops what shows nothing (see the module docs) and keeps VP8X's flags true.
fn strip(chunks: &mut Vec<Chunk>) {
    if &chunks[0].fourcc != b"VP8X" {
        // The simple format is one image chunk; anything after it is ignored by readers.
        chunks.truncate(1);
        return;
    }
    let known: [&[u8; 4]; 7] = [b"VP8X", b"ICCP", b"ANIM", b"ANMF", b"ALPH", b"VP8 ", b"VP8L"];
    chunks.retain_mut(|c| {
        if &c.fourcc == b"EXIF" {
            match exif_orientation(&c.payload) {
                Some(o) => {
                    c.payload = exif::orientation_only(o);
                    true
                }
                None => false,
            }
        } else {
            known.contains(&&c.fourcc)
        }
    });
    let has_exif = chunks.iter().any(|c| &c.fourcc == b"EXIF");
    if let Some(flags) = chunks[0].payload.first_mut() {
        *flags &= !FLAG_XMP;
        if !has_exif {
            *flags &= !FLAG_EXIF;
        }
    }
}

/// Replaces a still image's VP8L bitstream with image-webp's lossless
/// encoding of the same pixels when that is smaller.
fn reencode_lossless(chunks: &mut [Chunk], shown: &Shown) {
    let animated = &chunks[0].fourcc == b"VP8X" && chunks[0].payload.first().is_some_and(|f| f & FLAG_ANIMATION != 0);
    if animated || shown.frames.len() != 1 {
        return;
    }
    let Some(target) = chunks.iter_mut().find(|c| &c.fourcc == b"VP8L") else {
        return;
    };
    let rgba = &shown.frames[0].1;
    let opaque = rgba.chunks_exact(4).all(|p| p[3] == 255);
    let (pixels, color) = if opaque {
        (
            rgba.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
            image_webp::ColorType::Rgb8,
        )
    } else {
        (rgba.clone(), image_webp::ColorType::Rgba8)
    };
    let mut encoded = Vec::new();
    if image_webp::WebPEncoder::new(&mut encoded)
        .encode(&pixels, shown.width, shown.height, color)
        .is_err()
    {
        return;
    }
    // The encoder writes the simple format, RIFF header then one VP8L chunk.
    let Ok(ours) = parse(&encoded) else { return };
    if let Some(vp8l) = ours.into_iter().find(|c| &c.fourcc == b"VP8L") {
        if vp8l.payload.len() < target.payload.len() {
            target.payload = vp8l.payload;
        }
    }
}
