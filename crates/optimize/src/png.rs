//! PNG: oxipng at its default level (`-o 2`), with the pixel-preserving
//! settings spelled out so that a change of oxipng's defaults cannot make
//! a result lossy; then a decode of both files that must agree.

use std::io::Cursor;

use crate::{Format, OptimizeError, MAX_DECODED_BYTES};

/// Chunks removed: text and a modification time, which no viewer renders.
/// Colour (iCCP, sRGB, gAMA, cHRM, cICP), physical size, EXIF (orientation)
/// and animation chunks stay.
const STRIPPED: [&[u8; 4]; 4] = [b"tEXt", b"zTXt", b"iTXt", b"tIME"];

pub(crate) fn options() -> oxipng::Options {
    let mut o = oxipng::Options::from_preset(2);
    // Fully transparent pixels keep their colour: identical RGBA, not only identical display.
    o.optimize_alpha = false;
    // 16-bit samples are never scaled to 8 bits (only reduced when that loses nothing).
    o.scale_16 = false;
    // Interlacing is kept as it is.
    o.interlace = None;
    o.strip = oxipng::StripChunks::Strip(STRIPPED.iter().map(|c| **c).collect());
    o.fix_errors = false;
    // A deadline would make the result depend on the machine's speed.
    o.timeout = None;
    o.max_decompressed_size = Some(MAX_DECODED_BYTES);
    o
}

pub(crate) fn optimize(data: &[u8]) -> Result<Vec<u8>, OptimizeError> {
    let before = decode(data).map_err(|e| OptimizeError::invalid(Format::Png, e))?;
    let out = oxipng::optimize_from_memory(data, &options()).map_err(|e| OptimizeError::invalid(Format::Png, e))?;
    if out.len() >= data.len() {
        return Ok(data.to_vec());
    }
    let after = decode(&out).map_err(|e| OptimizeError::changed(Format::Png, format!("it does not decode: {e}")))?;
    if before != after {
        return Err(OptimizeError::changed(Format::Png, "other pixels"));
    }
    Ok(out)
}

/// One decoded frame: its placement and timing, and its pixels as 16-bit RGBA.
#[derive(PartialEq, Eq)]
struct Frame {
    /// An APNG frame's fcTL (size, offset, delay, disposal, blending), not its sequence number.
    control: Option<[u32; 8]>,
    width: u32,
    height: u32,
    rgba: Vec<[u16; 4]>,
}

/// An APNG's frame and play counts, and every frame.
#[derive(PartialEq, Eq)]
struct Decoded {
    animation: Option<(u32, u32)>,
    frames: Vec<Frame>,
}

/// Every frame of a PNG (one, or an APNG's), normalised to 16-bit RGBA so
/// that a lossless change of colour type or bit depth compares equal.
fn decode(data: &[u8]) -> Result<Decoded, String> {
    let mut decoder = png::Decoder::new_with_limits(
        Cursor::new(data),
        png::Limits {
            bytes: MAX_DECODED_BYTES,
        },
    );
    decoder.set_transformations(png::Transformations::EXPAND);
    let mut reader = decoder.read_info().map_err(|e| e.to_string())?;
    let animation = reader.info().animation_control().map(|a| (a.num_frames, a.num_plays));
    let frames = animation.map_or(1, |(n, _)| {
        n as usize + usize::from(reader.info().frame_control().is_none())
    });
    let size = reader.output_buffer_size().ok_or("the image is too large to decode")?;
    let mut buf = vec![0; size];
    let mut out = Vec::new();
    for _ in 0..frames {
        let info = reader.next_frame(&mut buf).map_err(|e| e.to_string())?;
        let control = reader.info().frame_control().map(|c| {
            [
                c.width,
                c.height,
                c.x_offset,
                c.y_offset,
                c.delay_num.into(),
                c.delay_den.into(),
                c.dispose_op as u32,
                c.blend_op as u32,
            ]
        });
        out.push(Frame {
            control,
            width: info.width,
            height: info.height,
            rgba: to_rgba16(&buf[..info.buffer_size()], info.color_type, info.bit_depth)
                .ok_or("a palette was left unexpanded")?,
        });
    }
    Ok(Decoded { animation, frames: out })
}

/// None for a palette, which EXPAND never leaves.
fn to_rgba16(buf: &[u8], color: png::ColorType, depth: png::BitDepth) -> Option<Vec<[u16; 4]>> {
    let samples: Vec<u16> = match depth {
        png::BitDepth::Sixteen => buf.chunks_exact(2).map(|s| u16::from_be_bytes([s[0], s[1]])).collect(),
        // EXPAND has made every depth below 16 into 8 bits; 8 → 16 bits is ×257.
        _ => buf.iter().map(|&s| u16::from(s) * 257).collect(),
    };
    let max = u16::MAX;
    Some(match color {
        png::ColorType::Grayscale => samples.iter().map(|&g| [g, g, g, max]).collect(),
        png::ColorType::GrayscaleAlpha => samples.chunks_exact(2).map(|p| [p[0], p[0], p[0], p[1]]).collect(),
        png::ColorType::Rgb => samples.chunks_exact(3).map(|p| [p[0], p[1], p[2], max]).collect(),
        png::ColorType::Rgba => samples.chunks_exact(4).map(|p| [p[0], p[1], p[2], p[3]]).collect(),
        png::ColorType::Indexed => return None,
    })
}
