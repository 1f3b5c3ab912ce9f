//! farm's content-addressed store: immutable, normalised entries named
//! `<tree digest>-<name>` under `$FARM_HOME/store/`, added atomically from
//! files, trees, tarballs, .debs or a directory the caller fills; the tree
//! digest that names them; and the SQLite database beside them that maps
//! lock integrities to entries, keeps the action cache, and drives
//! `farm cache gc` and `farm store verify`. Several farm processes may use
//! one store at once.
//!
//! It is not a downloader, a build system or a sandbox: callers fetch,
//! verify lock integrities and run steps, then hand the results to the
//! store. It never prints; reports are returned for the caller to show.
//! The formats are specified in spec/store.md and spec/tree-digest.md.

mod db;
mod digest;
mod gc;
mod staging;
mod store;
mod tree;
mod units;
mod unpack;
mod verify;

pub use digest::{tree_digest, Digest, DigestParseError};
pub use gc::{GcOptions, GcReport};
pub use staging::{StagingDir, TmpStatus};
pub use store::{
    parse_file_name, sanitize_entry_name, validate_entry_name, Store, StoreEntry, StoreError, StoreStatus,
    MAX_NAME_LEN, STORE_MTIME,
};
pub use tree::{normalise_tree, TreeError};
pub use units::{parse_duration, ParseDurationError};
pub use unpack::{unpack_archive, ArchiveFormat, Compression, UnpackError, UnpackLimit, UnpackLimits, UnpackStats};
pub use verify::{Actual, Corrupt, VerifyReport};
