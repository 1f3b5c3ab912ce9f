//! farm's one implementation of each archive mechanism: the deterministic
//! tar writer ([`writer`]) behind image layers, docker archives and the
//! root directories imported into a container engine; the safe unpacker
//! ([`unpack`]) that turns tarballs and Debian packages into trees without
//! ever writing or linking outside them, within size limits; and the sorted directory walk ([`walk()`]) that
//! every tree reader uses, so that no output depends on readdir order.
//!
//! It is not an image tool or a store: callers decide which entries a tar
//! holds and with which owners, modes and times (the writer takes them as
//! given, in the order given), whether and how it is compressed, where an
//! unpacked tree goes, and what a walk's entries mean. Nor is the walk for
//! source snapshots that honour `.gitignore` (the engine uses the `ignore`
//! crate's walker for those). It never prints. The byte-level rules of the
//! formats it writes are in `spec/images.md` and `spec/sandbox.md`, the
//! unpacking rules in `spec/store.md` ("Archives").

pub mod unpack;
pub mod walk;
pub mod writer;

pub use unpack::{
    unpack_archive, unpack_tar_into, ArchiveFormat, Compression, Members, TarOptions, UnpackError, UnpackLimit,
    UnpackLimits, UnpackStats,
};
pub use walk::{walk, Walk, WalkEntry, WalkError};
pub use writer::{tar_order, write_tar, Format, TarEntry, TarError, TarKind, TarWriter};
