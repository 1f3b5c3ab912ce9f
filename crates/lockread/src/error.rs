//! One error type for every reader: each names the file (and line, where the
//! format has lines farm can point at) or the entry, what was expected and
//! what was found. URLs in messages are redacted where they are built.

use std::fmt::Write as _;

#[derive(Debug, thiserror::Error)]
pub enum LockReadError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    /// The file is not valid for its format.
    #[error("{}: {message}", at(file, *line))]
    Syntax {
        file: String,
        line: Option<usize>,
        message: String,
    },
    /// A format version this farm does not read.
    #[error("{file}: {found}; farm reads {supported}{hint}")]
    Version {
        file: String,
        found: String,
        supported: String,
        hint: String,
    },
    /// One entry (a lock key, a package) is malformed or refused.
    #[error("{}: {what}: {message}", at(file, *line))]
    Entry {
        file: String,
        line: Option<usize>,
        what: String,
        message: String,
    },
    /// Finding the lockfile for a directory failed.
    #[error("{dir}: {message}")]
    Detect { dir: String, message: String },
    /// The npm registry could not say what a package's tarball is.
    #[error("npm package `{package}`: {message}")]
    Registry { package: String, message: String },
    /// No wheel of a selected package fits the target.
    #[error("{}: package `{package}`: {message}", at(file, *line))]
    NoWheel {
        file: String,
        line: Option<usize>,
        package: String,
        message: String,
    },
}

fn at(file: &str, line: Option<usize>) -> String {
    let mut s = file.to_string();
    if let Some(l) = line {
        let _ = write!(s, ":{l}");
    }
    s
}

impl LockReadError {
    pub(crate) fn entry(file: &str, what: impl Into<String>, message: impl Into<String>) -> Self {
        LockReadError::Entry {
            file: file.into(),
            line: None,
            what: what.into(),
            message: message.into(),
        }
    }

    pub(crate) fn entry_at(file: &str, line: usize, what: impl Into<String>, message: impl Into<String>) -> Self {
        LockReadError::Entry {
            file: file.into(),
            line: Some(line),
            what: what.into(),
            message: message.into(),
        }
    }

    pub(crate) fn syntax(file: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        LockReadError::Syntax {
            file: file.into(),
            line,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        LockReadError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Reads a file for a reader, with the path in the error.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String, LockReadError> {
    std::fs::read_to_string(path).map_err(|e| LockReadError::io(path, e))
}

/// A serde_json error as a Syntax error with its line.
pub(crate) fn json_error(file: &str, e: serde_json::Error) -> LockReadError {
    let line = (e.line() > 0).then_some(e.line());
    LockReadError::syntax(file, line, format!("not valid JSON: {e}"))
}

/// A YAML error as a Syntax error with its line.
pub(crate) fn yaml_error(file: &str, e: yaml_serde::Error) -> LockReadError {
    let line = e.location().map(|l| l.line());
    LockReadError::syntax(file, line, format!("not valid YAML for this format: {e}"))
}

/// A TOML error as a Syntax error with its line (computed from the span).
pub(crate) fn toml_error(file: &str, text: &str, e: toml::de::Error) -> LockReadError {
    let line = e.span().map(|s| line_of(text, s.start));
    LockReadError::syntax(file, line, format!("not valid TOML for this format: {}", e.message()))
}

/// 1-based line number of byte offset `pos` in `text`.
pub(crate) fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
