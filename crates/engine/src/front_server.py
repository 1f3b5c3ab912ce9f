"""farm's front server: the frontend's built files at / in front of the app.

farm puts this module into the app image when the backend does not serve
the frontend itself (spec/images.md, "Serving the frontend"); the image runs
``uvicorn _farm_front:app``. Standard library only. Settings come from the
image's environment:

- ``FARM_ASGI_APP``: the backend's ASGI application, ``module:attribute``.
- ``FARM_STATIC_DIR``: the frontend's built files.
- ``FARM_API_PREFIXES``: space-separated path prefixes that always go to the app.
- ``FARM_SERVE_FRONTEND``: ``auto`` steps aside when the app routes ``/``
  itself; ``true`` never does.

Routing of one HTTP request:
1. not GET/HEAD, or under an API prefix: the app;
2. a path with a ``.``/``..`` segment, a backslash or a NUL: 404;
3. a regular file of the frontend (``/`` and directories: their index.html): that file;
4. anything else: the app; when it answers 404 to a path whose last segment
   has no extension (a client-side route), the frontend's index.html instead.
"""

import asyncio
import importlib
import os
import stat
import sys

CHUNK = 64 * 1024

# Fixed, so that responses do not depend on the image's /etc/mime.types.
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".cjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".txt": "text/plain; charset=utf-8",
    ".xml": "application/xml",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/x-icon",
    ".bmp": "image/bmp",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".eot": "application/vnd.ms-fontobject",
    ".wasm": "application/wasm",
    ".pdf": "application/pdf",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
    ".zip": "application/zip",
}
DEFAULT_TYPE = "application/octet-stream"


def content_type(path):
    return TYPES.get(os.path.splitext(path)[1].lower(), DEFAULT_TYPE)


def load_app(spec):
    """The object ``module:attr.sub`` names, with an error that says which part is missing."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise RuntimeError("FARM_ASGI_APP=%r: expected module:attribute, e.g. app.main:app" % spec)
    obj = importlib.import_module(module)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise RuntimeError("FARM_ASGI_APP=%r: module %s has no attribute %s" % (spec, module, attr)) from None
    return obj


def serves_root(app, depth=0):
    """Whether a Starlette/FastAPI app has a GET route or a mount at ``/``
    (middleware is looked through via its ``.app``)."""
    routes = getattr(app, "routes", None)
    if routes is None:
        inner = getattr(app, "app", None)
        return inner is not None and inner is not app and depth < 16 and serves_root(inner, depth + 1)
    for route in routes:
        path = getattr(route, "path", None)
        if path == "":  # Mount("/") keeps "" as its path
            return True
        if path == "/":
            methods = getattr(route, "methods", None)
            if methods is None or "GET" in methods:
                return True
    return False


def safe_parts(path):
    """The path's segments, or None when it could leave the static tree."""
    if "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    return parts


def is_page(parts):
    """A client-side route: no extension in the last segment (``/some/page``, not ``/app.js``)."""
    return not parts or "." not in parts[-1]


class FrontServer:
    def __init__(self, app, root, prefixes, passthrough=False):
        self.app = app
        self.root = os.path.realpath(root)
        self.prefixes = tuple(p.rstrip("/") for p in prefixes if p.rstrip("/"))
        self.passthrough = passthrough
        found = self.lookup([])
        self.index = found

    def is_api(self, path):
        return any(path == p or path.startswith(p + "/") for p in self.prefixes)

    def lookup(self, parts, depth=0):
        """(real path, content type) of the regular file ``parts`` names inside the root, or None.
        Symlinks are resolved and must stay inside; a directory means its index.html."""
        real = os.path.realpath(os.path.join(self.root, *parts))
        if real != self.root and not real.startswith(self.root + os.sep):
            return None
        try:
            st = os.stat(real)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode) and depth == 0:
            return self.lookup(parts + ["index.html"], 1)
        if not stat.S_ISREG(st.st_mode):
            return None
        return real, content_type(real)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.passthrough:
            return await self.app(scope, receive, send)
        path = scope.get("path") or "/"
        if scope.get("method") not in ("GET", "HEAD") or self.is_api(path):
            return await self.app(scope, receive, send)
        parts = safe_parts(path)
        if parts is None:
            return await send_text(send, 404, b"Not Found")
        found = self.lookup(parts)
        if found is not None:
            return await send_file(scope, send, found)
        # Not a file of the frontend: the app's path, or a client-side route.
        held = []

        async def hold_404(message):
            if not held and message["type"] == "http.response.start" and message.get("status") == 404:
                held.append(message)
            elif held:
                held.append(message)
            else:
                await send(message)

        await self.app(scope, receive, hold_404)
        if not held:
            return
        if self.index is not None and is_page(parts):
            return await send_file(scope, send, self.index)
        for message in held:
            await send(message)


async def send_text(send, status, body):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_file(scope, send, found):
    real, ctype = found
    try:
        # lookup() resolved every link; a link planted since is not followed.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return await send_text(send, 404, b"Not Found")
    with open(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            return await send_text(send, 404, b"Not Found")
        headers = [
            (b"content-type", ctype.encode()),
            (b"content-length", str(st.st_size).encode()),
            (b"x-content-type-options", b"nosniff"),
        ]
        if ctype.startswith("text/html"):
            # A new deploy's index.html (and the asset names in it) shows at once.
            headers.append((b"cache-control", b"no-cache"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        left = 0 if scope.get("method") == "HEAD" else st.st_size
        loop = asyncio.get_running_loop()
        while True:
            chunk = await loop.run_in_executor(None, f.read, min(CHUNK, left)) if left > 0 else b""
            left -= len(chunk)
            more = bool(chunk) and left > 0
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if not more:
                return


def from_environment(environ=os.environ):
    spec = environ.get("FARM_ASGI_APP", "")
    root = environ.get("FARM_STATIC_DIR", "")
    mode = environ.get("FARM_SERVE_FRONTEND", "auto")
    if mode not in ("auto", "true"):
        raise RuntimeError("FARM_SERVE_FRONTEND=%r: expected auto or true" % mode)
    if not root or not os.path.isdir(root):
        raise RuntimeError("FARM_STATIC_DIR=%r: expected the directory of the frontend's built files" % root)
    inner = load_app(spec)
    passthrough = mode == "auto" and serves_root(inner)
    if passthrough:
        sys.stderr.write(
            "farm front server: %s routes / itself, so every request goes to it; "
            "set images.serve-frontend = true in farm.toml to serve the frontend in front of it\n" % spec
        )
    return FrontServer(inner, root, environ.get("FARM_API_PREFIXES", "").split(), passthrough)


if os.environ.get("FARM_ASGI_APP"):
    app = from_environment()
