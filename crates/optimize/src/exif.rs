//! The one EXIF fact that changes how an image is shown: its orientation.
//! JPEG and WebP keep an EXIF block only for it, rewritten to hold nothing else.

/// The Orientation (tag 0x0112) in IFD0 of a TIFF-structured EXIF block,
/// when it is there and well-formed.
pub(crate) fn orientation(tiff: &[u8]) -> Option<u16> {
    let big = match tiff.get(..2)? {
        b"II" => false,
        b"MM" => true,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(at..at + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = u32_at(4)? as usize;
    let count = u16_at(ifd)? as usize;
    for i in 0..count {
        let entry = ifd + 2 + 12 * i;
        // SHORT, one value, held in the entry itself.
        if u16_at(entry)? == 0x0112 && u16_at(entry + 2)? == 3 && u32_at(entry + 4)? == 1 {
            return u16_at(entry + 8);
        }
    }
    None
}

/// A little-endian TIFF block whose IFD0 holds only `orientation`.
pub(crate) fn orientation_only(orientation: u16) -> Vec<u8> {
    let mut t = Vec::with_capacity(26);
    t.extend_from_slice(b"II");
    t.extend_from_slice(&42u16.to_le_bytes());
    t.extend_from_slice(&8u32.to_le_bytes());
    t.extend_from_slice(&1u16.to_le_bytes());
    t.extend_from_slice(&0x0112u16.to_le_bytes());
    t.extend_from_slice(&3u16.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&orientation.to_le_bytes());
    t.extend_from_slice(&[0, 0]);
    // No next IFD.
    t.extend_from_slice(&0u32.to_le_bytes());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orientation_round_trips_and_is_found_in_both_byte_orders() {
        assert_eq!(orientation(&orientation_only(6)), Some(6));
        let mut big = b"MM\0\x2a\0\0\0\x08\0\x02".to_vec();
        big.extend_from_slice(b"\x01\x0f\0\x02\0\0\0\x04Cam\0");
        big.extend_from_slice(b"\x01\x12\0\x03\0\0\0\x01\0\x08\0\0");
        big.extend_from_slice(&[0; 4]);
        assert_eq!(orientation(&big), Some(8));
        assert_eq!(orientation(b"II\x2a\0\xff\0\0\0"), None, "an IFD offset past the end");
        assert_eq!(orientation(b"XX"), None);
    }
}
