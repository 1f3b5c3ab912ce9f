//! Deterministic OCI images for farm, built from directory trees without a
//! container engine: reproducible tar layers ([`layer`]), pinned gzip/zstd
//! compression with a cache keyed by the uncompressed digest ([`compress`]),
//! deterministic parallel gzip ([`gzip`]),
//! OCI image layouts ([`layout`]), `docker load` archives ([`archive`]),
//! pushing to any OCI registry ([`push`]) with the artifacts that refer to
//! an image ([`referrers`]), and loading into Docker or Podman
//! ([`engine`]).
//!
//! It is not a general image tool: it does not pull, unpack or run images,
//! never execs a container engine to build, and takes its inputs (trees in
//! farm's store, SOURCE_DATE_EPOCH) from the caller. The byte-level rules
//! are written down in `spec/images.md`.

pub mod archive;
mod cache;
pub mod compress;
mod digest;
pub mod engine;
pub mod gzip;
pub mod layer;
pub mod layout;
pub mod push;
pub mod referrers;

pub use archive::{write_docker_archive, ArchiveError};
pub use compress::{Compression, CompressionSettings};
pub use engine::{load_into_engine, EngineError, LoadedImage};
pub use layer::{LayerContent, LayerError, LayerSpec};
pub use layout::{build_image, BuildStats, BuiltImage, BuiltLayer, ImageConfig, ImageSpec, LayoutError};
pub use push::{push, PushError, PushOptions, PushReport};

/// Any failure of this crate; each variant is one area's own error enum.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}
