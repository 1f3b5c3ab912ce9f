//! The store the tests of one machine share between runs.

use std::path::PathBuf;

/// `$FARM_TEST_HOME`, else `~/.cache/farm-tests` (`$XDG_CACHE_HOME/farm-tests`):
/// a farm home kept between test runs, so a second run downloads nothing.
pub fn shared_farm_home() -> PathBuf {
    if let Some(p) = std::env::var_os("FARM_TEST_HOME") {
        return PathBuf::from(p);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"));
    base.join("farm-tests")
}
