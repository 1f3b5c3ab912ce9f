//! Unpacking for [`crate::Store::add_archive`]: farm-archive's safe
//! unpacker, whose types stay part of this crate's API.

pub use farm_archive::unpack::{
    unpack_archive, ArchiveFormat, Compression, UnpackError, UnpackLimit, UnpackLimits, UnpackStats,
};
