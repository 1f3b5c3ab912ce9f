//! Just enough of the ZIP format to read one small member of a wheel
//! (`*.dist-info/METADATA`): the central directory, stored and deflated
//! members, sizes bounded. Wheels are ZIP files (PEP 427).

use std::io::Read;

/// The most a member may inflate to: METADATA is a few KiB.
const MAX_MEMBER: u64 = 4 << 20;
const EOCD_SIG: u32 = 0x0605_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The contents of the first member whose name `want` accepts; `Err`
/// describes what is wrong with the archive.
pub fn read_member(zip: &[u8], want: impl Fn(&str) -> bool) -> Result<Option<Vec<u8>>, String> {
    // The end-of-central-directory record is in the last 64 KiB + 22 bytes.
    let start = zip.len().saturating_sub(65_557);
    let eocd = (start..zip.len().saturating_sub(21))
        .rev()
        .find(|&i| u32_at(zip, i) == Some(EOCD_SIG))
        .ok_or("no end of central directory: not a ZIP file")?;
    let entries = u16_at(zip, eocd + 10).ok_or("truncated")? as usize;
    let mut at = u32_at(zip, eocd + 16).ok_or("truncated")? as usize;
    for _ in 0..entries {
        if u32_at(zip, at) != Some(CENTRAL_SIG) {
            return Err(format!("bad central directory entry at byte {at}"));
        }
        let method = u16_at(zip, at + 10).ok_or("truncated")?;
        let compressed = u32_at(zip, at + 20).ok_or("truncated")? as usize;
        let size = u32_at(zip, at + 24).ok_or("truncated")? as u64;
        let name_len = u16_at(zip, at + 28).ok_or("truncated")? as usize;
        let extra_len = u16_at(zip, at + 30).ok_or("truncated")? as usize;
        let comment_len = u16_at(zip, at + 32).ok_or("truncated")? as usize;
        let local = u32_at(zip, at + 42).ok_or("truncated")? as usize;
        let name = zip.get(at + 46..at + 46 + name_len).ok_or("truncated")?;
        at += 46 + name_len + extra_len + comment_len;
        let Ok(name) = std::str::from_utf8(name) else { continue };
        if !want(name) {
            continue;
        }
        if size > MAX_MEMBER {
            return Err(format!("{name}: {size} bytes, more than a metadata file can be"));
        }
        if u32_at(zip, local) != Some(LOCAL_SIG) {
            return Err(format!("{name}: bad local header"));
        }
        let data_at = local
            + 30
            + u16_at(zip, local + 26).ok_or("truncated")? as usize
            + u16_at(zip, local + 28).ok_or("truncated")? as usize;
        let data = zip.get(data_at..data_at + compressed).ok_or("truncated member")?;
        let mut out = Vec::new();
        match method {
            0 => out.extend_from_slice(data),
            8 => {
                flate2::read::DeflateDecoder::new(data)
                    .take(MAX_MEMBER + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("{name}: {e}"))?;
            }
            m => {
                return Err(format!(
                    "{name}: compression method {m}; expected stored (0) or deflate (8)"
                ))
            }
        }
        if out.len() as u64 != size {
            return Err(format!("{name}: {} bytes, the directory says {size}", out.len()));
        }
        return Ok(Some(out));
    }
    Ok(None)
}
