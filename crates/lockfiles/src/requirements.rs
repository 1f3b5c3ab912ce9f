//! A backend's `requirements.txt` as farm reads it, before pip ever sees it.
//!
//! farm locks only packages of the configured index, named and pinned. So
//! every line that would make pip run code or fetch from elsewhere on the
//! machine that locks — a local path or archive (pip runs its `setup.py`),
//! a VCS URL (pip runs `git clone`), a direct URL, an editable install, an
//! include outside the project, options that add package sources or allow
//! source builds — is refused here, naming its file and line, before
//! anything runs. Lines are split the way pip splits them (continuations,
//! comments, Python's line breaks, abbreviated long options), so what is
//! checked is what pip would read.

use std::path::{Path, PathBuf};

use crate::redact::redact_text;

/// One requirement line (or constraint), as pip would read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The file it is in, project-relative when it lies in the project.
    pub file: String,
    /// Its line (the first one when continued with `\`).
    pub line: usize,
    /// The project name, PEP 503 normalised.
    pub name: String,
    /// Version specifiers without spaces or parentheses, e.g. `==1.0` or `>=1,<2`.
    pub specifier: String,
    /// The environment marker after `;`, if any.
    pub marker: Option<String>,
    /// `--hash` values, `algorithm:hex` in lower case.
    pub hashes: Vec<String>,
    /// From a `-c` constraints file: limits versions, installs nothing.
    pub constraint: bool,
}

impl Requirement {
    /// The one version `==V` (not a wildcard) or `===V` pins, if the specifier is that.
    pub fn pinned(&self) -> Option<&str> {
        let s = &self.specifier;
        if let Some(v) = s.strip_prefix("===") {
            return (!v.is_empty() && !v.contains(',')).then_some(v);
        }
        let v = s.strip_prefix("==")?;
        (!v.is_empty() && !v.contains(',') && !v.ends_with(".*")).then_some(v)
    }

    /// `file:line`, for messages.
    pub fn place(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// Everything a requirements file and its includes ask for.
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    pub items: Vec<Requirement>,
    /// Every file read (the requirements file and its `-r`/`-c` includes), canonical.
    pub files: Vec<PathBuf>,
    /// pip's hash-checking mode: `--require-hashes`, or any requirement with
    /// `--hash`. Then every package installed must be listed with its hashes.
    pub hash_mode: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RequirementsError {
    #[error("{file}: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file}:{line}: cannot read the included file {path}: {source}")]
    Include {
        file: String,
        line: usize,
        path: String,
        source: std::io::Error,
    },
    #[error("{file}: outside the project directory {root}; hint: keep the requirements file inside the project")]
    Outside { file: String, root: String },
    #[error("{file}:{line}: {what}: `{text}`\nhint: {hint}")]
    Refused {
        file: String,
        line: usize,
        /// The offending line, URLs redacted.
        text: String,
        what: String,
        hint: String,
    },
}

const PUBLISH_HINT: &str = "farm locks only packages of the configured index, pinned by name; publish the package (as a wheel) to that index and write `name==version`";

/// Reads `path` and every file it includes, refusing what farm does not
/// lock (module docs). `root` is the project: includes must stay inside it.
pub fn read(path: &Path, root: &Path) -> Result<Requirements, RequirementsError> {
    let root = root.canonicalize().map_err(|source| RequirementsError::Io {
        file: root.display().to_string(),
        source,
    })?;
    let file = path.canonicalize().map_err(|source| RequirementsError::Io {
        file: path.display().to_string(),
        source,
    })?;
    if !file.starts_with(&root) {
        return Err(RequirementsError::Outside {
            file: path.display().to_string(),
            root: root.display().to_string(),
        });
    }
    let mut out = Requirements::default();
    visit(&file, &root, false, &mut out)?;
    Ok(out)
}

fn shown(file: &Path, root: &Path) -> String {
    file.strip_prefix(root).unwrap_or(file).display().to_string()
}

fn visit(file: &Path, root: &Path, constraint: bool, out: &mut Requirements) -> Result<(), RequirementsError> {
    if out.files.iter().any(|f| f == file) {
        return Ok(());
    }
    out.files.push(file.to_path_buf());
    let name = shown(file, root);
    let text = std::fs::read_to_string(file).map_err(|source| RequirementsError::Io {
        file: name.clone(),
        source,
    })?;
    for (line, content) in logical_lines(&text) {
        let refuse = |what: &str, hint: &str| RequirementsError::Refused {
            file: name.clone(),
            line,
            text: redact_text(&content).into_owned(),
            what: what.into(),
            hint: hint.into(),
        };
        if content.contains("${") {
            return Err(refuse(
                "an environment variable reference (pip would expand it to text farm cannot check)",
                "write the value out",
            ));
        }
        let (args, options) = break_args_options(&content);
        let options = parse_options(&options).map_err(|(what, hint)| refuse(&what, &hint))?;
        if args.is_empty() {
            for (opt, value) in options {
                match opt {
                    Opt::Requirement | Opt::Constraint => {
                        let value = value.unwrap_or_default();
                        let nested = include(file, root, &value).map_err(|e| match e {
                            IncludeError::Refused(what, hint) => refuse(&what, &hint),
                            IncludeError::Io(path, source) => RequirementsError::Include {
                                file: name.clone(),
                                line,
                                path,
                                source,
                            },
                        })?;
                        visit(&nested, root, constraint || opt == Opt::Constraint, out)?;
                    }
                    Opt::RequireHashes => out.hash_mode = true,
                    Opt::Pre | Opt::PreferBinary | Opt::OnlyBinary => {}
                    Opt::Hash => {
                        return Err(refuse(
                            "`--hash` without a requirement",
                            "put it after the requirement it belongs to",
                        ))
                    }
                }
            }
            continue;
        }
        let mut hashes = Vec::new();
        for (opt, value) in options {
            match opt {
                Opt::Hash => {
                    let value = value.unwrap_or_default().to_ascii_lowercase();
                    let ok = value.split_once(':').is_some_and(|(algo, hex)| {
                        matches!(algo, "sha256" | "sha384" | "sha512")
                            && !hex.is_empty()
                            && hex.chars().all(|c| c.is_ascii_hexdigit())
                    });
                    if !ok {
                        return Err(refuse(
                            "a `--hash` that is not `sha256:<hex>` (or sha384/sha512)",
                            "copy the hash from the index, e.g. --hash=sha256:<64 hex digits>",
                        ));
                    }
                    hashes.push(value);
                }
                _ => {
                    return Err(refuse(
                        "an option after a requirement other than `--hash`",
                        "only `--hash` may follow a requirement; put file options on a line of their own",
                    ))
                }
            }
        }
        let parsed = parse_requirement(&args).map_err(|(what, hint)| refuse(what, hint))?;
        if !hashes.is_empty() && !constraint {
            out.hash_mode = true;
        }
        out.items.push(Requirement {
            file: name.clone(),
            line,
            name: crate::pypi::normalize_project(&parsed.name),
            specifier: parsed.specifier,
            marker: parsed.marker,
            hashes,
            constraint,
        });
    }
    Ok(())
}

enum IncludeError {
    Refused(String, String),
    Io(String, std::io::Error),
}

/// The canonical path of `-r`/`-c value`, relative to the including file as
/// pip reads it; refused when it is a URL or lies outside `root`.
fn include(from: &Path, root: &Path, value: &str) -> Result<PathBuf, IncludeError> {
    if value.is_empty() {
        return Err(IncludeError::Refused(
            "an include without a file name".into(),
            "write `-r other-requirements.txt`".into(),
        ));
    }
    if value.contains("://") || value.to_ascii_lowercase().starts_with("file:") {
        return Err(IncludeError::Refused(
            "an include from a URL (pip would download it)".into(),
            "copy the file into the project and include it by relative path".into(),
        ));
    }
    let path = from.parent().unwrap_or(Path::new("/")).join(value);
    let canonical = path
        .canonicalize()
        .map_err(|e| IncludeError::Io(path.display().to_string(), e))?;
    if !canonical.starts_with(root) {
        return Err(IncludeError::Refused(
            format!("an include outside the project ({})", canonical.display()),
            "copy the file into the project and include it by relative path".into(),
        ));
    }
    Ok(canonical)
}

/// Python's `str.splitlines` separators: pip splits a file with it, so a
/// form feed or a lone `\r` starts a new line for pip and must here too.
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r' | '\x0b' | '\x0c' | '\x1c' | '\x1d' | '\x1e' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

fn split_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if is_line_break(c) {
            out.push(&text[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = chars.peek() {
                    chars.next();
                    end = j + 1;
                }
            }
            start = end;
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

/// Where a comment starts: a `#` at the start or after whitespace (pip's
/// `(^|\s+)#.*$`).
fn comment_start(line: &str) -> Option<usize> {
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return Some(i);
        }
        prev_space = c.is_whitespace();
    }
    None
}

/// pip's `join_lines` then `ignore_comments`: `(first line number, text)`
/// of every non-empty logical line.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut joined: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in split_lines(text).into_iter().enumerate() {
        let n = i + 1;
        let starts_comment = line.trim_start().starts_with('#');
        if !line.ends_with('\\') || starts_comment {
            let line = if starts_comment {
                format!(" {line}")
            } else {
                line.to_string()
            };
            match pending.take() {
                Some((first, mut acc)) => {
                    acc.push_str(&line);
                    joined.push((first, acc));
                }
                None => joined.push((n, line)),
            }
        } else {
            let part = line.trim_matches('\\');
            match &mut pending {
                Some((_, acc)) => acc.push_str(part),
                None => pending = Some((n, part.to_string())),
            }
        }
    }
    joined.extend(pending);
    joined
        .into_iter()
        .filter_map(|(n, line)| {
            let line = match comment_start(&line) {
                Some(i) => &line[..i],
                None => &line[..],
            };
            let line = line.trim();
            (!line.is_empty()).then(|| (n, line.to_string()))
        })
        .collect()
}

/// pip's `break_args_options`: the words before the first one starting
/// with `-` are the requirement; the rest are options. Split on single
/// spaces, exactly as pip does.
fn break_args_options(line: &str) -> (String, String) {
    let tokens: Vec<&str> = line.split(' ').collect();
    let n = tokens.iter().position(|t| t.starts_with('-')).unwrap_or(tokens.len());
    (tokens[..n].join(" ").trim().to_string(), tokens[n..].join(" "))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Requirement,
    Constraint,
    RequireHashes,
    Pre,
    PreferBinary,
    OnlyBinary,
    Hash,
}

/// Every long option pip's requirements-file parser knows, with whether it
/// takes a value; optparse accepts any unambiguous prefix of these.
const LONG_OPTIONS: [(&str, bool); 17] = [
    ("--index-url", true),
    ("--pypi-url", true),
    ("--extra-index-url", true),
    ("--no-index", false),
    ("--constraint", true),
    ("--requirement", true),
    ("--editable", true),
    ("--find-links", true),
    ("--no-binary", true),
    ("--only-binary", true),
    ("--prefer-binary", false),
    ("--require-hashes", false),
    ("--pre", false),
    ("--trusted-host", true),
    ("--use-feature", true),
    ("--global-option", true),
    ("--hash", true),
];
const CONFIG_SETTINGS: &str = "--config-settings";

fn short_option(c: char) -> Option<&'static str> {
    Some(match c {
        'i' => "--index-url",
        'c' => "--constraint",
        'r' => "--requirement",
        'e' => "--editable",
        'f' => "--find-links",
        'C' => CONFIG_SETTINGS,
        _ => return None,
    })
}

fn takes_value(long: &str) -> bool {
    long == CONFIG_SETTINGS || LONG_OPTIONS.iter().any(|(n, v)| *n == long && *v)
}

/// The full option a long option (or optparse abbreviation) names.
fn resolve_long(given: &str) -> Option<&'static str> {
    let all = LONG_OPTIONS.iter().map(|(n, _)| *n).chain([CONFIG_SETTINGS]);
    if let Some(exact) = all.clone().find(|n| *n == given) {
        return Some(exact);
    }
    let mut matches = all.filter(|n| n.starts_with(given));
    let first = matches.next()?;
    matches.next().is_none().then_some(first)
}

type Refusal = (String, String);

/// Splits the options part like `shlex.split` (quotes and backslashes).
fn shell_words(s: &str) -> Result<Vec<String>, Refusal> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => match chars.next() {
                            Some(e) => cur.push(e),
                            None => break,
                        },
                        Some(x) => cur.push(x),
                        None => return Err(("an unterminated quote".into(), "close the quote".into())),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(e) = chars.next() {
                    cur.push(e);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// The options of a line, each allowed one with its value; the first one
/// farm does not allow is refused with why and what to do instead.
fn parse_options(s: &str) -> Result<Vec<(Opt, Option<String>)>, Refusal> {
    let words = shell_words(s)?;
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        i += 1;
        let (long, mut value) = if let Some(rest) = word.strip_prefix("--") {
            if rest.is_empty() {
                return Err(("a bare `--`".into(), "remove it".into()));
            }
            let (given, value) = match word.split_once('=') {
                Some((g, v)) => (g, Some(v.to_string())),
                None => (word.as_str(), None),
            };
            let Some(long) = resolve_long(given) else {
                return Err((
                    format!("an option pip does not know here (`{given}`)"),
                    "remove it".into(),
                ));
            };
            (long, value)
        } else if let Some(rest) = word.strip_prefix('-') {
            let mut chars = rest.chars();
            let Some(long) = chars.next().and_then(short_option) else {
                return Err((
                    format!("an option farm does not allow in a requirements file (`{word}`)"),
                    "remove it".into(),
                ));
            };
            let attached: String = chars.collect();
            let attached = attached.strip_prefix('=').map(str::to_string).unwrap_or(attached);
            (long, (!attached.is_empty()).then_some(attached))
        } else {
            return Err((
                format!("`{word}` after the options, which pip would ignore"),
                "put each requirement on a line of its own".into(),
            ));
        };
        if takes_value(long) && value.is_none() {
            value = words.get(i).cloned();
            i += 1;
        }
        let opt = match long {
            "--requirement" => Opt::Requirement,
            "--constraint" => Opt::Constraint,
            "--require-hashes" => Opt::RequireHashes,
            "--pre" => Opt::Pre,
            "--prefer-binary" => Opt::PreferBinary,
            "--hash" => Opt::Hash,
            "--only-binary" => {
                if value
                    .as_deref()
                    .unwrap_or_default()
                    .split(',')
                    .any(|v| v.trim() == ":none:")
                {
                    return Err((
                        "`--only-binary :none:`, which lets pip build packages from source (running their code)".into(),
                        "remove it: farm locks wheels only".into(),
                    ));
                }
                Opt::OnlyBinary
            }
            "--editable" => {
                return Err((
                    "an editable install (pip would build the project on this machine, running its code)".into(),
                    format!("install the backend's own code from its sources, not from requirements; {PUBLISH_HINT}"),
                ))
            }
            "--index-url" | "--pypi-url" | "--extra-index-url" | "--find-links" | "--trusted-host" | "--no-index" => {
                return Err((
                    format!("`{long}`, which would let pip use another package source than the configured index"),
                    "remove it and set the index in your pip configuration or farm.toml [registries] pypi".into(),
                ))
            }
            "--no-binary" => {
                return Err((
                    "`--no-binary`, which lets pip build packages from source (running their code)".into(),
                    "remove it: farm locks wheels only".into(),
                ))
            }
            other => {
                return Err((
                    format!("`{other}`, an option farm does not allow in a requirements file"),
                    "remove it".into(),
                ))
            }
        };
        out.push((opt, value));
    }
    Ok(out)
}

struct ParsedRequirement {
    name: String,
    specifier: String,
    marker: Option<String>,
}

const ARCHIVE_SUFFIXES: [&str; 12] = [
    ".whl",
    ".zip",
    ".tar.gz",
    ".tgz",
    ".tar",
    ".tar.bz2",
    ".tbz",
    ".tar.xz",
    ".txz",
    ".tlz",
    ".tar.lz",
    ".tar.lzma",
];

/// `name[extras] <specifiers> [; marker]`, and nothing else: a line that is
/// (or contains) a path, archive or URL is refused, naming what it is.
fn parse_requirement(text: &str) -> Result<ParsedRequirement, (&'static str, &'static str)> {
    let lower = text.to_ascii_lowercase();
    let vcs = ["git+", "hg+", "svn+", "bzr+"]
        .iter()
        .any(|p| lower.starts_with(p) || lower.contains(&format!("@{p}")) || lower.contains(&format!(" {p}")));
    if vcs {
        return Err(("a VCS URL (pip would clone and build it on this machine)", PUBLISH_HINT));
    }
    if lower.contains("://") || lower.starts_with("file:") || lower.contains("@file:") || lower.contains(" file:") {
        return Err(("a URL (pip would download it and may build it)", PUBLISH_HINT));
    }
    if text.contains('@') {
        return Err(("a direct reference (`name @ URL`)", PUBLISH_HINT));
    }
    let (head, marker) = match text.split_once(';') {
        Some((h, m)) => (h.trim(), Some(m.trim())),
        None => (text.trim(), None),
    };
    if head.starts_with(['.', '/', '~']) || head.contains(['/', '\\']) {
        return Err((
            "a local path (pip would run the package's setup.py on this machine)",
            PUBLISH_HINT,
        ));
    }
    let name_end = head
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)))
        .unwrap_or(head.len());
    let name = &head[..name_end];
    if ARCHIVE_SUFFIXES.iter().any(|s| name.to_ascii_lowercase().ends_with(s)) {
        return Err(("a local archive (pip would install that file)", PUBLISH_HINT));
    }
    let bad = (
        "not a requirement farm can lock",
        "write `name==version` (optionally `name[extra]`, other version specifiers and `; marker`)",
    );
    let valid_name = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_name {
        return Err(bad);
    }
    let mut rest = head[name_end..].trim_start();
    if let Some(after) = rest.strip_prefix('[') {
        let Some(close) = after.find(']') else { return Err(bad) };
        let extras = &after[..close];
        if !extras.chars().all(|c| c.is_ascii_alphanumeric() || "._-, ".contains(c)) {
            return Err(bad);
        }
        rest = after[close + 1..].trim_start();
    }
    let spec_chars_ok = rest
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".*+!<>=~,()_- \t".contains(c));
    if !spec_chars_ok || !(rest.is_empty() || rest.starts_with(['<', '>', '=', '!', '~', '('])) {
        return Err(bad);
    }
    let specifier: String = rest
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '(' && *c != ')')
        .collect();
    let marker = match marker {
        Some(m) if m.is_empty() || !marker_ok(m) => {
            return Err((
                "an environment marker farm cannot read",
                "write markers such as `; python_version >= \"3.12\"`",
            ))
        }
        Some(m) => Some(m.to_string()),
        None => None,
    };
    Ok(ParsedRequirement {
        name: name.to_string(),
        specifier,
        marker,
    })
}

/// A marker is names, comparison operators, parentheses and quoted strings.
fn marker_ok(marker: &str) -> bool {
    let mut chars = marker.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                if !chars.by_ref().any(|x| x == c) {
                    return false;
                }
            }
            c if c.is_ascii_alphanumeric() || "_.()<>=!~ \t".contains(c) => {}
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    fn read_in(dir: &tempfile::TempDir, file: &str) -> Result<Requirements, RequirementsError> {
        read(&dir.path().join(file), dir.path())
    }

    #[test]
    fn pins_hashes_markers_and_includes_are_read_as_pip_reads_them() {
        let dir = project(&[
            (
                "api/requirements.txt",
                "# top\nFastAPI[all] == 0.115.6  # web\npydantic>=2,<3 ; python_version >= \"3.12\"\n\
                 anyio==4.8.0 \\\n    --hash=sha256:AB12 \\\n    --hash sha256:cd34\n-r base.txt\n-c constraints.txt\n--require-hashes\n",
            ),
            ("api/base.txt", "typing_extensions===4.12.2\n"),
            ("api/constraints.txt", "idna==3.10\n"),
        ]);
        let r = read_in(&dir, "api/requirements.txt").unwrap();
        assert!(r.hash_mode);
        assert_eq!(r.files.len(), 3);
        let by: Vec<(&str, &str, usize, Option<&str>, bool)> = r
            .items
            .iter()
            .map(|i| (i.name.as_str(), i.file.as_str(), i.line, i.pinned(), i.constraint))
            .collect();
        assert_eq!(
            by,
            [
                ("fastapi", "api/requirements.txt", 2, Some("0.115.6"), false),
                ("pydantic", "api/requirements.txt", 3, None, false),
                ("anyio", "api/requirements.txt", 4, Some("4.8.0"), false),
                ("typing-extensions", "api/base.txt", 1, Some("4.12.2"), false),
                ("idna", "api/constraints.txt", 1, Some("3.10"), true),
            ]
        );
        assert_eq!(r.items[1].marker.as_deref(), Some("python_version >= \"3.12\""));
        assert_eq!(r.items[2].hashes, ["sha256:ab12", "sha256:cd34"]);
    }

    /// Every way of naming code outside the index is refused with its file,
    /// line, text and a hint.
    #[test]
    fn paths_urls_vcs_editables_and_foreign_sources_are_refused_with_file_and_line() {
        let cases = [
            ("./pkg", "local path"),
            ("/abs/pkg", "local path"),
            ("pkg/sub", "local path"),
            ("..\\pkg", "local path"),
            ("file:pkg", "URL"),
            ("file:///tmp/pkg", "URL"),
            ("pkg @ file:///tmp/pkg", "URL"),
            ("pkg-1.0.tar.gz", "local archive"),
            ("pkg-1.0-py3-none-any.whl", "local archive"),
            ("git+https://example.invalid/x.git#egg=x", "VCS URL"),
            ("x @ git+ssh://git@example.invalid/x.git", "VCS URL"),
            ("hg+https://example.invalid/x", "VCS URL"),
            ("svn+svn://example.invalid/x", "VCS URL"),
            ("bzr+lp:x", "VCS URL"),
            ("https://example.invalid/x-1.0-py3-none-any.whl", "URL"),
            ("x @ https://example.invalid/x-1.0-py3-none-any.whl", "URL"),
            ("x@https://example.invalid/x.whl", "URL"),
            ("-e ./pkg", "editable"),
            ("-e.", "editable"),
            ("--editable=./pkg", "editable"),
            ("--edit ./pkg", "editable"),
            ("-e git+https://example.invalid/x.git#egg=x", "editable"),
            (
                "--extra-index-url https://example.invalid/simple",
                "another package source",
            ),
            ("--extra https://example.invalid/simple", "another package source"),
            ("-i https://example.invalid/simple", "another package source"),
            ("-ihttps://example.invalid/simple", "another package source"),
            ("--find-links=/opt/wheels", "another package source"),
            ("--no-binary :all:", "from source"),
            ("--only-binary=:none:", "from source"),
            ("x==1.0 --global-option=--x", "does not allow"),
            ("x==1.0 -e ./pkg", "editable"),
            ("x==1.0 --pre", "other than `--hash`"),
            ("${PKG}", "environment variable"),
            ("-r https://example.invalid/r.txt", "from a URL"),
        ];
        for (line, what) in cases {
            let dir = project(&[("requirements.txt", &format!("fastapi==0.115.6\n{line}\n"))]);
            let err = read_in(&dir, "requirements.txt").unwrap_err().to_string();
            assert!(err.starts_with("requirements.txt:2: "), "{line}: {err}");
            assert!(err.contains(what), "{line}: expected {what:?} in {err}");
            assert!(err.contains("hint: "), "{line}: {err}");
        }
    }

    /// pip joins `\` continuations and splits on form feeds and lone `\r`:
    /// hiding a line in either is still refused, at pip's line number.
    #[test]
    fn continuations_and_python_line_breaks_do_not_hide_a_line() {
        for (text, line) in [
            ("fastapi==0.115.6\n-e \\\n./pkg\n", 2),
            ("fastapi==0.115.6\x0c./pkg\n", 2),
            ("fastapi==0.115.6\r./pkg\n", 2),
            ("# a comment \\\n./pkg\n", 2),
        ] {
            let dir = project(&[("requirements.txt", text)]);
            let err = read_in(&dir, "requirements.txt").unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("requirements.txt:{line}: ")),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn includes_must_stay_in_the_project_and_their_lines_are_checked_too() {
        let dir = project(&[
            ("app/requirements.txt", "-r ../outside.txt\n"),
            ("outside.txt", "x==1\n"),
        ]);
        let err = read(&dir.path().join("app/requirements.txt"), &dir.path().join("app"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("requirements.txt:1: an include outside the project"),
            "{err}"
        );
        let dir = project(&[("requirements.txt", "-r base.txt\n"), ("base.txt", "x==1\n\n-e .\n")]);
        let err = read_in(&dir, "requirements.txt").unwrap_err().to_string();
        assert!(err.starts_with("base.txt:3: an editable install"), "{err}");
        let dir = project(&[("requirements.txt", "-r missing.txt\n")]);
        let err = read_in(&dir, "requirements.txt").unwrap_err().to_string();
        assert!(
            err.starts_with("requirements.txt:1: cannot read the included file"),
            "{err}"
        );
        // A cycle of includes ends.
        let dir = project(&[
            ("requirements.txt", "-r b.txt\nx==1\n"),
            ("b.txt", "-r requirements.txt\n"),
        ]);
        assert_eq!(read_in(&dir, "requirements.txt").unwrap().items.len(), 1);
    }

    #[test]
    fn credentials_in_refused_lines_are_redacted() {
        let dir = project(&[("requirements.txt", "x @ https://user:s3cret@example.invalid/x.whl\n")]);
        let err = read_in(&dir, "requirements.txt").unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
