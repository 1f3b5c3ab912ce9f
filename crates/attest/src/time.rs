//! Timestamps as the documents write them: farm-formats' RFC 3339 text,
//! the same as the images and build defines carry.

use std::time::{SystemTime, UNIX_EPOCH};

pub use farm_formats::timestamp::rfc3339 as iso8601;

/// A wall-clock time as [`iso8601`] (whole seconds).
pub fn system_time(t: SystemTime) -> String {
    iso8601(t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0))
}
