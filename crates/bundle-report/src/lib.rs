//! Bundle analysis of a built Vite `dist/` directory, for `farm build --analyze`,
//! `--size-limit` and `farm analyze`: which files the browser downloads, how big
//! they are raw and gzipped, which are entries, and (from sourcemaps) which source
//! modules fill each chunk. Output is a canonical JSON report and a self-contained
//! HTML page with a treemap, both byte-identical for the same `dist/`.
//!
//! Not for building or serving the frontend, and not a minifier audit: sizes are
//! of the files as Vite wrote them, and module sizes are the sizes of the sources
//! embedded in the sourcemaps (what went in), not bytes attributed in the output.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};

/// Bumped when the JSON report's shape changes.
pub const REPORT_FORMAT_VERSION: u32 = 1;

/// Where the Vite manifest lives inside `dist/` (Vite 5 and later).
const VITE_MANIFEST: &str = ".vite/manifest.json";

/// Size of the treemap's coordinate space (the SVG scales to the page width).
const TREEMAP_WIDTH: f64 = 960.0;
const TREEMAP_HEIGHT: f64 = 540.0;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("{}: no frontend build output here\nhint: run the frontend build first (farm build frontend)", path.display())]
    MissingDist { path: PathBuf },
    #[error("{}: expected the Vite build output directory (dist/), found a file", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{}: cannot read frontend build output: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: file name is not valid UTF-8; bundle paths must be UTF-8 to be served and reported", path.display())]
    NonUtf8Name { path: PathBuf },
    #[error("{}: expected a regular file or directory in the build output, found {found}", path.display())]
    UnsupportedEntry { path: PathBuf, found: &'static str },
    #[error("{}: invalid Vite manifest: {detail}\nhint: delete dist/ and rebuild; the manifest is written by `build.manifest` in vite.config", path.display())]
    Manifest { path: PathBuf, detail: String },
    #[error("{}: invalid sourcemap: {detail}\nhint: rebuild, or turn off `build.sourcemap` in vite.config if maps are not wanted", path.display())]
    Sourcemap { path: PathBuf, detail: String },
}

/// What a file in `dist/` is, as far as the bundle is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// JavaScript loaded directly by a page (manifest `isEntry`, or a module script in HTML).
    Entry,
    /// Any other JavaScript (shared or lazily imported chunks).
    Chunk,
    Css,
    Html,
    /// Images, fonts, wasm, json and everything else that is served.
    Asset,
    /// `*.map`: listed, never counted in the bundle total.
    Sourcemap,
    /// Build metadata under `.vite/` (the manifest): not downloaded by the app.
    Metadata,
    /// `*.gz` / `*.br` / `*.zst` twins of another file: counted once, as the original.
    Precompressed,
}

impl FileKind {
    /// Whether the file's bytes count toward the bundle total and the size limit.
    pub fn counts_toward_bundle(self) -> bool {
        !matches!(self, FileKind::Sourcemap | FileKind::Metadata | FileKind::Precompressed)
    }

    fn label(self) -> &'static str {
        match self {
            FileKind::Entry => "entry",
            FileKind::Chunk => "chunk",
            FileKind::Css => "css",
            FileKind::Html => "html",
            FileKind::Asset => "asset",
            FileKind::Sourcemap => "sourcemap",
            FileKind::Metadata => "metadata",
            FileKind::Precompressed => "precompressed",
        }
    }

    fn color(self) -> &'static str {
        match self {
            FileKind::Entry => "#3b6ea5",
            FileKind::Chunk => "#4f9a5a",
            FileKind::Css => "#9b6bb0",
            FileKind::Html => "#a0785a",
            FileKind::Asset => "#c0951f",
            FileKind::Sourcemap | FileKind::Metadata | FileKind::Precompressed => "#888888",
        }
    }
}

/// How entry chunks were told apart from other chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntrySource {
    /// `dist/.vite/manifest.json` (`isEntry`).
    ViteManifest,
    /// `<script type="module" src>` in the HTML files of `dist/`.
    Html,
    /// Neither was available: every script is reported as a chunk.
    None,
}

/// One source module embedded in a chunk's sourcemap.
// Fields are declared in alphabetical order so the JSON keys come out sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceModule {
    /// The source's path as the sourcemap names it, with leading `../` and `./` removed.
    pub path: String,
    /// Byte length of the module's `sourcesContent` entry.
    pub source_bytes: u64,
}

/// One file of `dist/`.
// Fields are declared in alphabetical order so the JSON keys come out sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleFile {
    pub bytes: u64,
    /// Files this chunk imports lazily (from the Vite manifest).
    pub dynamic_imports: Vec<String>,
    /// Size after gzip at level 9, computed in memory.
    pub gzip_bytes: u64,
    /// Files this chunk imports statically (from the Vite manifest).
    pub imports: Vec<String>,
    pub kind: FileKind,
    /// Source modules, sorted by path; empty without a sourcemap carrying `sourcesContent`.
    pub modules: Vec<SourceModule>,
    /// The chunk's name in the Vite manifest.
    pub name: Option<String>,
    /// Path relative to `dist/`, `/`-separated.
    pub path: String,
    /// The sourcemap the modules were read from, relative to `dist/`.
    pub sourcemap: Option<String>,
}

/// Sums over the files that count toward the bundle (everything but sourcemaps,
/// `.vite/` metadata and precompressed twins), plus the sourcemaps on the side.
// Fields are declared in alphabetical order so the JSON keys come out sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BundleTotals {
    pub assets: u64,
    pub bytes: u64,
    pub chunks: u64,
    pub css: u64,
    pub entries: u64,
    pub files: u64,
    pub gzip_bytes: u64,
    pub html: u64,
    pub sourcemap_bytes: u64,
    pub sourcemaps: u64,
}

/// The analysis of one `dist/` directory.
// Fields are declared in alphabetical order so the JSON keys come out sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    pub entries_from: EntrySource,
    /// Every file under `dist/`, sorted by path.
    pub files: Vec<BundleFile>,
    pub format_version: u32,
    pub totals: BundleTotals,
}

/// Analyzes the Vite build output in `dist`.
pub fn analyze(dist: &Path) -> anyhow::Result<BundleReport> {
    Ok(analyze_dist(dist)?)
}

fn analyze_dist(dist: &Path) -> Result<BundleReport, AnalyzeError> {
    match fs::metadata(dist) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(AnalyzeError::NotADirectory {
                path: dist.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(AnalyzeError::MissingDist {
                path: dist.to_path_buf(),
            })
        }
        Err(source) => {
            return Err(AnalyzeError::Io {
                path: dist.to_path_buf(),
                source,
            })
        }
    }

    let mut paths = Vec::new();
    walk(dist, &mut paths)?;
    let all: BTreeSet<String> = paths.iter().cloned().collect();

    let manifest = read_manifest(dist, &all)?;
    let (entries_from, entry_files) = match &manifest {
        Some(m) => (EntrySource::ViteManifest, m.entry_files()),
        None => {
            let from_html = html_entry_files(dist, &all)?;
            let source = if all.iter().any(|p| is_html(p)) {
                EntrySource::Html
            } else {
                EntrySource::None
            };
            (source, from_html)
        }
    };

    let mut files = Vec::with_capacity(paths.len());
    for rel in &paths {
        let abs = dist.join(rel);
        let data = fs::read(&abs).map_err(|source| AnalyzeError::Io {
            path: abs.clone(),
            source,
        })?;
        let kind = classify(rel, &all, &entry_files);
        let gzip_bytes = gzip_size(&data).map_err(|source| AnalyzeError::Io {
            path: abs.clone(),
            source,
        })?;

        let (mut name, mut imports, mut dynamic_imports) = (None, Vec::new(), Vec::new());
        if let Some(m) = &manifest {
            if let Some(info) = m.by_file.get(rel) {
                name = info.name.clone();
                imports = info.imports.clone();
                dynamic_imports = info.dynamic_imports.clone();
            }
        }

        let (sourcemap, modules) = if matches!(kind, FileKind::Entry | FileKind::Chunk | FileKind::Css) {
            match find_sourcemap(rel, &data, &all) {
                Some(map_rel) => {
                    let modules = read_sourcemap_modules(&dist.join(&map_rel))?;
                    (Some(map_rel), modules)
                }
                None => (None, Vec::new()),
            }
        } else {
            (None, Vec::new())
        };

        files.push(BundleFile {
            bytes: data.len() as u64,
            dynamic_imports,
            gzip_bytes,
            imports,
            kind,
            modules,
            name,
            path: rel.clone(),
            sourcemap,
        });
    }

    let mut totals = BundleTotals::default();
    for f in &files {
        match f.kind {
            FileKind::Entry => totals.entries += 1,
            FileKind::Chunk => totals.chunks += 1,
            FileKind::Css => totals.css += 1,
            FileKind::Html => totals.html += 1,
            FileKind::Asset => totals.assets += 1,
            FileKind::Sourcemap => {
                totals.sourcemaps += 1;
                totals.sourcemap_bytes += f.bytes;
            }
            FileKind::Metadata | FileKind::Precompressed => {}
        }
        if f.kind.counts_toward_bundle() {
            totals.files += 1;
            totals.bytes += f.bytes;
            totals.gzip_bytes += f.gzip_bytes;
        }
    }

    Ok(BundleReport {
        entries_from,
        files,
        format_version: REPORT_FORMAT_VERSION,
        totals,
    })
}

/// Collects regular files below `dist`, as `/`-separated paths relative to
/// it, in sorted order (readdir order differs between filesystems).
fn walk(dist: &Path, out: &mut Vec<String>) -> Result<(), AnalyzeError> {
    for found in farm_archive::walk(dist) {
        let found = found.map_err(|e| AnalyzeError::Io {
            path: e.path,
            source: e.source,
        })?;
        let path = found.path().to_path_buf();
        let Some(rel) = found.relative().to_str().map(str::to_owned) else {
            return Err(AnalyzeError::NonUtf8Name { path });
        };
        // Follows symlinks to files; a symlinked directory could loop, so it is refused.
        let meta = fs::metadata(&path).map_err(|source| AnalyzeError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            if found.file_type().is_symlink() {
                return Err(AnalyzeError::UnsupportedEntry {
                    path,
                    found: "a symlink to a directory",
                });
            }
        } else if meta.is_file() {
            out.push(rel);
        } else {
            return Err(AnalyzeError::UnsupportedEntry {
                path,
                found: "a special file (socket, fifo or device)",
            });
        }
    }
    Ok(())
}

fn extension(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    match name.rfind('.') {
        Some(i) if i > 0 => name[i + 1..].to_ascii_lowercase(),
        _ => String::new(),
    }
}

fn is_html(path: &str) -> bool {
    matches!(extension(path).as_str(), "html" | "htm")
}

fn classify(path: &str, all: &BTreeSet<String>, entries: &BTreeSet<String>) -> FileKind {
    if path.starts_with(".vite/") {
        return FileKind::Metadata;
    }
    match extension(path).as_str() {
        "map" => FileKind::Sourcemap,
        "js" | "mjs" if entries.contains(path) => FileKind::Entry,
        "js" | "mjs" => FileKind::Chunk,
        "css" => FileKind::Css,
        "html" | "htm" => FileKind::Html,
        ext @ ("gz" | "br" | "zst") if all.contains(&path[..path.len() - ext.len() - 1]) => FileKind::Precompressed,
        _ => FileKind::Asset,
    }
}

fn gzip_size(data: &[u8]) -> io::Result<u64> {
    // flate2 writes a fixed header (mtime 0), so the size depends only on the data.
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), Compression::new(9));
    encoder.write_all(data)?;
    Ok(encoder.finish()?.len() as u64)
}

/// The parts of a Vite manifest chunk the report uses.
#[derive(Deserialize)]
struct ManifestChunk {
    file: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "isEntry")]
    is_entry: bool,
    #[serde(default)]
    imports: Vec<String>,
    #[serde(default, rename = "dynamicImports")]
    dynamic_imports: Vec<String>,
}

struct ChunkInfo {
    name: Option<String>,
    is_entry: bool,
    imports: Vec<String>,
    dynamic_imports: Vec<String>,
}

struct ViteManifest {
    by_file: BTreeMap<String, ChunkInfo>,
}

impl ViteManifest {
    fn entry_files(&self) -> BTreeSet<String> {
        self.by_file
            .iter()
            .filter(|(_, c)| c.is_entry)
            .map(|(f, _)| f.clone())
            .collect()
    }
}

fn read_manifest(dist: &Path, all: &BTreeSet<String>) -> Result<Option<ViteManifest>, AnalyzeError> {
    if !all.contains(VITE_MANIFEST) {
        return Ok(None);
    }
    let path = dist.join(VITE_MANIFEST);
    let text = fs::read(&path).map_err(|source| AnalyzeError::Io {
        path: path.clone(),
        source,
    })?;
    let raw: BTreeMap<String, ManifestChunk> = serde_json::from_slice(&text).map_err(|e| AnalyzeError::Manifest {
        path: path.clone(),
        detail: format!("expected an object of chunks each with a \"file\" string: {e}"),
    })?;
    // Manifest imports name other manifest keys (source ids); the report speaks in output files.
    let key_to_file = |key: &String| raw.get(key).map(|c| c.file.clone()).unwrap_or_else(|| key.clone());
    let mut by_file: BTreeMap<String, ChunkInfo> = BTreeMap::new();
    for chunk in raw.values() {
        let info = by_file.entry(chunk.file.clone()).or_insert_with(|| ChunkInfo {
            name: None,
            is_entry: false,
            imports: Vec::new(),
            dynamic_imports: Vec::new(),
        });
        if info.name.is_none() {
            info.name = chunk.name.clone();
        }
        info.is_entry |= chunk.is_entry;
        info.imports.extend(chunk.imports.iter().map(key_to_file));
        info.dynamic_imports
            .extend(chunk.dynamic_imports.iter().map(key_to_file));
    }
    for info in by_file.values_mut() {
        for list in [&mut info.imports, &mut info.dynamic_imports] {
            list.sort();
            list.dedup();
        }
    }
    Ok(Some(ViteManifest { by_file }))
}

/// Scripts loaded by `<script type="module" src>` from any HTML file in `dist/`.
fn html_entry_files(dist: &Path, all: &BTreeSet<String>) -> Result<BTreeSet<String>, AnalyzeError> {
    let mut entries = BTreeSet::new();
    for html_path in all.iter().filter(|p| is_html(p)) {
        let abs = dist.join(html_path);
        let bytes = fs::read(&abs).map_err(|source| AnalyzeError::Io {
            path: abs.clone(),
            source,
        })?;
        let html = String::from_utf8_lossy(&bytes);
        let html_dir = html_path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        for src in module_script_srcs(&html) {
            if let Some(file) = resolve_script_src(&src, html_dir, all) {
                entries.insert(file);
            }
        }
    }
    Ok(entries)
}

/// `src` values of `<script type="module">` tags, skipping HTML comments.
fn module_script_srcs(html: &str) -> Vec<String> {
    // ASCII lowercasing keeps byte offsets, so indices found in `lower` apply to `html`.
    let lower = html.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < lower.len() {
        let next_script = lower[pos..].find("<script").map(|i| pos + i);
        let next_comment = lower[pos..].find("<!--").map(|i| pos + i);
        match (next_script, next_comment) {
            (_, Some(c)) if next_script.is_none_or(|s| c < s) => {
                pos = lower[c + 4..].find("-->").map(|i| c + 4 + i + 3).unwrap_or(lower.len());
            }
            (Some(s), _) => {
                let attrs_start = s + "<script".len();
                let end = tag_end(html, attrs_start);
                // `<scripts>` or `<script-x>` are other tags.
                if html[attrs_start..].starts_with(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/') {
                    let attrs = parse_attributes(&html[attrs_start..end]);
                    let is_module = attrs.get("type").is_some_and(|t| t.eq_ignore_ascii_case("module"));
                    if let (true, Some(src)) = (is_module, attrs.get("src")) {
                        out.push(src.clone());
                    }
                    // Script bodies are raw text: a "<script" inside one is not a tag.
                    pos = lower[end..]
                        .find("</script")
                        .map(|i| end + i + "</script".len())
                        .unwrap_or(lower.len());
                } else {
                    pos = end;
                }
            }
            (None, _) => break,
        }
    }
    out
}

/// Byte index of the `>` closing a tag whose attributes start at `from` (quotes respected).
fn tag_end(html: &str, from: usize) -> usize {
    let mut quote = None;
    for (i, c) in html[from..].char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return from + i,
            _ => {}
        }
    }
    html.len()
}

fn parse_attributes(s: &str) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == '/') {
            i += 1;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() && !matches!(chars[i], '=' | '/' | '>') {
            i += 1;
        }
        if start == i {
            i += 1;
            continue;
        }
        let name: String = chars[start..i].iter().collect::<String>().to_ascii_lowercase();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '=' {
            i += 1;
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i < chars.len() && (chars[i] == '"' || chars[i] == '\'') {
                let q = chars[i];
                i += 1;
                let v = i;
                while i < chars.len() && chars[i] != q {
                    i += 1;
                }
                value = chars[v..i].iter().collect();
                i += 1;
            } else {
                let v = i;
                while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '>' {
                    i += 1;
                }
                value = chars[v..i].iter().collect();
            }
        }
        attrs.entry(name).or_insert_with(|| value.replace("&amp;", "&"));
    }
    attrs
}

/// Maps a script `src` to a file in `dist/`. Absolute srcs may carry Vite's
/// `base` (`/app/assets/x.js`), so leading segments are dropped until one matches.
fn resolve_script_src(src: &str, html_dir: &str, all: &BTreeSet<String>) -> Option<String> {
    let src = src.split(['?', '#']).next().unwrap_or("");
    if src.is_empty() || src.starts_with("//") || src.contains("://") || src.starts_with("data:") {
        return None;
    }
    if let Some(abs) = src.strip_prefix('/') {
        let normalized = normalize_path(abs);
        let mut candidate = normalized.as_str();
        loop {
            if all.contains(candidate) {
                return Some(candidate.to_string());
            }
            candidate = candidate.split_once('/')?.1;
        }
    }
    let joined = if html_dir.is_empty() {
        src.to_string()
    } else {
        format!("{html_dir}/{src}")
    };
    let normalized = normalize_path(&joined);
    all.contains(&normalized).then_some(normalized)
}

/// Resolves `.` and `..` lexically; `..` above the root is dropped.
fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The sourcemap of `rel`: `<rel>.map` next to it, else a relative
/// `sourceMappingURL` comment (inline `data:` maps are not read).
fn find_sourcemap(rel: &str, data: &[u8], all: &BTreeSet<String>) -> Option<String> {
    let beside = format!("{rel}.map");
    if all.contains(&beside) {
        return Some(beside);
    }
    // The comment sits at the end of the file; only the tail needs reading.
    let tail = &data[data.len().saturating_sub(4096)..];
    let tail = String::from_utf8_lossy(tail);
    let at = tail.rfind("sourceMappingURL=")?;
    let url = tail[at + "sourceMappingURL=".len()..]
        .split(|c: char| c.is_whitespace() || c == '*')
        .next()?;
    if url.is_empty() || url.starts_with("data:") || url.contains("://") || url.starts_with('/') {
        return None;
    }
    let dir = rel.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    let joined = if dir.is_empty() {
        url.to_string()
    } else {
        format!("{dir}/{url}")
    };
    let resolved = normalize_path(joined.split(['?', '#']).next().unwrap_or(""));
    all.contains(&resolved).then_some(resolved)
}

#[derive(Deserialize)]
struct SourcemapFile {
    #[serde(default)]
    sources: Vec<Option<String>>,
    #[serde(default, rename = "sourcesContent")]
    sources_content: Vec<Option<String>>,
    #[serde(default, rename = "sourceRoot")]
    source_root: Option<String>,
}

fn read_sourcemap_modules(path: &Path) -> Result<Vec<SourceModule>, AnalyzeError> {
    let bytes = fs::read(path).map_err(|source| AnalyzeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let map: SourcemapFile = serde_json::from_slice(&bytes).map_err(|e| AnalyzeError::Sourcemap {
        path: path.to_path_buf(),
        detail: format!("expected JSON with \"sources\" and \"sourcesContent\" arrays: {e}"),
    })?;
    if !map.sources_content.is_empty() && map.sources_content.len() != map.sources.len() {
        return Err(AnalyzeError::Sourcemap {
            path: path.to_path_buf(),
            detail: format!(
                "\"sources\" has {} entries but \"sourcesContent\" has {}",
                map.sources.len(),
                map.sources_content.len()
            ),
        });
    }
    let root = map.source_root.unwrap_or_default();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for (source, content) in map.sources.iter().zip(map.sources_content.iter()) {
        let (Some(source), Some(content)) = (source, content) else {
            continue;
        };
        let full = if root.is_empty() {
            source.clone()
        } else {
            format!("{}/{source}", root.trim_end_matches('/'))
        };
        *sizes.entry(display_source_path(&full)).or_default() += content.len() as u64;
    }
    Ok(sizes
        .into_iter()
        .map(|(path, source_bytes)| SourceModule { path, source_bytes })
        .collect())
}

/// Source paths are relative to the map (`../../src/App.tsx`); dropping the
/// climb gives a project-relative name. Control characters (Rollup marks
/// virtual modules with NUL) are removed so the name is printable.
fn display_source_path(source: &str) -> String {
    let cleaned: String = source.chars().filter(|c| !c.is_control()).collect();
    let normalized = normalize_path(&cleaned);
    if normalized.is_empty() {
        cleaned
    } else {
        normalized
    }
}

/// Sizes in the report's text and page are written the way every farm
/// command writes them.
pub use farm_formats::size::format_size;

impl BundleReport {
    /// Pretty JSON with sorted keys and a trailing newline; the same `dist/`
    /// always gives the same bytes.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).expect("the report holds only strings and integers");
        json.push('\n');
        json
    }

    /// Files that count toward the bundle, largest first (ties by path).
    fn counted_by_size(&self) -> Vec<&BundleFile> {
        let mut files: Vec<&BundleFile> = self.files.iter().filter(|f| f.kind.counts_toward_bundle()).collect();
        files.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
        files
    }

    /// Fails when the bundle (sourcemaps excluded) is larger than `limit` bytes,
    /// naming the five largest files.
    pub fn check_size_limit(&self, limit: u64) -> Result<(), String> {
        let total = self.totals.bytes;
        if total <= limit {
            return Ok(());
        }
        let largest: Vec<String> = self
            .counted_by_size()
            .iter()
            .take(5)
            .map(|f| {
                format!(
                    "{} {} (gzip {})",
                    f.path,
                    format_size(f.bytes),
                    format_size(f.gzip_bytes)
                )
            })
            .collect();
        Err(format!(
            "frontend bundle is {} ({total} bytes), over the --size-limit of {} ({limit} bytes) by {}; \
             largest files: {}\nhint: run with --analyze to see what fills the bundle, or raise --size-limit",
            format_size(total),
            format_size(limit),
            format_size(total - limit),
            largest.join(", ")
        ))
    }

    /// Lays out the treemap in a `width` × `height` box: one rectangle per
    /// counted file sized by bytes, and inside it one per sourcemap module sized
    /// by source bytes.
    fn treemap(&self, width: f64, height: f64) -> Vec<TreemapTile<'_>> {
        let files = self.counted_by_size();
        let values: Vec<f64> = files.iter().map(|f| f.bytes as f64).collect();
        let rects = squarify(
            &values,
            Rect {
                x: 0.0,
                y: 0.0,
                w: width,
                h: height,
            },
        );
        files
            .into_iter()
            .zip(rects)
            .map(|(file, rect)| {
                let inner = module_area(rect);
                let modules = match (inner, file.modules.is_empty()) {
                    (Some(inner), false) => {
                        let mut sorted: Vec<&SourceModule> = file.modules.iter().collect();
                        sorted.sort_by(|a, b| b.source_bytes.cmp(&a.source_bytes).then_with(|| a.path.cmp(&b.path)));
                        let values: Vec<f64> = sorted.iter().map(|m| m.source_bytes as f64).collect();
                        sorted.into_iter().zip(squarify(&values, inner)).collect()
                    }
                    _ => Vec::new(),
                };
                TreemapTile { file, rect, modules }
            })
            .collect()
    }

    /// A self-contained HTML page (inline CSS and JS, no external references):
    /// summary, size table and a treemap rendered as inline SVG, with tooltips
    /// and a path filter. No dates or run-specific data.
    pub fn to_html(&self, title: &str) -> String {
        let t = &self.totals;
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>\n{}</style>\n</head>\n<body>\n",
            esc(title),
            PAGE_CSS
        );
        let _ = writeln!(h, "<h1>{}</h1>", esc(title));
        let _ = writeln!(h, "<section class=\"summary\">");
        let cards = [
            ("Total", format_size(t.bytes)),
            ("Gzip", format_size(t.gzip_bytes)),
            ("Files", t.files.to_string()),
            ("Entries", t.entries.to_string()),
            ("Chunks", t.chunks.to_string()),
            ("CSS", t.css.to_string()),
            ("HTML", t.html.to_string()),
            ("Assets", t.assets.to_string()),
        ];
        for (label, value) in cards {
            let _ = writeln!(
                h,
                "<div class=\"card\"><div class=\"v\">{}</div><div class=\"l\">{label}</div></div>",
                esc(&value)
            );
        }
        let _ = writeln!(h, "</section>");
        let _ = writeln!(
            h,
            "<p class=\"note\">{} bytes in {} files ({} gzip). Sourcemaps ({}, {}) are not counted. Entries found from: {}.</p>",
            t.bytes,
            t.files,
            t.gzip_bytes,
            t.sourcemaps,
            format_size(t.sourcemap_bytes),
            match self.entries_from {
                EntrySource::ViteManifest => "the Vite manifest",
                EntrySource::Html => "module scripts in HTML",
                EntrySource::None => "nothing (no manifest, no HTML)",
            }
        );
        let _ = writeln!(
            h,
            "<p><input id=\"filter\" type=\"search\" placeholder=\"Filter by path\" aria-label=\"Filter by path\"></p>"
        );

        // Treemap
        let _ = writeln!(h, "<h2>Treemap</h2>");
        let _ = writeln!(
            h,
            "<p class=\"note\">Files sized by bytes; nested boxes are source modules from sourcemaps, sized by source bytes.</p>"
        );
        let _ = writeln!(
            h,
            "<svg id=\"treemap\" viewBox=\"0 0 {} {}\" role=\"img\" aria-label=\"Bundle treemap\">",
            num(TREEMAP_WIDTH),
            num(TREEMAP_HEIGHT)
        );
        for tile in self.treemap(TREEMAP_WIDTH, TREEMAP_HEIGHT) {
            let f = tile.file;
            let tip = format!(
                "{}\n{} · {} · gzip {}{}",
                f.path,
                f.kind.label(),
                format_size(f.bytes),
                format_size(f.gzip_bytes),
                if f.modules.is_empty() {
                    String::new()
                } else {
                    format!(" · {} modules", f.modules.len())
                }
            );
            let r = tile.rect;
            let _ = writeln!(h, "<g class=\"file\" data-path=\"{}\">", esc(&f.path));
            let _ = writeln!(
                h,
                "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{}\" data-tip=\"{}\"><title>{}</title></rect>",
                num(r.x),
                num(r.y),
                num(r.w),
                num(r.h),
                f.kind.color(),
                esc(&tip),
                esc(&tip)
            );
            if let Some(label) = fit_label(&f.path, r.w) {
                if r.h >= 14.0 {
                    let _ = writeln!(
                        h,
                        "<text x=\"{}\" y=\"{}\">{}</text>",
                        num(r.x + 3.0),
                        num(r.y + 12.0),
                        esc(&label)
                    );
                }
            }
            for (module, m) in &tile.modules {
                let tip = format!(
                    "{}\nin {} · source {}",
                    module.path,
                    f.path,
                    format_size(module.source_bytes)
                );
                let class = if module.path.contains("node_modules/") {
                    "mod dep"
                } else {
                    "mod"
                };
                let _ = writeln!(
                    h,
                    "<rect class=\"{class}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" data-tip=\"{}\"><title>{}</title></rect>",
                    num(m.x),
                    num(m.y),
                    num(m.w),
                    num(m.h),
                    esc(&tip),
                    esc(&tip)
                );
                if let (Some(label), true) = (fit_label(&module.path, m.w), m.h >= 14.0) {
                    let _ = writeln!(
                        h,
                        "<text class=\"ml\" x=\"{}\" y=\"{}\">{}</text>",
                        num(m.x + 3.0),
                        num(m.y + 12.0),
                        esc(&label)
                    );
                }
            }
            let _ = writeln!(h, "</g>");
        }
        let _ = writeln!(h, "</svg>");
        let _ = writeln!(h, "<div class=\"legend\">");
        for kind in [
            FileKind::Entry,
            FileKind::Chunk,
            FileKind::Css,
            FileKind::Html,
            FileKind::Asset,
        ] {
            let _ = writeln!(
                h,
                "<span><i style=\"background:{}\"></i>{}</span>",
                kind.color(),
                kind.label()
            );
        }
        let _ = writeln!(h, "</div>");

        // Tables
        let _ = writeln!(h, "<h2>Files by size</h2>");
        let _ = writeln!(
            h,
            "<table>\n<thead><tr><th>Path</th><th>Kind</th><th class=\"n\">Size</th><th class=\"n\">Gzip</th><th class=\"n\">% of bundle</th></tr></thead>\n<tbody>"
        );
        for f in self.counted_by_size() {
            let share = if t.bytes == 0 {
                0.0
            } else {
                f.bytes as f64 * 100.0 / t.bytes as f64
            };
            let _ = writeln!(
                h,
                "<tr data-path=\"{}\"><td>{}</td><td>{}</td><td class=\"n\" title=\"{} bytes\">{}</td><td class=\"n\" title=\"{} bytes\">{}</td><td class=\"n\">{share:.1}%</td></tr>",
                esc(&f.path),
                esc(&f.path),
                f.kind.label(),
                f.bytes,
                format_size(f.bytes),
                f.gzip_bytes,
                format_size(f.gzip_bytes)
            );
        }
        let _ = writeln!(h, "</tbody>\n</table>");

        let mut uncounted: Vec<&BundleFile> = self.files.iter().filter(|f| !f.kind.counts_toward_bundle()).collect();
        if !uncounted.is_empty() {
            uncounted.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
            let _ = writeln!(
                h,
                "<h2>Not counted (sourcemaps, build metadata, precompressed copies)</h2>"
            );
            let _ = writeln!(
                h,
                "<table>\n<thead><tr><th>Path</th><th>Kind</th><th class=\"n\">Size</th><th class=\"n\">Gzip</th></tr></thead>\n<tbody>"
            );
            for f in uncounted {
                let _ = writeln!(
                    h,
                    "<tr data-path=\"{}\"><td>{}</td><td>{}</td><td class=\"n\" title=\"{} bytes\">{}</td><td class=\"n\" title=\"{} bytes\">{}</td></tr>",
                    esc(&f.path),
                    esc(&f.path),
                    f.kind.label(),
                    f.bytes,
                    format_size(f.bytes),
                    f.gzip_bytes,
                    format_size(f.gzip_bytes)
                );
            }
            let _ = writeln!(h, "</tbody>\n</table>");
        }

        let _ = write!(
            h,
            "<div id=\"tip\" hidden></div>\n<script>\n{PAGE_JS}</script>\n</body>\n</html>\n"
        );
        h
    }
}

struct TreemapTile<'a> {
    file: &'a BundleFile,
    rect: Rect,
    modules: Vec<(&'a SourceModule, Rect)>,
}

/// The part of a file's tile left for its modules: inset by a border, below a
/// label strip. `None` when the tile is too small to show modules legibly.
fn module_area(r: Rect) -> Option<Rect> {
    const PAD: f64 = 2.0;
    const LABEL: f64 = 16.0;
    if r.w < 24.0 || r.h < LABEL + 12.0 {
        return None;
    }
    Some(Rect {
        x: r.x + PAD,
        y: r.y + LABEL,
        w: r.w - 2.0 * PAD,
        h: r.h - LABEL - PAD,
    })
}

/// The label that fits in `width` units of 11px text: the whole path, else
/// the file name, else a truncated file name.
fn fit_label(path: &str, width: f64) -> Option<String> {
    let max_chars = ((width - 6.0) / 6.5).floor();
    if max_chars < 4.0 {
        return None;
    }
    let max_chars = max_chars as usize;
    if path.chars().count() <= max_chars {
        return Some(path.to_string());
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    if name.chars().count() <= max_chars {
        return Some(name.to_string());
    }
    let mut cut: String = name.chars().take(max_chars - 1).collect();
    cut.push('…');
    Some(cut)
}

/// Fixed two decimals, so coordinates print the same on every run.
fn num(v: f64) -> String {
    format!("{v:.2}")
}

/// Escapes text for HTML content and double- or single-quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
    out
}

/// An axis-aligned rectangle in treemap coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    pub fn area(&self) -> f64 {
        self.w * self.h
    }
}

/// Squarified treemap layout (Bruls, Huizing and van Wijk, 2000): splits
/// `area` into one rectangle per value, each with an area proportional to its
/// value, keeping aspect ratios close to 1. Returns the rectangles in the order
/// of `values`. Zero, negative and NaN values get a zero-size rectangle at the
/// area's corner.
pub fn squarify(values: &[f64], area: Rect) -> Vec<Rect> {
    let mut out = vec![
        Rect {
            x: area.x,
            y: area.y,
            w: 0.0,
            h: 0.0
        };
        values.len()
    ];
    // Largest first gives the squarest rows; ties keep input order for determinism.
    let mut order: Vec<usize> = (0..values.len()).filter(|&i| values[i] > 0.0).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    let total: f64 = order.iter().map(|&i| values[i]).sum();
    if total <= 0.0 || area.area() <= 0.0 {
        return out;
    }
    let scale = area.area() / total;
    let areas: Vec<f64> = order.iter().map(|&i| values[i] * scale).collect();

    let mut free = area;
    let mut start = 0;
    while start < order.len() {
        let side = free.w.min(free.h);
        // Grow the row while adding the next item does not worsen its worst aspect ratio.
        let mut end = start + 1;
        let mut sum = areas[start];
        let mut current = worst_ratio(sum, areas[start], areas[start], side);
        while end < order.len() {
            let candidate_sum = sum + areas[end];
            // Areas are sorted descending, so the row's max is its first and min its newest.
            let candidate = worst_ratio(candidate_sum, areas[start], areas[end], side);
            if candidate > current {
                break;
            }
            sum = candidate_sum;
            current = candidate;
            end += 1;
        }
        let last_row = end == order.len();
        if free.w >= free.h {
            // A column along the left edge, items stacked top to bottom.
            let width = if last_row { free.w } else { (sum / free.h).min(free.w) };
            let mut y = free.y;
            for k in start..end {
                let h = if k + 1 == end {
                    free.y + free.h - y
                } else {
                    areas[k] / width
                };
                out[order[k]] = Rect {
                    x: free.x,
                    y,
                    w: width,
                    h,
                };
                y += h;
            }
            free.x += width;
            free.w -= width;
        } else {
            // A row along the top edge, items left to right.
            let height = if last_row { free.h } else { (sum / free.w).min(free.h) };
            let mut x = free.x;
            for k in start..end {
                let w = if k + 1 == end {
                    free.x + free.w - x
                } else {
                    areas[k] / height
                };
                out[order[k]] = Rect {
                    x,
                    y: free.y,
                    w,
                    h: height,
                };
                x += w;
            }
            free.y += height;
            free.h -= height;
        }
        start = end;
    }
    out
}

/// The worst (largest) aspect ratio of a row of total area `sum`, largest item
/// `max` and smallest `min`, laid along a side of length `side`.
fn worst_ratio(sum: f64, max: f64, min: f64, side: f64) -> f64 {
    let s2 = sum * sum;
    let w2 = side * side;
    if s2 == 0.0 || w2 == 0.0 || min == 0.0 {
        return f64::INFINITY;
    }
    (w2 * max / s2).max(s2 / (w2 * min))
}

const PAGE_CSS: &str = r#"body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d1d1f;background:#fafafa}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:24px 0 8px}
.summary{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:90px}
.card .v{font-size:18px;font-weight:600}.card .l{color:#666;font-size:12px}
.note{color:#555;font-size:13px}
#filter{padding:5px 8px;width:320px;max-width:100%;border:1px solid #bbb;border-radius:4px}
#treemap{width:100%;height:auto;background:#fff;border:1px solid #ddd;display:block}
#treemap rect{stroke:#fff;stroke-width:1}
#treemap rect.mod{fill:#fff;fill-opacity:.55;stroke:rgba(0,0,0,.25);stroke-width:.5}
#treemap rect.mod.dep{fill-opacity:.3}
#treemap text{font-size:11px;fill:#fff;pointer-events:none}
#treemap text.ml{fill:#1d1d1f}
#treemap g.dim{opacity:.15}
#treemap rect:hover{stroke:#111;stroke-width:1.5}
.legend{margin-top:6px;font-size:12px;color:#444}.legend span{margin-right:14px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:-1px}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e4e4e4;padding:4px 8px;text-align:left}
td:first-child{font-family:ui-monospace,monospace;word-break:break-all}
.n{text-align:right;white-space:nowrap}
#tip{position:fixed;pointer-events:none;background:#222;color:#fff;padding:6px 8px;border-radius:4px;font-size:12px;white-space:pre;z-index:10;max-width:70vw;overflow:hidden}
"#;

// The treemap renders without this script; it only adds tooltips and filtering.
const PAGE_JS: &str = r#"(function () {
  var tip = document.getElementById('tip');
  var svg = document.getElementById('treemap');
  // Native <title> tooltips are the no-script fallback; with script, show ours instead.
  svg.querySelectorAll('title').forEach(function (t) { t.remove(); });
  svg.addEventListener('mousemove', function (e) {
    var el = e.target.closest('[data-tip]');
    if (!el) { tip.hidden = true; return; }
    tip.textContent = el.getAttribute('data-tip');
    tip.hidden = false;
    var x = e.clientX + 14, y = e.clientY + 14;
    if (x + tip.offsetWidth > window.innerWidth) { x = e.clientX - tip.offsetWidth - 14; }
    if (y + tip.offsetHeight > window.innerHeight) { y = e.clientY - tip.offsetHeight - 14; }
    tip.style.left = x + 'px';
    tip.style.top = y + 'px';
  });
  svg.addEventListener('mouseleave', function () { tip.hidden = true; });
  document.getElementById('filter').addEventListener('input', function (e) {
    var q = e.target.value.toLowerCase();
    document.querySelectorAll('tr[data-path]').forEach(function (row) {
      row.hidden = q !== '' && row.getAttribute('data-path').toLowerCase().indexOf(q) < 0;
    });
    svg.querySelectorAll('g[data-path]').forEach(function (g) {
      var hit = q === '' || g.getAttribute('data-path').toLowerCase().indexOf(q) >= 0;
      g.classList.toggle('dim', !hit);
    });
  });
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX_HTML: &str = r#"<!doctype html>
<html lang="en">
  <head>
    <meta charset="UTF-8" />
    <link rel="icon" type="image/svg+xml" href="/vite.svg" />
    <!-- <script type="module" src="/assets/commented-out.js"></script> -->
    <script type="module" crossorigin src="/assets/index-abc.js"></script>
    <link rel="modulepreload" crossorigin href="/assets/vendor-x.js">
    <link rel="stylesheet" crossorigin href="/assets/index-def.css">
  </head>
  <body><div id="root"></div></body>
</html>
"#;

    fn repeated(line: &str, times: usize) -> String {
        line.repeat(times)
    }

    /// A dist/ like `vite build` with `build.sourcemap: true` writes, returning
    /// the content of each file so sizes can be checked against it.
    fn fake_dist(dir: &Path) -> BTreeMap<&'static str, Vec<u8>> {
        let mut files: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
        files.insert("index.html", INDEX_HTML.as_bytes().to_vec());
        let index_js = format!(
            "import{{r as e}}from\"./vendor-x.js\";{}\n//# sourceMappingURL=index-abc.js.map\n",
            repeated("e.createElement(\"div\",{className:\"app\"},\"hello\");", 60)
        );
        files.insert("assets/index-abc.js", index_js.into_bytes());
        files.insert(
            "assets/vendor-x.js",
            repeated("function r(t){return t&&t.__esModule?t.default:t}", 200).into_bytes(),
        );
        files.insert(
            "assets/index-def.css",
            repeated(".app{display:flex;color:#333}\n", 40).into_bytes(),
        );
        let app_src = repeated(
            "export function App() { return <div className=\"app\">hello</div>; }\n",
            10,
        );
        let main_src = "import { App } from './App';\ncreateRoot(root).render(<App />);\n".to_string();
        let map = serde_json::json!({
            "version": 3,
            "file": "index-abc.js",
            "sources": ["../../src/App.tsx", "../../src/main.tsx", "\u{0000}vite/preload-helper.js"],
            "sourcesContent": [app_src, main_src, null],
            "names": [],
            "mappings": "AAAA"
        });
        files.insert("assets/index-abc.js.map", serde_json::to_vec(&map).unwrap());
        files.insert(
            "vite.svg",
            br#"<svg xmlns="urn:example:svg" width="32" height="32"><circle cx="16" cy="16" r="8"/></svg>"#.to_vec(),
        );
        for (rel, data) in &files {
            let path = dir.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, data).unwrap();
        }
        files
    }

    fn file<'a>(report: &'a BundleReport, path: &str) -> &'a BundleFile {
        report
            .files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} missing from report"))
    }

    #[test]
    fn classifies_each_file_with_exact_sizes_and_smaller_gzip_for_text() {
        let tmp = tempfile::tempdir().unwrap();
        let contents = fake_dist(tmp.path());
        let report = analyze(tmp.path()).unwrap();

        let paths: Vec<&str> = report.files.iter().map(|f| f.path.as_str()).collect();
        let expected: Vec<&str> = contents.keys().copied().collect();
        assert_eq!(paths, expected, "every file listed once, sorted by path");

        assert_eq!(report.entries_from, EntrySource::Html);
        assert_eq!(file(&report, "assets/index-abc.js").kind, FileKind::Entry);
        assert_eq!(file(&report, "assets/vendor-x.js").kind, FileKind::Chunk);
        assert_eq!(file(&report, "assets/index-def.css").kind, FileKind::Css);
        assert_eq!(file(&report, "index.html").kind, FileKind::Html);
        assert_eq!(file(&report, "assets/index-abc.js.map").kind, FileKind::Sourcemap);
        assert_eq!(file(&report, "vite.svg").kind, FileKind::Asset);

        for (rel, data) in &contents {
            let f = file(&report, rel);
            assert_eq!(f.bytes, data.len() as u64, "{rel}: size is the file's byte length");
            assert!(f.gzip_bytes > 0, "{rel}: gzip size computed");
        }
        for rel in [
            "assets/index-abc.js",
            "assets/vendor-x.js",
            "assets/index-def.css",
            "index.html",
        ] {
            let f = file(&report, rel);
            assert!(
                f.gzip_bytes < f.bytes,
                "{rel}: repetitive text compresses ({} >= {})",
                f.gzip_bytes,
                f.bytes
            );
        }
        // gzip size matches an independent decompression round trip.
        let vendor = &contents["assets/vendor-x.js"];
        let mut enc = GzEncoder::new(Vec::new(), Compression::best());
        enc.write_all(vendor).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(file(&report, "assets/vendor-x.js").gzip_bytes, gz.len() as u64);
        let mut back = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert_eq!(&back, vendor);

        let counted: Vec<&Vec<u8>> = contents
            .iter()
            .filter(|(p, _)| !p.ends_with(".map"))
            .map(|(_, d)| d)
            .collect();
        let t = &report.totals;
        assert_eq!(
            t.bytes,
            counted.iter().map(|d| d.len() as u64).sum::<u64>(),
            "total excludes the sourcemap"
        );
        assert_eq!(t.files, 5);
        assert_eq!(
            (t.entries, t.chunks, t.css, t.html, t.assets, t.sourcemaps),
            (1, 1, 1, 1, 1, 1)
        );
        assert_eq!(t.sourcemap_bytes, contents["assets/index-abc.js.map"].len() as u64);
        let gzip_sum: u64 = report
            .files
            .iter()
            .filter(|f| f.kind != FileKind::Sourcemap)
            .map(|f| f.gzip_bytes)
            .sum();
        assert_eq!(t.gzip_bytes, gzip_sum);
    }

    #[test]
    fn sourcemap_modules_are_sized_by_sources_content_and_named_project_relative() {
        let tmp = tempfile::tempdir().unwrap();
        fake_dist(tmp.path());
        let report = analyze(tmp.path()).unwrap();
        let entry = file(&report, "assets/index-abc.js");
        assert_eq!(entry.sourcemap.as_deref(), Some("assets/index-abc.js.map"));
        let app_len = "export function App() { return <div className=\"app\">hello</div>; }\n".len() as u64 * 10;
        let main_len = "import { App } from './App';\ncreateRoot(root).render(<App />);\n".len() as u64;
        // The null sourcesContent entry has no size to report and is left out.
        assert_eq!(
            entry.modules,
            vec![
                SourceModule {
                    path: "src/App.tsx".into(),
                    source_bytes: app_len
                },
                SourceModule {
                    path: "src/main.tsx".into(),
                    source_bytes: main_len
                },
            ]
        );
        assert!(
            file(&report, "assets/vendor-x.js").modules.is_empty(),
            "no map, no modules"
        );
        assert!(file(&report, "assets/vendor-x.js").sourcemap.is_none());
    }

    #[test]
    fn vite_manifest_decides_entries_names_and_imports() {
        let tmp = tempfile::tempdir().unwrap();
        fake_dist(tmp.path());
        fs::write(tmp.path().join("assets/lazy-q.js"), "export const lazy=1;").unwrap();
        let manifest = serde_json::json!({
            "index.html": {"file": "assets/index-abc.js", "name": "index", "src": "index.html", "isEntry": true,
                           "imports": ["_vendor-x.js"], "dynamicImports": ["src/Lazy.tsx"], "css": ["assets/index-def.css"]},
            "_vendor-x.js": {"file": "assets/vendor-x.js", "name": "vendor"},
            "src/Lazy.tsx": {"file": "assets/lazy-q.js", "name": "Lazy", "src": "src/Lazy.tsx", "isDynamicEntry": true}
        });
        fs::create_dir_all(tmp.path().join(".vite")).unwrap();
        fs::write(
            tmp.path().join(VITE_MANIFEST),
            serde_json::to_vec_pretty(&manifest).unwrap(),
        )
        .unwrap();
        // Under a manifest, HTML script tags do not decide: strip them to prove it.
        fs::write(tmp.path().join("index.html"), "<!doctype html><body></body>").unwrap();

        let report = analyze(tmp.path()).unwrap();
        assert_eq!(report.entries_from, EntrySource::ViteManifest);
        let entry = file(&report, "assets/index-abc.js");
        assert_eq!(entry.kind, FileKind::Entry);
        assert_eq!(entry.name.as_deref(), Some("index"));
        assert_eq!(
            entry.imports,
            vec!["assets/vendor-x.js".to_string()],
            "manifest keys mapped to output files"
        );
        assert_eq!(entry.dynamic_imports, vec!["assets/lazy-q.js".to_string()]);
        assert_eq!(
            file(&report, "assets/lazy-q.js").kind,
            FileKind::Chunk,
            "a dynamic entry is a lazy chunk"
        );
        assert_eq!(file(&report, "assets/vendor-x.js").name.as_deref(), Some("vendor"));
        let meta = file(&report, VITE_MANIFEST);
        assert_eq!(meta.kind, FileKind::Metadata);
        assert!(!report
            .files
            .iter()
            .any(|f| f.kind == FileKind::Metadata && f.kind.counts_toward_bundle()));
        let counted: u64 = report
            .files
            .iter()
            .filter(|f| f.kind.counts_toward_bundle())
            .map(|f| f.bytes)
            .sum();
        assert_eq!(
            report.totals.bytes, counted,
            "the manifest is not part of the bundle total"
        );
    }

    #[test]
    fn malformed_manifest_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        fake_dist(tmp.path());
        fs::create_dir_all(tmp.path().join(".vite")).unwrap();
        fs::write(tmp.path().join(VITE_MANIFEST), r#"{"index.html": {"name": "index"}}"#).unwrap();
        let err = analyze(tmp.path()).unwrap_err().to_string();
        assert!(err.contains(".vite/manifest.json"), "{err}");
        assert!(err.contains("invalid Vite manifest") && err.contains("file"), "{err}");
    }

    #[test]
    fn malformed_sourcemap_is_an_error_naming_the_map() {
        let tmp = tempfile::tempdir().unwrap();
        fake_dist(tmp.path());
        fs::write(
            tmp.path().join("assets/index-abc.js.map"),
            r#"{"sources":["a"],"sourcesContent":["x","y"]}"#,
        )
        .unwrap();
        let err = analyze(tmp.path()).unwrap_err().to_string();
        assert!(
            err.contains("assets/index-abc.js.map") && err.contains("1 entries but"),
            "{err}"
        );
    }

    #[test]
    fn missing_dist_is_an_error_with_a_hint() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("dist");
        let err = analyze(&missing).unwrap_err().to_string();
        assert!(
            err.contains(&missing.display().to_string()) && err.contains("hint:"),
            "{err}"
        );
    }

    #[test]
    fn precompressed_twins_do_not_count_twice() {
        let tmp = tempfile::tempdir().unwrap();
        fake_dist(tmp.path());
        let before = analyze(tmp.path()).unwrap().totals;
        fs::write(tmp.path().join("assets/vendor-x.js.gz"), b"\x1f\x8b not really").unwrap();
        fs::write(tmp.path().join("assets/orphan.gz"), b"data").unwrap();
        let report = analyze(tmp.path()).unwrap();
        assert_eq!(file(&report, "assets/vendor-x.js.gz").kind, FileKind::Precompressed);
        assert_eq!(
            file(&report, "assets/orphan.gz").kind,
            FileKind::Asset,
            "a .gz without its original is served"
        );
        assert_eq!(report.totals.bytes, before.bytes + 4);
    }

    #[test]
    fn json_is_byte_identical_across_runs_and_locations_with_sorted_keys() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fake_dist(a.path());
        fake_dist(&b.path().join("elsewhere/dist"));
        let first = analyze(a.path()).unwrap().to_json();
        let second = analyze(a.path()).unwrap().to_json();
        let moved = analyze(&b.path().join("elsewhere/dist")).unwrap().to_json();
        assert_eq!(first, second);
        assert_eq!(first, moved, "the report does not depend on where dist/ is");
        assert!(first.ends_with("}\n"));
        assert!(!first.contains(&a.path().display().to_string()));

        // Keys of every object, in document order, must be ascending. A line at
        // indent i ends any object nested deeper than i.
        let mut last_key_at: BTreeMap<usize, String> = BTreeMap::new();
        let mut keys_seen = 0;
        for line in first.lines() {
            let indent = line.len() - line.trim_start().len();
            last_key_at.retain(|&i, _| i <= indent);
            if let Some(key) = line
                .trim_start()
                .strip_prefix('"')
                .and_then(|r| r.split_once("\":"))
                .map(|(k, _)| k)
            {
                if let Some(prev) = last_key_at.get(&indent) {
                    assert!(prev.as_str() < key, "key {key:?} written after {prev:?}");
                }
                last_key_at.insert(indent, key.to_string());
                keys_seen += 1;
            }
        }
        assert!(keys_seen > 40, "the checker saw the keys ({keys_seen})");
        let top: Vec<&str> = first
            .lines()
            .filter(|l| l.starts_with("  \""))
            .map(|l| l.trim().split('"').nth(1).unwrap())
            .collect();
        assert_eq!(top, vec!["entries_from", "files", "format_version", "totals"]);
    }

    #[test]
    fn size_limit_passes_at_the_total_and_fails_above_it_naming_the_largest_file() {
        let tmp = tempfile::tempdir().unwrap();
        fake_dist(tmp.path());
        let report = analyze(tmp.path()).unwrap();
        let total = report.totals.bytes;
        assert!(
            report.check_size_limit(total).is_ok(),
            "a bundle exactly at the limit passes"
        );
        assert!(report.check_size_limit(total * 2).is_ok());
        let err = report.check_size_limit(total - 1).unwrap_err();
        let largest = report.counted_by_size()[0];
        assert_eq!(largest.path, "assets/vendor-x.js", "fixture's largest file");
        assert!(
            err.starts_with(&format!("frontend bundle is {}", format_size(total))),
            "{err}"
        );
        assert!(
            err.contains(&format!("over the --size-limit of {}", format_size(total - 1))),
            "{err}"
        );
        assert!(err.contains("by 1 B"), "{err}");
        assert!(
            err.contains(&format!(
                "largest files: assets/vendor-x.js {} (gzip {})",
                format_size(largest.bytes),
                format_size(largest.gzip_bytes)
            )),
            "{err}"
        );
        assert!(!err.contains(".map"), "sourcemaps are never blamed: {err}");
        assert!(err.contains("hint:"), "{err}");
    }

    #[test]
    fn size_limit_lists_at_most_five_files() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..8 {
            fs::write(tmp.path().join(format!("f{i}.js")), "x".repeat(100 + i)).unwrap();
        }
        let err = analyze(tmp.path()).unwrap().check_size_limit(10).unwrap_err();
        let listed = err.split("largest files: ").nth(1).unwrap().lines().next().unwrap();
        assert_eq!(listed.matches(".js ").count(), 5, "{listed}");
        assert!(listed.starts_with("f7.js 107 B"), "largest first: {listed}");
    }

    #[test]
    fn html_is_self_contained_deterministic_and_lists_every_file() {
        let tmp = tempfile::tempdir().unwrap();
        let contents = fake_dist(tmp.path());
        let report = analyze(tmp.path()).unwrap();
        let html = report.to_html("web <bundle>");
        assert_eq!(html, analyze(tmp.path()).unwrap().to_html("web <bundle>"));
        assert!(html.starts_with("<!DOCTYPE html>") && html.ends_with("</html>\n"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no external references"
        );
        assert!(
            !html.contains(" src=") && !html.contains("<link"),
            "no external scripts or styles"
        );
        assert!(html.contains("<title>web &lt;bundle&gt;</title>"), "title escaped");
        for rel in contents.keys() {
            assert!(html.contains(&format!("<td>{rel}</td>")), "{rel} in a table");
        }
        for rel in [
            "assets/index-abc.js",
            "assets/vendor-x.js",
            "assets/index-def.css",
            "index.html",
            "vite.svg",
        ] {
            assert!(
                html.contains(&format!("<g class=\"file\" data-path=\"{rel}\">")),
                "{rel} in the treemap"
            );
        }
        assert!(
            !html.contains("data-path=\"assets/index-abc.js.map\">\n<rect"),
            "maps are not in the treemap"
        );
        assert!(
            html.contains("src/App.tsx&#10;in assets/index-abc.js"),
            "module tooltip nested in its file"
        );
        assert!(html.contains(&format_size(report.totals.bytes)));
        assert!(html.contains(&format_size(report.totals.gzip_bytes)));
        assert!(!html.contains('\0'));
    }

    #[test]
    fn treemap_tiles_files_over_the_whole_area_with_modules_inside_their_file() {
        let tmp = tempfile::tempdir().unwrap();
        fake_dist(tmp.path());
        let report = analyze(tmp.path()).unwrap();
        let tiles = report.treemap(TREEMAP_WIDTH, TREEMAP_HEIGHT);
        assert_eq!(tiles.len() as u64, report.totals.files);
        let total_area: f64 = tiles.iter().map(|t| t.rect.area()).sum();
        assert!((total_area - TREEMAP_WIDTH * TREEMAP_HEIGHT).abs() < 1e-6 * TREEMAP_WIDTH * TREEMAP_HEIGHT);
        for t in &tiles {
            let expected = t.file.bytes as f64 / report.totals.bytes as f64 * TREEMAP_WIDTH * TREEMAP_HEIGHT;
            assert!(
                (t.rect.area() - expected).abs() < 1e-6 * expected,
                "{} area proportional to bytes",
                t.file.path
            );
            for (m, r) in &t.modules {
                let inside = r.x >= t.rect.x - 1e-9
                    && r.y >= t.rect.y - 1e-9
                    && r.x + r.w <= t.rect.x + t.rect.w + 1e-9
                    && r.y + r.h <= t.rect.y + t.rect.h + 1e-9;
                assert!(inside, "module {} lies inside {}", m.path, t.file.path);
            }
        }
        let entry = tiles.iter().find(|t| t.file.path == "assets/index-abc.js").unwrap();
        assert_eq!(
            entry.modules.len(),
            2,
            "the entry's tile is big enough to show its modules"
        );
    }

    fn assert_tiles(values: &[f64], area: Rect) -> Vec<Rect> {
        let rects = squarify(values, area);
        assert_eq!(rects.len(), values.len());
        let sum: f64 = values.iter().filter(|v| **v > 0.0).sum();
        let covered: f64 = rects.iter().map(Rect::area).sum();
        assert!(
            (covered - area.area()).abs() < 1e-9 * area.area(),
            "areas sum to the whole: {covered}"
        );
        for (i, (v, r)) in values.iter().zip(&rects).enumerate() {
            assert!(r.w >= -1e-9 && r.h >= -1e-9, "rect {i} has no negative side: {r:?}");
            assert!(r.x >= area.x - 1e-9 && r.y >= area.y - 1e-9, "rect {i} inside: {r:?}");
            assert!(
                r.x + r.w <= area.x + area.w + 1e-9 && r.y + r.h <= area.y + area.h + 1e-9,
                "rect {i} inside: {r:?}"
            );
            let expected = if *v > 0.0 { v / sum * area.area() } else { 0.0 };
            assert!(
                (r.area() - expected).abs() < 1e-6 * area.area(),
                "rect {i} area {} != {expected}",
                r.area()
            );
        }
        for i in 0..rects.len() {
            for j in i + 1..rects.len() {
                let (a, b) = (rects[i], rects[j]);
                let ox = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
                let oy = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
                let overlap = ox.max(0.0) * oy.max(0.0);
                assert!(overlap < 1e-6, "rects {i} and {j} overlap by {overlap}: {a:?} {b:?}");
            }
        }
        rects
    }

    #[test]
    fn squarify_tiles_the_area_without_overlap_in_proportion_to_values() {
        let area = Rect {
            x: 10.0,
            y: 20.0,
            w: 600.0,
            h: 400.0,
        };
        assert_tiles(&[6.0, 6.0, 4.0, 3.0, 2.0, 2.0, 1.0], area);
        assert_tiles(&[1.0, 500.0, 3.0, 70.0, 0.5, 12.0, 12.0, 9.0, 250.0, 1.0, 1.0], area);
        assert_tiles(&[42.0], area);
        let tall = Rect {
            x: 0.0,
            y: 0.0,
            w: 50.0,
            h: 900.0,
        };
        assert_tiles(&[5.0, 1.0, 1.0, 8.0, 3.0, 2.0], tall);
        let many: Vec<f64> = (1..200).map(|i| ((i * 37) % 101 + 1) as f64).collect();
        assert_tiles(&many, area);
    }

    #[test]
    fn squarify_gives_equal_values_square_tiles_and_zero_values_no_area() {
        let square = Rect {
            x: 0.0,
            y: 0.0,
            w: 100.0,
            h: 100.0,
        };
        let rects = assert_tiles(&[1.0, 1.0, 1.0, 1.0], square);
        for r in &rects {
            assert!((r.w - 50.0).abs() < 1e-9 && (r.h - 50.0).abs() < 1e-9, "{r:?}");
        }
        let rects = assert_tiles(&[3.0, 0.0, f64::NAN, 1.0], square);
        assert_eq!(rects[1].area(), 0.0);
        assert_eq!(rects[2].area(), 0.0);
        assert!(squarify(&[0.0, 0.0], square).iter().all(|r| r.area() == 0.0));
        assert!(squarify(&[], square).is_empty());
    }

    #[test]
    fn squarify_keeps_aspect_ratios_moderate() {
        // The paper's example: no tile worse than 3:1 for these values in a 6x4 box.
        let rects = assert_tiles(
            &[6.0, 6.0, 4.0, 3.0, 2.0, 2.0, 1.0],
            Rect {
                x: 0.0,
                y: 0.0,
                w: 6.0,
                h: 4.0,
            },
        );
        for r in rects {
            let ratio = (r.w / r.h).max(r.h / r.w);
            assert!(ratio <= 3.0 + 1e-9, "{r:?} ratio {ratio}");
        }
    }

    #[test]
    fn module_scripts_are_found_in_html_and_resolved_under_a_base_path() {
        let html = r#"<script>var a="<script type=module src=x.js>"</script>
<SCRIPT TYPE="module" SRC='/app/assets/main-1.js?v=2'></SCRIPT>
<script src="/assets/classic.js"></script>
<script type="module" src="https://example.invalid/cdn.js"></script>
<script type="module" src="./local.mjs"></script>
<scripts type="module" src="/assets/nope.js"></scripts>"#;
        let srcs = module_script_srcs(html);
        assert_eq!(
            srcs,
            vec![
                "/app/assets/main-1.js?v=2",
                "https://example.invalid/cdn.js",
                "./local.mjs"
            ]
        );
        let all: BTreeSet<String> = ["assets/main-1.js", "sub/local.mjs", "assets/classic.js"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            resolve_script_src(&srcs[0], "sub", &all).as_deref(),
            Some("assets/main-1.js")
        );
        assert_eq!(
            resolve_script_src(&srcs[1], "sub", &all),
            None,
            "external scripts are not bundle files"
        );
        assert_eq!(
            resolve_script_src(&srcs[2], "sub", &all).as_deref(),
            Some("sub/local.mjs")
        );
    }
}
