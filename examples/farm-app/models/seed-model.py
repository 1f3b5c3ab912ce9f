#!/usr/bin/env python3
"""Seed an OCI registry with a tiny, deterministic Ollama-format model.

farm's tests and README need a model they can pull by ``name:tag`` without the
real Ollama registry. This script builds one and pushes it to any registry that
speaks the OCI distribution API (e.g. a ``docker-registry`` on loopback), in the
layout Ollama uses:

- model layer (``application/vnd.ollama.image.model``): a GGUF v3 file with a
  valid header and a few metadata key/values (``general.architecture`` =
  ``llama``, ``general.name``, ...) but **no tensors**. It is a format-valid
  placeholder for demos and tests, NOT a usable LLM: Ollama can pull, list and
  copy it, but running it fails because there are no weights.
- template layer (``application/vnd.ollama.image.template``): ``{{ .Prompt }}``
- params layer (``application/vnd.ollama.image.params``): JSON parameters
- config blob (``application/vnd.docker.container.image.v1+json``): JSON with
  ``model_format``, ``model_family``, ``rootfs.diff_ids``, ...
- manifest (``application/vnd.docker.distribution.manifest.v2+json``)

Every byte is a pure function of ``--name``: no clocks, no randomness, JSON with
fixed key order and separators. Running it twice gives the same manifest digest,
which is printed on the last line of stdout (``sha256:...``).

Usage::

    python3 seed-model.py --registry http://127.0.0.1:5055 --name farm-tiny:latest
    python3 seed-model.py --dry-run            # print the digests, push nothing

``farm-tiny:latest`` is stored as repository ``library/farm-tiny``, tag
``latest`` (a name without a namespace goes to ``library/``, as Ollama does).

Standard library only, Python 3.8+.
"""

import argparse
import hashlib
import json
import re
import struct
import sys
import urllib.error
import urllib.parse
import urllib.request

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
TEMPLATE_MEDIA_TYPE = "application/vnd.ollama.image.template"
PARAMS_MEDIA_TYPE = "application/vnd.ollama.image.params"

# GGUF metadata value types (GGUF spec, v3).
GGUF_UINT32 = 4
GGUF_STRING = 8
GGUF_ALIGNMENT = 32

# [namespace/]model[:tag], with the OCI distribution spec's component and tag grammar.
NAME_RE = re.compile(
    r"^(?:(?P<ns>[a-z0-9]+(?:[._-][a-z0-9]+)*)/)?"
    r"(?P<model>[a-z0-9]+(?:[._-][a-z0-9]+)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?$"
)


class SeedError(Exception):
    """A failure the user can act on; printed without a traceback."""


def parse_name(name):
    """``farm-tiny:latest`` -> (``library/farm-tiny``, ``latest``, ``farm-tiny``)."""
    match = NAME_RE.match(name)
    if not match:
        raise SeedError(f"--name {name!r}: expected [namespace/]model[:tag] in lower case (e.g. farm-tiny:latest)")
    namespace = match.group("ns") or "library"
    model = match.group("model")
    return f"{namespace}/{model}", match.group("tag") or "latest", model


def gguf_string(text):
    data = text.encode("utf-8")
    return struct.pack("<Q", len(data)) + data


def gguf_kv_string(key, value):
    return gguf_string(key) + struct.pack("<I", GGUF_STRING) + gguf_string(value)


def gguf_kv_uint32(key, value):
    return gguf_string(key) + struct.pack("<I", GGUF_UINT32) + struct.pack("<I", value)


def build_gguf(model_name):
    """A GGUF v3 file: header, metadata, zero tensors, padded to the alignment."""
    kvs = [
        gguf_kv_string("general.architecture", "llama"),
        gguf_kv_string("general.name", model_name),
        gguf_kv_string(
            "general.description",
            "format-valid placeholder model for farm demos and tests; it has no weights and cannot generate text",
        ),
        gguf_kv_uint32("general.alignment", GGUF_ALIGNMENT),
        gguf_kv_uint32("general.file_type", 0),
        gguf_kv_uint32("llama.context_length", 2048),
    ]
    header = b"GGUF" + struct.pack("<I", 3) + struct.pack("<Q", 0) + struct.pack("<Q", len(kvs))
    body = header + b"".join(kvs)
    # Readers seek to the next aligned offset for tensor data, even when there is none.
    return body + b"\x00" * (-len(body) % GGUF_ALIGNMENT)


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("utf-8")


def digest_of(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type, data):
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}


def build_model(model_name):
    """Returns (blobs in push order as (media_type, bytes), manifest bytes)."""
    layers = [
        (MODEL_MEDIA_TYPE, build_gguf(model_name)),
        (TEMPLATE_MEDIA_TYPE, b"{{ .Prompt }}"),
        (PARAMS_MEDIA_TYPE, canonical_json({"num_ctx": 2048, "stop": ["</s>"], "temperature": 0.7})),
    ]
    config = canonical_json(
        {
            "architecture": "amd64",
            "file_type": "F32",
            "model_families": ["llama"],
            "model_family": "llama",
            "model_format": "gguf",
            "model_type": "0",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [digest_of(data) for _, data in layers]},
        }
    )
    # Manifest keys in the conventional order (not sorted); still fixed, so the digest is stable.
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": descriptor(CONFIG_MEDIA_TYPE, config),
            "layers": [descriptor(media_type, data) for media_type, data in layers],
        },
        separators=(",", ":"),
    ).encode("utf-8")
    return [(CONFIG_MEDIA_TYPE, config)] + layers, manifest


class Registry:
    """The few OCI distribution API calls a push needs, without auth (a loopback test registry)."""

    def __init__(self, base_url):
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SeedError(f"--registry {base_url!r}: expected an http(s) URL such as http://127.0.0.1:5055")
        self.base = base_url.rstrip("/")

    def _request(self, method, url, data=None, headers=None, ok=(200,)):
        request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as err:
            if err.code in ok:
                return err.code, err.headers, err.read()
            detail = err.read()[:500].decode("utf-8", "replace")
            raise SeedError(f"{method} {url}: expected HTTP {'/'.join(map(str, ok))}, got {err.code}: {detail}")
        except urllib.error.URLError as err:
            raise SeedError(
                f"{method} {url}: {err.reason}; hint: is the registry running at {self.base}? "
                "(`docker-registry serve CONFIG.yml`)"
            )

    def check(self):
        self._request("GET", f"{self.base}/v2/")

    def has_blob(self, repo, digest):
        status, _, _ = self._request("HEAD", f"{self.base}/v2/{repo}/blobs/{digest}", ok=(200, 404))
        return status == 200

    def push_blob(self, repo, data):
        digest = digest_of(data)
        if self.has_blob(repo, digest):
            return digest
        _, headers, _ = self._request("POST", f"{self.base}/v2/{repo}/blobs/uploads/", data=b"", ok=(202,))
        location = headers.get("Location")
        if not location:
            raise SeedError(f"POST {self.base}/v2/{repo}/blobs/uploads/: expected a Location header, found none")
        # Location may be relative and may already carry a query (the upload state).
        upload = urllib.parse.urljoin(self.base + "/", location)
        separator = "&" if urllib.parse.urlsplit(upload).query else "?"
        url = f"{upload}{separator}digest={urllib.parse.quote(digest, safe='')}"
        self._request(
            "PUT",
            url,
            data=data,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(data))},
            ok=(201,),
        )
        return digest

    def put_manifest(self, repo, reference, manifest):
        url = f"{self.base}/v2/{repo}/manifests/{reference}"
        _, headers, _ = self._request(
            "PUT", url, data=manifest, headers={"Content-Type": MANIFEST_MEDIA_TYPE}, ok=(201,)
        )
        expected = digest_of(manifest)
        returned = headers.get("Docker-Content-Digest")
        if returned and returned != expected:
            raise SeedError(f"PUT {url}: registry reported digest {returned}, expected {expected}")
        return expected


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", help="base URL of an OCI distribution registry, e.g. http://127.0.0.1:5055")
    parser.add_argument("--name", default="farm-tiny:latest", help="model name, [namespace/]model[:tag]")
    parser.add_argument("--dry-run", action="store_true", help="print the digests without pushing")
    args = parser.parse_args(argv)

    try:
        repo, tag, model_name = parse_name(args.name)
        blobs, manifest = build_model(model_name)
        for media_type, data in blobs:
            print(f"{digest_of(data)} {len(data):>6} {media_type}", file=sys.stderr)
        if not args.dry_run:
            if not args.registry:
                raise SeedError("--registry: expected a registry URL; hint: pass --dry-run to only print the digests")
            registry = Registry(args.registry)
            registry.check()
            for _, data in blobs:
                registry.push_blob(repo, data)
            registry.put_manifest(repo, tag, manifest)
            print(f"pushed {repo}:{tag} to {registry.base}", file=sys.stderr)
    except SeedError as err:
        print(f"seed-model: error: {err}", file=sys.stderr)
        return 1
    print(digest_of(manifest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
