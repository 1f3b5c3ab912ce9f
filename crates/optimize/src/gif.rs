//! GIF: a lossless transform of the file's blocks, never of its
//! LZW-compressed frames. Kept byte for byte: the screen descriptor and
//! palettes, every frame and its graphic control (delay, disposal,
//! transparency), plain-text extensions, the loop count (NETSCAPE2.0 /
//! ANIMEXTS1.0) and an ICC profile (ICCRGBG1012). Dropped: comment
//! extensions, every other application extension (XMP and editors' data)
//! and anything after the trailer. The frames are not LZW-recompressed
//! (spec/optimize.md says why).

use std::io::Cursor;

use crate::{Format, OptimizeError, MAX_DECODED_BYTES};

/// Application extensions that change what is shown, by identifier + authentication code.
const KEPT_APPLICATIONS: [&[u8; 11]; 3] = [b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ICCRGBG1012"];

pub(crate) fn optimize(data: &[u8]) -> Result<Vec<u8>, OptimizeError> {
    let before = decode(data).map_err(|e| OptimizeError::invalid(Format::Gif, e))?;
    let out = strip(data).map_err(|e| OptimizeError::invalid(Format::Gif, e))?;
    if out.len() >= data.len() {
        return Ok(data.to_vec());
    }
    let after = decode(&out).map_err(|e| OptimizeError::changed(Format::Gif, format!("it does not decode: {e}")))?;
    if before != after {
        return Err(OptimizeError::changed(Format::Gif, "other frames"));
    }
    Ok(out)
}

/// What a viewer shows: the screen, the loop count, the ICC profile and
/// each frame's placement, timing and RGBA pixels.
#[derive(PartialEq, Eq)]
struct Shown {
    width: u16,
    height: u16,
    background: Option<usize>,
    repeat: String,
    icc: Option<Vec<u8>>,
    frames: Vec<ShownFrame>,
}

#[derive(PartialEq, Eq)]
struct ShownFrame {
    delay: u16,
    dispose: String,
    needs_user_input: bool,
    /// Left, top, width, height.
    placement: [u16; 4],
    rgba: Vec<u8>,
}

fn decode(data: &[u8]) -> Result<Shown, String> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    options.set_memory_limit(gif::MemoryLimit::Bytes(
        (MAX_DECODED_BYTES as u64).try_into().expect("not zero"),
    ));
    let mut d = options.read_info(Cursor::new(data)).map_err(|e| e.to_string())?;
    let mut frames = Vec::new();
    while let Some(f) = d.read_next_frame().map_err(|e| e.to_string())? {
        frames.push(ShownFrame {
            delay: f.delay,
            dispose: format!("{:?}", f.dispose),
            needs_user_input: f.needs_user_input,
            placement: [f.left, f.top, f.width, f.height],
            rgba: f.buffer.to_vec(),
        });
    }
    Ok(Shown {
        width: d.width(),
        height: d.height(),
        background: d.bg_color(),
        repeat: format!("{:?}", d.repeat()),
        icc: d.icc_profile().map(<[u8]>::to_vec),
        frames,
    })
}

/// The file without the blocks that show nothing (see the module docs).
fn strip(data: &[u8]) -> Result<Vec<u8>, String> {
    if !(data.starts_with(b"GIF87a") || data.starts_with(b"GIF89a")) {
        return Err("it does not start with a GIF87a or GIF89a signature".into());
    }
    let truncated = || "the file ends inside a block (truncated?)".to_string();
    let screen = data.get(6..13).ok_or_else(truncated)?;
    let mut i = 13 + color_table_len(screen[4]);
    let mut out = data.get(..i).ok_or_else(truncated)?.to_vec();
    loop {
        let start = i;
        match *data.get(i).ok_or_else(truncated)? {
            // Trailer.
            0x3B => {
                out.push(0x3B);
                return Ok(out);
            }
            // Image descriptor, local colour table, LZW code size, data sub-blocks.
            0x2C => {
                let flags = *data.get(i + 9).ok_or_else(truncated)?;
                i += 10 + color_table_len(flags) + 1;
                i = skip_sub_blocks(data, i).ok_or_else(truncated)?;
                out.extend_from_slice(&data[start..i]);
            }
            0x21 => {
                let label = *data.get(i + 1).ok_or_else(truncated)?;
                i = skip_sub_blocks(data, i + 2).ok_or_else(truncated)?;
                let keep = match label {
                    0xFE => false,
                    0xFF => {
                        let id = data.get(start + 3..start + 14).ok_or_else(truncated)?;
                        data[start + 2] == 11 && KEPT_APPLICATIONS.iter().any(|k| id == &k[..])
                    }
                    _ => true,
                };
                if keep {
                    out.extend_from_slice(&data[start..i]);
                }
            }
            other => return Err(format!("unknown block 0x{other:02X} at byte {i}")),
        }
    }
}

/// Bytes of the colour table a packed-fields byte announces.
fn color_table_len(flags: u8) -> usize {
    if flags & 0x80 == 0 {
        0
    } else {
        3 << ((flags & 7) + 1)
    }
}

/// The offset after the sub-blocks starting at `i` (through their zero terminator).
fn skip_sub_blocks(data: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let n = usize::from(*data.get(i)?);
        i += 1 + n;
        if n == 0 {
            return (i <= data.len()).then_some(i);
        }
        if i > data.len() {
            return None;
        }
    }
}
