//! farm's front server (spec/images.md "Serving the frontend"): an app whose
//! backend serves only its API gets the frontend at `/` from the app image,
//! client-side routes fall back to index.html, the API stays the app's, and
//! no request reaches a file outside the frontend's tree.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{example_copy, farm, run, seed_model, stdout, workspace};
use farm_testkit::{free_port, require_tool, shared_farm_home, wait_for_port, PodmanService, Registry};

/// Drives the module farm puts into images with host Python and a stub ASGI
/// app, request by request; returns `"METHOD PATH"` → status, type, length, body.
fn drive_front_server(root: &Path, requests: &[(&str, &str)]) -> serde_json::Value {
    const HARNESS: &str = r#"
import asyncio, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("_farm_front", sys.argv[1])
front = importlib.util.module_from_spec(spec)
spec.loader.exec_module(front)

async def api(scope, receive, send):
    if scope["type"] != "http":
        return
    routes = {("GET", "/api/notes"): (200, "application/json", b"[]"),
              ("GET", "/docs"): (200, "text/html; charset=utf-8", b"<title>docs</title>")}
    status, ctype, body = routes.get((scope["method"], scope["path"]),
                                     (404, "application/json", b'{"detail":"Not Found"}'))
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", ctype.encode())]})
    await send({"type": "http.response.body", "body": body})

server = front.FrontServer(api, sys.argv[2], ["/api"])

async def request(method, path):
    sent = []
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}
    async def send(message):
        sent.append(message)
    await server({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    assert sent[0]["type"] == "http.response.start", sent
    assert sent[-1].get("more_body", False) is False, "the response ends"
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return {"status": sent[0]["status"], "type": headers.get("content-type"),
            "length": headers.get("content-length"), "nosniff": headers.get("x-content-type-options"),
            "size": len(body), "body": body[:200].decode("utf-8", "replace")}

requests = json.loads(sys.argv[3])
print(json.dumps({m + " " + p: asyncio.run(request(m, p)) for m, p in requests}))
"#;
    let module = workspace().join("crates/engine/src/front_server.py");
    let out = Command::new("python3")
        .arg("-c")
        .arg(HARNESS)
        .arg(&module)
        .arg(root)
        .arg(serde_json::to_string(requests).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the harness ran: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The front server's routing on its own: files with their types, index.html
/// for `/`, directories and client-side routes, the app for the API, its
/// docs and its 404s, and a 404 for every way out of the tree (`..`,
/// encoded or not, backslashes, NUL, symlinks to outside).
#[test]
fn front_server_routes_files_pages_and_the_api_and_stays_inside_its_tree() {
    if !require_tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("static");
    let index = "<!doctype html><div id=\"root\"></div>";
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("index.html"), index).unwrap();
    std::fs::write(root.join("assets/app-1a2b.js"), "console.log(1)").unwrap();
    std::fs::write(root.join("assets/app-1a2b.css"), "body{}").unwrap();
    std::fs::write(root.join("sub/index.html"), "<p>sub</p>").unwrap();
    std::fs::write(root.join("empty.txt"), "").unwrap();
    std::fs::write(root.join("big.bin"), vec![7u8; 200 * 1024 + 3]).unwrap();
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, "root:x:0:0 outside the tree").unwrap();
    std::os::unix::fs::symlink(&secret, root.join("link-out.txt")).unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("dir-link")).unwrap();

    let requests = [
        ("GET", "/"),
        ("HEAD", "/"),
        ("GET", "/index.html"),
        ("GET", "/some/page"),
        ("GET", "/assets/app-1a2b.js"),
        ("GET", "/assets/app-1a2b.css"),
        ("GET", "/assets/missing.js"),
        ("GET", "/assets/"),
        ("GET", "/sub/"),
        ("GET", "/empty.txt"),
        ("GET", "/big.bin"),
        ("GET", "/api/notes"),
        ("GET", "/api/missing"),
        ("GET", "/docs"),
        ("POST", "/some/page"),
        ("GET", "/../../etc/passwd"),
        ("GET", "/assets/../../secret.txt"),
        ("GET", "/..\\secret.txt"),
        ("GET", "/a\u{0}b"),
        ("GET", "/link-out.txt"),
        ("GET", "/dir-link/secret.txt"),
    ];
    let r = drive_front_server(&root, &requests);
    let get = |k: &str| &r[k];
    let is_index = |k: &str| {
        let v = get(k);
        assert_eq!(v["status"], 200, "{k}: {v}");
        assert_eq!(v["body"], index, "{k} is index.html: {v}");
        assert_eq!(v["type"], "text/html; charset=utf-8", "{k}: {v}");
    };
    is_index("GET /");
    is_index("GET /index.html");
    is_index("GET /some/page");
    is_index("GET /assets/");
    assert_eq!(get("HEAD /")["size"], 0, "HEAD has no body");
    assert_eq!(get("HEAD /")["length"], index.len().to_string());
    assert_eq!(get("GET /")["nosniff"], "nosniff");
    assert_eq!(get("GET /assets/app-1a2b.js")["type"], "text/javascript; charset=utf-8");
    assert_eq!(get("GET /assets/app-1a2b.js")["body"], "console.log(1)");
    assert_eq!(get("GET /assets/app-1a2b.css")["type"], "text/css; charset=utf-8");
    assert_eq!(get("GET /sub/")["body"], "<p>sub</p>", "a directory's index.html");
    assert_eq!(
        (&get("GET /empty.txt")["status"], &get("GET /empty.txt")["size"]),
        (&200.into(), &0.into())
    );
    let big = get("GET /big.bin");
    assert_eq!(big["type"], "application/octet-stream");
    assert_eq!(big["size"], 200 * 1024 + 3, "several chunks, all of them: {big}");
    assert_eq!(big["length"], (200 * 1024 + 3).to_string());
    // The app's answers pass through untouched.
    assert_eq!(
        (&get("GET /api/notes")["status"], &get("GET /api/notes")["body"]),
        (&200.into(), &"[]".into())
    );
    for k in ["GET /api/missing", "GET /assets/missing.js", "POST /some/page"] {
        assert_eq!(get(k)["status"], 404, "{k}: {}", get(k));
        assert_eq!(get(k)["body"], "{\"detail\":\"Not Found\"}", "{k}: the app's own 404");
    }
    assert_eq!(
        get("GET /docs")["body"],
        "<title>docs</title>",
        "the app's non-API pages"
    );
    // Ways out of the tree.
    for k in [
        "GET /../../etc/passwd",
        "GET /assets/../../secret.txt",
        "GET /..\\secret.txt",
        "GET /a\u{0}b",
        "GET /link-out.txt",
        "GET /dir-link/secret.txt",
    ] {
        assert_eq!(get(k)["status"], 404, "{k}: {}", get(k));
    }
    for (k, v) in r.as_object().unwrap() {
        assert!(
            !v["body"].as_str().unwrap().contains("root:x"),
            "{k} leaked a file outside: {v}"
        );
    }
}

/// The front server steps aside (in `auto`) for an app that routes `/` itself.
#[test]
fn front_server_passes_everything_to_an_app_that_routes_the_root() {
    if !require_tool("python3") {
        return;
    }
    let module = workspace().join("crates/engine/src/front_server.py");
    let script = r#"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_farm_front", sys.argv[1])
front = importlib.util.module_from_spec(spec)
spec.loader.exec_module(front)
class R:
    def __init__(self, path, methods=None):
        self.path, self.methods = path, methods
class App:
    def __init__(self, routes): self.routes = routes
class Middleware:
    def __init__(self, app): self.app = app
print(front.serves_root(App([R("/api/x", {"GET"}), R("", None)])),   # Mount("/")
      front.serves_root(Middleware(App([R("/", {"GET", "HEAD"})]))),
      front.serves_root(App([R("/", {"POST"}), R("/api", {"GET"})])),
      front.serves_root(lambda scope, receive, send: None))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&module)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out).trim(), "True True False False");
}

fn manifest(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p.join(".farm/out/farm-manifest.json")).unwrap()).unwrap()
}

fn layer_names(m: &serde_json::Value) -> Vec<String> {
    m["outputs"]["image.app"]["metadata"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect()
}

/// The example app with its static mount removed, as most real backends
/// look: its code never mentions FARM_STATIC_DIR or StaticFiles.
fn api_only_app(registry: &Registry) -> tempfile::TempDir {
    let project = example_copy();
    let main = project.path().join("apps/api/app/main.py");
    let text = std::fs::read_to_string(&main).unwrap();
    let cut = text.find("def _mount_frontend").expect("the example's static mount");
    let text: String = text[..cut]
        .lines()
        .filter(|l| !l.contains("FARM_STATIC_DIR") && !l.contains("StaticFiles"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!text.contains("FARM_STATIC_DIR") && !text.contains("mount("), "{text}");
    std::fs::write(&main, text).unwrap();
    let mut fetch = farm(project.path(), &shared_farm_home(), &["fetch"]);
    fetch.env("FARM_OLLAMA_REGISTRY", &registry.url);
    assert!(run(&mut fetch).status.success(), "fetching the app");
    project
}

fn curl(port: u16, path: &str, extra: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "--path-as-is", "-w", "\n%{http_code}\n%{content_type}"])
        .args(extra)
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = stdout(&out);
    let mut parts = text.rsplitn(3, '\n');
    let ctype = parts.next().unwrap().to_string();
    let code = parts.next().unwrap().parse().unwrap_or(0);
    (code, ctype, parts.next().unwrap_or_default().to_string())
}

/// End to end: `farm build --hermetic images` of an API-only app gives an
/// image (the same digest from a cold rebuild) whose one container serves
/// the frontend at `/`, its assets with their types, client-side routes,
/// the API as JSON, and a 404 for a traversal; `serve-frontend = false`
/// builds the image as before, without the front server.
#[test]
fn an_api_only_app_image_serves_the_frontend_and_the_api() {
    if !["docker-registry", "podman", "runc", "curl"]
        .iter()
        .all(|t| require_tool(t))
    {
        return;
    }
    let registry = Registry::start();
    seed_model(&registry.url);
    let project = api_only_app(&registry);
    let p = project.path();
    let home = shared_farm_home();
    assert!(run(&mut farm(p, &home, &["build", "--hermetic", "images"]))
        .status
        .success());
    let first = manifest(p);
    assert_eq!(
        layer_names(&first),
        ["base", "python-deps", "app", "frontend", "front-server"],
        "the front server is a layer of its own"
    );
    assert!(
        run(&mut farm(p, &home, &["build", "--hermetic", "--no-cache", "images"]))
            .status
            .success()
    );
    assert_eq!(
        first["outputs"]["image.app"],
        manifest(p)["outputs"]["image.app"],
        "a cold rebuild gives the same image"
    );

    let podman = PodmanService::start();
    let mut load = farm(p, &home, &["image", "load", "app"]);
    load.env("DOCKER_HOST", podman.docker_host());
    assert!(run(&mut load).status.success());
    let port = free_port();
    let started = run(podman.command().args([
        "run",
        "-d",
        "--network",
        "host",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "farm-app:0.1.0",
        "--port",
        &port.to_string(),
    ]));
    assert!(started.status.success(), "{}", podman.log());
    let id = stdout(&started).trim().to_string();
    wait_for_port(([127, 0, 0, 1], port).into(), Duration::from_secs(60));

    let (code, ctype, index) = curl(port, "/", &[]);
    assert_eq!((code, ctype.as_str()), (200, "text/html; charset=utf-8"), "{index}");
    assert!(index.contains("<div id=\"root\">"), "index.html at /: {index}");
    let (code, _, page) = curl(port, "/some/page", &[]);
    assert_eq!(
        (code, page.as_str()),
        (200, index.as_str()),
        "a client-side route is index.html"
    );
    let asset = index
        .split('"')
        .map(|s| s.trim_start_matches('.'))
        .find(|s| s.starts_with("/assets/") && s.ends_with(".js"))
        .unwrap_or_else(|| panic!("a script asset in {index}"))
        .to_string();
    let (code, ctype, js) = curl(port, &asset, &[]);
    assert_eq!(
        (code, ctype.as_str()),
        (200, "text/javascript; charset=utf-8"),
        "{asset}"
    );
    assert!(!js.is_empty());
    let (code, ctype, notes) = curl(port, "/api/notes", &[]);
    assert_eq!((code, ctype.as_str(), notes.as_str()), (200, "application/json", "[]"));
    let (code, ctype, made) = curl(
        port,
        "/api/notes",
        &[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"title":"t","body":"a b"}"#,
        ],
    );
    assert_eq!((code, ctype.as_str()), (201, "application/json"), "{made}");
    let (code, ctype, missing) = curl(port, "/api/notes/missing", &[]);
    assert_eq!(
        (code, ctype.as_str()),
        (404, "application/json"),
        "an API 404 stays JSON: {missing}"
    );
    let (code, _, docs) = curl(port, "/docs", &[]);
    assert!(
        code == 200 && docs.contains("swagger"),
        "the app's own pages pass: {docs}"
    );
    for path in [
        "/../../etc/passwd",
        "/assets/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let (code, _, body) = curl(port, path, &[]);
        assert_eq!(code, 404, "{path}: {body}");
        assert!(!body.contains("root:x"), "{path} leaked /etc/passwd");
    }
    let logs = run(podman.command().args(["logs", &id]));
    assert!(
        !stdout(&logs).contains("Traceback") && !common::stderr(&logs).contains("Traceback"),
        "{}",
        common::stderr(&logs)
    );
    drop(podman);

    // Off: the image is the one farm built before the front server existed.
    let toml = p.join("farm.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str("\n[images]\nserve-frontend = false\n");
    std::fs::write(&toml, text).unwrap();
    assert!(run(&mut farm(p, &home, &["build", "--hermetic", "images"]))
        .status
        .success());
    assert_eq!(layer_names(&manifest(p)), ["base", "python-deps", "app", "frontend"]);
}

/// The example app mounts the frontend itself (FARM_STATIC_DIR), so `auto`
/// leaves its image as it was: no front server layer, uvicorn on its app.
#[test]
fn the_example_app_keeps_its_own_static_mount() {
    let Some(project) = common::fetched_example() else {
        return;
    };
    let p = project.path();
    assert!(
        run(&mut farm(p, &shared_farm_home(), &["build", "--hermetic", "images"]))
            .status
            .success()
    );
    assert_eq!(layer_names(&manifest(p)), ["base", "python-deps", "app", "frontend"]);
    let layout = p.join(".farm/out/images/app");
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let image = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let config = blob(image["config"]["digest"].as_str().unwrap());
    let entrypoint = config["config"]["Entrypoint"].as_array().unwrap();
    assert_eq!(entrypoint[3], "app.main:app", "{entrypoint:?}");
    assert!(!config["config"]["Env"].to_string().contains("FARM_ASGI_APP"));
}
