//! Durations as users type them (`farm cache gc --older-than 30d`). Sizes
//! (`--max-size 10GiB`) and durations are read by `farm_formats`, whose
//! parsers every flag and farm.toml share.

pub use farm_formats::duration::{parse_duration, ParseDurationError};
