//! Where `farm lock` runs pip's resolver. pip reads package metadata from
//! the index and may evaluate it, so it runs like a build step: in the
//! native sandbox, with the interpreter and pip the lock pins (the Debian
//! `python3.X` packages and the `[python]` pip wheel), the project
//! read-only, a scratch directory writable, and a network that reaches only
//! the configured index: the step's proxy (`Network::Proxy`) allows only
//! farm's relay of the index on loopback ([`Relay`]), which answers the
//! index's project pages and the files (and PEP 658 metadata) those pages
//! list, wherever the index hosts them, and nothing else. The host's
//! `python3` runs pip only when the caller asks for that with
//! `FARM_PIP_RESOLVER=host`.

use std::future::Future;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Output;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use farm_lockfiles::lock::{DebianBase, PythonToolchain};
use farm_lockfiles::pypi::{HostPython, PipInvocation, PipRunner};
use farm_lockfiles::redact::redact_url;
use farm_lockfiles::Lock;
use farm_sandbox::{Bind, Network, Stdio};
use farm_store::Store;

use crate::executor::{sandbox_spec, Executor, NativeSandbox, SandboxChoice};
use crate::toolchain::Toolchain;
use crate::Context;

/// The variable that picks where pip's resolver runs: `sandbox` (the
/// default) or `host`.
pub const RESOLVER_VAR: &str = "FARM_PIP_RESOLVER";

/// Where the project, the scratch directory and pip's output appear inside
/// the sandbox (fixed, so no host path needs a mount point).
const PROJECT_IN: &str = "/farm/project";
const SCRATCH_IN: &str = "/farm/scratch";
const OUTPUT_IN: &str = "/farm/pip-output";

/// How long one resolution may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20 * 60);

/// The runner `farm lock` uses: the sandbox, unless [`RESOLVER_VAR`] is
/// `host`; an error naming why when the sandbox cannot run it.
pub async fn choose(
    ctx: &Context,
    project: &farm_project::Project,
    debian: &DebianBase,
    python: &PythonToolchain,
    index: &str,
) -> Result<Box<dyn PipRunner>> {
    match std::env::var(RESOLVER_VAR).as_deref() {
        Ok("host") => {
            let python = which("python3").context(format!(
                "{RESOLVER_VAR}=host runs pip's resolver with a host python3, and there is none on PATH\nhint: apt-get install python3 python3-pip, or unset {RESOLVER_VAR} to resolve in the sandbox"
            ))?;
            ctx.reporter.warn(&format!(
                "{RESOLVER_VAR}=host: pip's resolver runs with {} on this machine, outside the sandbox and with this machine's network",
                python.display()
            ));
            return Ok(Box::new(HostPython { python }));
        }
        Ok("sandbox") | Err(std::env::VarError::NotPresent) => {}
        Ok(other) => bail!("{RESOLVER_VAR}={other:?}: expected `sandbox` (the default) or `host`"),
        Err(e) => bail!("{RESOLVER_VAR}: {e}"),
    }
    let unavailable = |why: String| {
        anyhow::anyhow!(
            "locking the backend's wheels runs pip's resolver in farm's native sandbox, which is not available here: {why}\nhint: enable user namespaces; or, accepting that pip then runs on this machine with its network, set {RESOLVER_VAR}=host"
        )
    };
    if ctx.sandbox == SandboxChoice::Container {
        return Err(unavailable(
            "--sandbox container was chosen, and the container backend has no network limited to the index".into(),
        ));
    }
    farm_sandbox::probe().map_err(|e| unavailable(e.to_string()))?;
    let runner = SandboxPip::prepare(ctx, project, debian, python, index).await?;
    ctx.reporter.info(&format!("resolving with {}", runner.describe()));
    Ok(Box::new(runner))
}

/// pip run by the locked Python in the native sandbox.
pub struct SandboxPip {
    toolchain: Arc<Toolchain>,
    executor: Arc<dyn Executor>,
    /// The configured index, which the relay serves.
    index: String,
    client: farm_lockfiles::http::Client,
    python: String,
    limits: farm_project::Limits,
    source_date_epoch: u64,
}

impl SandboxPip {
    /// Brings the locked Debian base (base and python roles) and pip's
    /// wheel into the store and composes the toolchain root from them.
    pub async fn prepare(
        ctx: &Context,
        project: &farm_project::Project,
        debian: &DebianBase,
        python: &PythonToolchain,
        index: &str,
    ) -> Result<SandboxPip> {
        url::Url::parse(index)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .with_context(|| format!("the Python index {}: expected an http(s) URL", redact_url(index)))?;
        let mut base = debian.clone();
        base.packages
            .retain(|p| p.roles.iter().any(|r| r == "base" || r == "python"));
        let mut partial = Lock::new();
        partial.debian = Some(base);
        partial.python = Some(python.clone());
        let store = Store::open(&ctx.farm_home)?;
        let missing: Vec<_> = crate::ops::fetch::jobs(&partial)
            .into_iter()
            .filter(|j| store.artifact(&j.integrity.to_string()).ok().flatten().is_none())
            .collect();
        if !missing.is_empty() {
            ctx.reporter.info(&format!(
                "fetching the locked Python {} and pip {} to run pip's resolver ({} artifacts)",
                python.version,
                python.pip.version,
                missing.len()
            ));
            crate::ops::fetch::fetch_all(
                ctx,
                project,
                missing,
                4,
                farm_lockfiles::http::ClientOptions::from_env(),
            )
            .await
            .context("fetching the toolchain pip's resolver runs with")?;
        }
        let home = ctx.farm_home.clone();
        let toolchain = tokio::task::spawn_blocking(move || -> Result<Toolchain> {
            let store = Store::open(&home)?;
            crate::toolchain::compose(&store, &partial)
        })
        .await??;
        Ok(SandboxPip {
            toolchain: Arc::new(toolchain),
            executor: Arc::new(NativeSandbox),
            index: index.trim_end_matches('/').to_string(),
            client: farm_lockfiles::http::Client::new(farm_lockfiles::http::ClientOptions::from_env()),
            python: format!(
                "Python {} ({} {})",
                farm_lockfiles::debian::upstream_version(&python.package_version),
                python.package,
                python.package_version
            ),
            limits: project.limits(),
            source_date_epoch: project.source_date_epoch(),
        })
    }
}

impl PipRunner for SandboxPip {
    fn describe(&self) -> String {
        format!(
            "the locked {} in farm's sandbox, network limited to the index {}",
            self.python,
            redact_url(&self.index)
        )
    }

    fn run<'a>(
        &'a self,
        invocation: &'a PipInvocation,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Output>> + Send + 'a>> {
        let mut invocation = invocation.clone();
        let toolchain = self.toolchain.clone();
        let executor = self.executor.clone();
        let limits = self.limits;
        let sde = self.source_date_epoch;
        let (index, client) = (self.index.clone(), self.client.clone());
        Box::pin(async move {
            // One relay per run, stopped when the run ends.
            let relay = Relay::start(&index, client).await?;
            let relay_index = format!("{}/simple", relay.base);
            let mut args = invocation.args.iter_mut();
            while let Some(a) = args.next() {
                if a == "--index-url" {
                    if let Some(v) = args.next() {
                        *v = relay_index.clone().into();
                    }
                }
            }
            let allow = relay.authority();
            let shown = (relay_index.clone(), redact_url(&index));
            let out = tokio::task::spawn_blocking(move || {
                run_sandboxed(&toolchain, executor.as_ref(), &allow, &limits, sde, &invocation)
            })
            .await
            .map_err(std::io::Error::other)?;
            drop(relay);
            // pip names the relay; the user knows the index.
            out.map(|mut o| {
                for stream in [&mut o.stdout, &mut o.stderr] {
                    *stream = String::from_utf8_lossy(stream).replace(&shown.0, &shown.1).into_bytes();
                }
                o
            })
        })
    }
}

/// A host path of the invocation as the step sees it.
fn inside(inv: &PipInvocation, p: &Path) -> PathBuf {
    if let Ok(rel) = p.strip_prefix(&inv.scratch) {
        return Path::new(SCRATCH_IN).join(rel);
    }
    if let Ok(rel) = p.strip_prefix(&inv.project) {
        return Path::new(PROJECT_IN).join(rel);
    }
    p.to_path_buf()
}

fn run_sandboxed(
    tc: &Toolchain,
    executor: &dyn Executor,
    allow: &str,
    limits: &farm_project::Limits,
    source_date_epoch: u64,
    inv: &PipInvocation,
) -> std::io::Result<Output> {
    let output = tempfile::tempdir()?;
    // Paths in the arguments (the requirements file, the report, pip's
    // --target) are moved to where the step sees them.
    let mut args: Vec<String> = Vec::new();
    for a in &inv.args {
        let p = Path::new(a);
        let a = if p.is_absolute() {
            inside(inv, p).into_os_string()
        } else {
            a.clone()
        };
        args.push(
            a.into_string()
                .map_err(|a| std::io::Error::other(format!("pip argument {a:?} is not UTF-8")))?,
        );
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for (k, v) in &inv.env {
        let (Some(k), Some(v)) = (k.to_str(), v.to_str()) else {
            return Err(std::io::Error::other(format!("pip variable {k:?} is not UTF-8")));
        };
        env.push((k.into(), v.into()));
    }
    let binds = vec![
        Bind::read_only(inv.project.canonicalize()?, PROJECT_IN),
        Bind::writable(inv.scratch.canonicalize()?, SCRATCH_IN),
        Bind::writable(output.path().canonicalize()?, OUTPUT_IN),
    ];
    // pip speaks plain HTTP to the relay on the host, which reaches the
    // index with farm's own client (the caller's CA bundle, proxy variables
    // and timeouts): no CA bundle or PIP_PROXY is needed inside.
    // HOME does not exist in a step: no cache, and no warning about it.
    args.push("--no-cache-dir".into());
    // stdout and stderr apart, as pip writes them: its explanation of a
    // conflict is on stdout, its errors on stderr.
    let mut argv: Vec<String> = vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("exec python3 \"$@\" >{OUTPUT_IN}/stdout 2>{OUTPUT_IN}/stderr"),
        "python3".into(),
    ];
    argv.extend(args);
    let log = output.path().join("sandbox.log");
    let mut spec = sandbox_spec(
        tc,
        &[],
        argv,
        source_date_epoch,
        Stdio::Capture {
            log: log.clone(),
            stream: false,
        },
        limits,
    );
    spec.binds.extend(binds);
    spec.env.extend(env);
    spec.cwd = inside(inv, &inv.cwd);
    spec.writable
        .extend([PathBuf::from(SCRATCH_IN), PathBuf::from(OUTPUT_IN)]);
    spec.network = Network::Proxy {
        allow: vec![allow.to_string()],
    };
    spec.timeout = Some(TIMEOUT);
    let outcome = executor
        .run(&spec)
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    // Every process of the step has ended: what it left in the scratch
    // directory and the output directory can be checked without a race.
    let read = |name: &str| -> std::io::Result<Vec<u8>> {
        let dir = farm_hostfs::Beneath::open_dir(output.path()).map_err(std::io::Error::other)?;
        match dir.read(Path::new(name)) {
            Ok(b) => Ok(b),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(std::io::Error::other(e)),
        }
    };
    let report = inv.scratch.join("report.json");
    if let Ok(m) = report.symlink_metadata() {
        if !m.file_type().is_file() {
            std::fs::remove_file(&report)?;
            return Err(std::io::Error::other(
                "pip's report in the sandbox is not a regular file; it was removed unread",
            ));
        }
    }
    // pip's messages name files as the step saw them: give back the host's paths.
    let host_paths = |bytes: Vec<u8>| -> Vec<u8> {
        let text = String::from_utf8_lossy(&bytes);
        let mut text = text.replace(PROJECT_IN, &inv.project.display().to_string());
        text = text.replace(SCRATCH_IN, &inv.scratch.display().to_string());
        text.into_bytes()
    };
    let mut stderr = host_paths(read("stderr")?);
    if String::from_utf8_lossy(&stderr).contains("403 Client Error: Forbidden") {
        stderr.extend_from_slice(
            format!(
                "\nfarm: pip ran in the sandbox, whose network reaches only the index's project pages and the files they list (through farm's relay at {allow}); anything else (e.g. a dependency that is a direct URL) is refused\nhint: pin such packages in the index, or set {RESOLVER_VAR}=host to resolve outside the sandbox"
            )
            .as_bytes(),
        );
    }
    if outcome.timed_out {
        stderr.extend_from_slice(
            format!(
                "\nfarm: pip's resolver ran longer than {} s and was stopped",
                TIMEOUT.as_secs()
            )
            .as_bytes(),
        );
    }
    if stderr.is_empty() && !outcome.success() {
        stderr = read("sandbox.log")?;
    }
    let status = if outcome.timed_out {
        1
    } else {
        outcome.status.clamp(0, 255)
    };
    Ok(Output {
        status: std::process::ExitStatus::from_raw(status << 8),
        stdout: host_paths(read("stdout")?),
        stderr,
    })
}

/// The absolute path of `program` on PATH.
fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// farm's relay of the index for one pip run, on loopback: `GET
/// /simple/<project>/` answers the index's page with each file URL pointed
/// at `/f/<n>/<file name>`, and `/f/<n>/<file name>` (or its
/// `.metadata`, PEP 658) answers that file as the index listed it. Only
/// http(s) files are relayed; everything else is a 404. The relay is the
/// only place the sandboxed pip can reach.
pub struct Relay {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

struct RelayState {
    index: String,
    base: String,
    client: farm_lockfiles::http::Client,
    /// Files the relayed pages listed: (upstream URL, file name); `n` is the index.
    files: std::sync::Mutex<Vec<(String, String)>>,
}

impl Relay {
    pub async fn start(index: &str, client: farm_lockfiles::http::Client) -> std::io::Result<Relay> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let state = Arc::new(RelayState {
            index: index.trim_end_matches('/').to_string(),
            base: base.clone(),
            client,
            files: Default::default(),
        });
        let task = tokio::spawn(async move {
            // Dropped (so every connection ends) when the relay is aborted.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.spawn(serve(state.clone(), conn));
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Relay { base, task })
    }

    /// `127.0.0.1:PORT`, the proxy's one allowed entry.
    pub fn authority(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(state: Arc<RelayState>, mut conn: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    // The proxy forwards in origin form; an absolute URL is accepted too.
    let path = match target.strip_prefix(&state.base) {
        Some(p) => p.to_string(),
        None => target.to_string(),
    };
    let (status, content_type, body) = match method {
        "GET" | "HEAD" => answer(&state, &path).await,
        _ => (
            405,
            "text/plain",
            b"farm's index relay answers GET and HEAD only\n".to_vec(),
        ),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Bad Gateway",
    };
    let header = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(header.as_bytes()).await;
    if method != "HEAD" {
        let _ = conn.write_all(&body).await;
    }
    let _ = conn.shutdown().await;
}

/// (status, content type, body) for one relayed path.
async fn answer(state: &RelayState, path: &str) -> (u16, &'static str, Vec<u8>) {
    let not_found = |what: &str| (404, "text/plain", format!("farm's index relay: {what}\n").into_bytes());
    let path = path.split(['?', '#']).next().unwrap_or(path);
    if let Some(project) = path.strip_prefix("/simple/").map(|p| p.trim_end_matches('/')) {
        let valid = !project.is_empty()
            && project
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return not_found("not a project name");
        }
        return relay_page(state, project).await;
    }
    let Some(rest) = path.strip_prefix("/f/") else {
        return not_found("only /simple/<project>/ and the files its pages list");
    };
    let Some((n, name)) = rest.split_once('/') else {
        return not_found("not a relayed file");
    };
    let entry = n
        .parse::<usize>()
        .ok()
        .and_then(|n| state.files.lock().expect("relay lock").get(n).cloned());
    let Some((upstream, filename)) = entry else {
        return not_found("not a file any relayed page listed");
    };
    let name = percent_decode(name);
    let url = if name == filename {
        upstream
    } else if name == format!("{filename}.metadata") {
        format!("{upstream}.metadata")
    } else {
        return not_found("not a file any relayed page listed");
    };
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => return (502, "text/plain", format!("farm's index relay: {e}\n").into_bytes()),
    };
    let dest = tmp.path().join("file");
    match state.client.download(&url, None, &dest, &|_, _| {}).await {
        Ok(_) => match std::fs::read(&dest) {
            Ok(b) => (200, "application/octet-stream", b),
            Err(e) => (502, "text/plain", format!("farm's index relay: {e}\n").into_bytes()),
        },
        Err(farm_lockfiles::http::HttpError::Status { status: 404, .. }) => not_found("the index has no such file"),
        Err(e) => (502, "text/plain", format!("farm's index relay: {e}\n").into_bytes()),
    }
}

async fn relay_page(state: &RelayState, project: &str) -> (u16, &'static str, Vec<u8>) {
    let page_url = format!("{}/{project}/", state.index);
    let fetched = match state
        .client
        .get_with_headers(&page_url, &[("accept", farm_lockfiles::pypi::SIMPLE_ACCEPT)])
        .await
    {
        Ok(f) => f,
        Err(farm_lockfiles::http::HttpError::Status { status: 404, .. }) => {
            return (
                404,
                "text/plain",
                b"farm's index relay: the index has no such project\n".to_vec(),
            )
        }
        Err(e) => return (502, "text/plain", format!("farm's index relay: {e}\n").into_bytes()),
    };
    let content_type = fetched
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let json = farm_lockfiles::pypi::page_is_json(content_type, &fetched.body);
    let relayed = farm_lockfiles::pypi::relay_project_page(&page_url, &fetched.body, json, |abs, name| {
        if !(abs.starts_with("https://") || abs.starts_with("http://")) || name.contains('/') || name.is_empty() {
            return None;
        }
        let mut files = state.files.lock().expect("relay lock");
        let n = match files.iter().position(|(u, _)| u == abs) {
            Some(n) => n,
            None => {
                files.push((abs.to_string(), name.to_string()));
                files.len() - 1
            }
        };
        Some(format!("{}/f/{n}/{}", state.base, percent_encode(name)))
    });
    match relayed {
        Ok(body) if json => (200, "application/vnd.pypi.simple.v1+json", body),
        Ok(body) => (200, "text/html; charset=utf-8", body),
        Err(e) => (502, "text/plain", format!("farm's index relay: {e}\n").into_bytes()),
    }
}

/// A file name as a URL path segment.
fn percent_encode(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the relay serves a project page with its files pointed at
    /// itself, then those files and their PEP 658 metadata, and refuses
    /// (404) a file no page listed, an unknown path and a bad project name;
    /// a non-GET is 405.
    #[tokio::test]
    async fn the_relay_serves_only_pages_and_the_files_they_list() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        // The upstream index: fixed routes, each request's path recorded.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let log = seen.clone();
        let server = tokio::spawn(async move {
            while let Ok((mut c, _)) = listener.accept().await {
                let mut buf = vec![0u8; 4096];
                let n = c.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                log.lock().unwrap().push(path.clone());
                let (status, body): (u16, &[u8]) = match path.as_str() {
                    "/simple/a/" => (
                        200,
                        br#"<a href="../../files/a-1.0-py3-none-any.whl#sha256=00">a-1.0-py3-none-any.whl</a>"#,
                    ),
                    "/files/a-1.0-py3-none-any.whl" => (200, b"wheel bytes"),
                    "/files/a-1.0-py3-none-any.whl.metadata" => (200, b"Name: a"),
                    "/files/secret" => (200, b"not listed"),
                    _ => (404, b""),
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(head.as_bytes()).await;
                let _ = c.write_all(body).await;
            }
        });
        let client = farm_lockfiles::http::Client::new(Default::default());
        let relay = Relay::start(&format!("{upstream}/simple/"), client).await.unwrap();
        let get = |method: &'static str, path: String| {
            let addr = relay.authority();
            async move {
                let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
                c.write_all(format!("{method} {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let mut out = Vec::new();
                c.read_to_end(&mut out).await.unwrap();
                let text = String::from_utf8_lossy(&out).into_owned();
                let status: u16 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
                (status, body)
            }
        };
        let (status, page) = get("GET", "/simple/a/".into()).await;
        assert_eq!(status, 200, "{page}");
        let file = format!("{}/f/0/a-1.0-py3-none-any.whl", relay.base);
        assert!(page.contains(&format!("href=\"{file}#sha256=00\"")), "{page}");
        let path = file.trim_start_matches(&relay.base).to_string();
        assert_eq!(get("GET", path.clone()).await, (200, "wheel bytes".into()));
        assert_eq!(get("GET", format!("{path}.metadata")).await, (200, "Name: a".into()));
        assert_eq!(get("GET", "/f/0/secret".into()).await.0, 404);
        assert_eq!(get("GET", "/f/1/a-1.0-py3-none-any.whl".into()).await.0, 404);
        assert_eq!(get("GET", "/files/secret".into()).await.0, 404);
        assert_eq!(get("GET", "/simple/..%2f/".into()).await.0, 404);
        assert_eq!(get("GET", "/simple/nothing/".into()).await.0, 404);
        assert_eq!(get("POST", "/simple/a/".into()).await.0, 405);
        assert!(
            !seen.lock().unwrap().iter().any(|p| p == "/files/secret"),
            "nothing unlisted was fetched: {:?}",
            seen.lock().unwrap()
        );
        server.abort();
    }
}
