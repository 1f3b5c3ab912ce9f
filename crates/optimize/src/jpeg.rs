//! JPEG: a lossless transform of the file's segments, never of its
//! compressed image data. Kept byte for byte: every frame, table, scan and
//! restart marker, JFIF (APP0), the ICC profile (APP2 `ICC_PROFILE`) and
//! Adobe's colour transform (APP14). Rewritten: EXIF (APP1) down to its
//! orientation, or dropped when that is absent or 1 (upright). Dropped:
//! comments (COM), XMP and every other APPn (thumbnails, maker notes,
//! Photoshop resources, multi-picture indexes) and anything after the end
//! of the image. The Huffman tables are not re-optimised: no maintained
//! pure-Rust crate does that losslessly (spec/optimize.md).

use crate::{exif, Format, OptimizeError, MAX_DECODED_BYTES};

pub(crate) fn optimize(data: &[u8]) -> Result<Vec<u8>, OptimizeError> {
    let before = decode(data).map_err(|e| OptimizeError::invalid(Format::Jpeg, e))?;
    let out = strip(data).map_err(|e| OptimizeError::invalid(Format::Jpeg, e))?;
    if out.len() >= data.len() {
        return Ok(data.to_vec());
    }
    let after = decode(&out).map_err(|e| OptimizeError::changed(Format::Jpeg, format!("it does not decode: {e}")))?;
    if before != after {
        return Err(OptimizeError::changed(
            Format::Jpeg,
            "other pixels, colour profile or orientation",
        ));
    }
    Ok(out)
}

/// What a viewer shows: size, pixel format, pixels, ICC profile, orientation.
#[derive(PartialEq, Eq)]
struct Shown {
    width: u16,
    height: u16,
    pixel_format: String,
    pixels: Vec<u8>,
    icc: Option<Vec<u8>>,
    orientation: Option<u16>,
}

fn decode(data: &[u8]) -> Result<Shown, String> {
    let mut d = jpeg_decoder::Decoder::new(data);
    d.set_max_decoding_buffer_size(MAX_DECODED_BYTES);
    let pixels = d.decode().map_err(|e| e.to_string())?;
    let info = d.info().ok_or("no frame header")?;
    Ok(Shown {
        width: info.width,
        height: info.height,
        pixel_format: format!("{:?}", info.pixel_format),
        pixels,
        icc: d.icc_profile(),
        orientation: d.exif_data().and_then(exif::orientation).filter(|&o| o != 1),
    })
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const APP0: u8 = 0xE0;
const APP1: u8 = 0xE1;
const APP2: u8 = 0xE2;
const APP14: u8 = 0xEE;
const COM: u8 = 0xFE;

/// The file with only the segments that affect the image (see the module docs).
fn strip(data: &[u8]) -> Result<Vec<u8>, String> {
    if !data.starts_with(&[0xFF, SOI]) {
        return Err("it does not start with a JPEG start-of-image marker".into());
    }
    let truncated = || "the file ends inside a segment (truncated?)".to_string();
    let mut out = vec![0xFF, SOI];
    let mut i = 2;
    loop {
        if data.get(i) != Some(&0xFF) {
            return Err(format!("expected a marker at byte {i}"));
        }
        // A marker may be preceded by any number of 0xFF fill bytes.
        while data.get(i) == Some(&0xFF) {
            i += 1;
        }
        let marker = *data.get(i).ok_or_else(truncated)?;
        i += 1;
        match marker {
            EOI => {
                out.extend_from_slice(&[0xFF, EOI]);
                return Ok(out);
            }
            0x00 | 0x01 | SOI | 0xD0..=0xD7 => {
                return Err(format!("unexpected marker 0xFF{marker:02X} at byte {}", i - 2));
            }
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([
            *data.get(i).ok_or_else(truncated)?,
            *data.get(i + 1).ok_or_else(truncated)?,
        ]));
        if len < 2 {
            return Err(format!("segment 0xFF{marker:02X} at byte {} has length {len}", i - 2));
        }
        let body = data.get(i + 2..i + len).ok_or_else(truncated)?;
        let kept: Option<Vec<u8>> = match marker {
            APP0 if body.starts_with(b"JFIF\0") => Some(body.to_vec()),
            APP1 if body.starts_with(b"Exif\0\0") => exif::orientation(&body[6..])
                .filter(|&o| o != 1)
                .map(|o| [&b"Exif\0\0"[..], &exif::orientation_only(o)].concat()),
            APP2 if body.starts_with(b"ICC_PROFILE\0") => Some(body.to_vec()),
            APP14 => Some(body.to_vec()),
            APP0..=0xEF | COM => None,
            _ => Some(body.to_vec()),
        };
        if let Some(body) = kept {
            out.extend_from_slice(&[0xFF, marker]);
            out.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
            out.extend_from_slice(&body);
        }
        i += len;
        if marker == SOS {
            // Entropy-coded data runs to the next marker other than a
            // stuffed 0xFF00 or a restart marker.
            let start = i;
            loop {
                match data.get(i) {
                    None => return Err(truncated()),
                    Some(0xFF) => match data.get(i + 1) {
                        None => return Err(truncated()),
                        Some(0x00 | 0xD0..=0xD7) => i += 2,
                        Some(_) => break,
                    },
                    Some(_) => i += 1,
                }
            }
            out.extend_from_slice(&data[start..i]);
        }
    }
}
