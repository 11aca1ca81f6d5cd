"""A local, Hugging Face Hub-compatible HTTP server for tests.

The real ``huggingface_hub`` client talks to it (set ``HF_ENDPOINT`` to
``server.url``). It answers what huggingface_hub 2.x asks when downloading
(read from ``hf_api.py`` / ``file_download.py``):

- ``GET  /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}``: model info
  (``sha`` = the commit, ``siblings`` = the files, ``tags``, ``gated``);
- ``GET  /api/models/{repo}/tree/{rev}[/{path}]?recursive=..``: the file listing
  (``list_repo_files`` / ``list_repo_tree``);
- ``HEAD|GET /{repo}/resolve/{rev}/{file}``: file metadata and bytes. Every answer
  carries ``X-Repo-Commit``; small files answer with their git blob id as
  ``ETag``; large ("LFS") files answer ``302`` with ``X-Linked-Etag`` (sha256),
  ``X-Linked-Size`` and a ``Location`` on a second server (another origin, like
  the Hub's CDN, so the client drops the token and follows it for the bytes).

Errors use the Hub's ``X-Error-Code`` header (``RepoNotFound``,
``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``). Requests it does not
know are answered 404 and recorded in ``server.unknown`` (and printed to
stderr) so a failing test says what the client asked for.

Repos are in memory: ``server.add(repo_id, {filename: path_or_bytes}, revision="main")``
returns a fixed fake commit sha for that revision; the revision can then be
named by its branch/tag name or by that sha.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest

HERE = Path(__file__).resolve().parent
CONFORMANCE = HERE / "data" / "conformance"
TINY_DIR = CONFORMANCE / "dbeta-tiny"
TINY_CHECKPOINT = CONFORMANCE / "dbeta-tiny-reference-checkpoint.pt"
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
LFS_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".model")
CHUNK = 1 << 20


@dataclass
class _File:
    name: str
    source: Path | bytes
    size: int
    git_oid: str  # sha1 of "blob <size>\0<content>": what the Hub calls the blob id
    sha256: str
    lfs: bool

    def open(self):
        if isinstance(self.source, bytes):
            import io

            return io.BytesIO(self.source)
        return open(self.source, "rb")


@dataclass
class _Revision:
    name: str
    commit: str
    files: dict[str, _File]


@dataclass
class _Repo:
    repo_id: str
    revisions: dict[str, _Revision] = field(default_factory=dict)
    gated: bool = False
    token: str | None = None  # private: requests must carry "Authorization: Bearer <token>"
    tags: list[str] = field(default_factory=list)

    def revision(self, rev: str) -> _Revision | None:
        if rev in self.revisions:
            return self.revisions[rev]
        return next((r for r in self.revisions.values() if r.commit == rev), None)


def _digests(source: Path | bytes) -> tuple[int, str, str]:
    sha256 = hashlib.sha256()
    size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
    sha1 = hashlib.sha1(f"blob {size}\0".encode())
    if isinstance(source, bytes):
        sha256.update(source)
        sha1.update(source)
    else:
        with open(source, "rb") as f:
            while block := f.read(CHUNK):
                sha256.update(block)
                sha1.update(block)
    return size, sha1.hexdigest(), sha256.hexdigest()


class HubServer:
    """A Hub look-alike on 127.0.0.1 (random port) plus a "CDN" for large files."""

    def __init__(self) -> None:
        self.repos: dict[str, _Repo] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.unknown: list[str] = []
        self._lock = threading.Lock()
        self._hub: ThreadingHTTPServer | None = None
        self._cdn: ThreadingHTTPServer | None = None
        self._blobs: dict[str, _File] = {}
        self.env: dict[str, str] = {}  # set by the `hub` fixture: the environment for a subprocess

    # ------------------------------------------------------------ content
    def add(self, repo_id: str, files: Mapping[str, str | os.PathLike | bytes], revision: str = "main",
            *, gated: bool = False, token: str | None = None, tags: list[str] | None = None) -> str:
        """Serve ``files`` as ``repo_id`` at ``revision``; returns that revision's commit sha."""
        entries = {}
        for name, src in files.items():
            source = src if isinstance(src, bytes) else Path(src)
            size, oid, sha = _digests(source)
            entries[name] = _File(name, source, size, oid, sha, lfs=name.endswith(LFS_SUFFIXES))
        fingerprint = json.dumps([repo_id, revision, sorted((n, f.sha256) for n, f in entries.items())])
        commit = hashlib.sha1(fingerprint.encode()).hexdigest()
        with self._lock:
            repo = self.repos.setdefault(repo_id, _Repo(repo_id))
            repo.revisions[revision] = _Revision(revision, commit, entries)
            repo.gated = repo.gated or gated
            repo.token = token or repo.token
            repo.tags = list(tags or repo.tags)
            for f in entries.values():
                self._blobs[f.sha256] = f
        return commit

    def commit(self, repo_id: str, revision: str = "main") -> str:
        return self.repos[repo_id].revisions[revision].commit

    def requests(self, method: str | None = None, contains: str = "") -> list[tuple[str, str, int]]:
        """The logged requests, optionally filtered by method and a path fragment."""
        return [r for r in self.log if (method is None or r[0] == method) and contains in r[1]]

    # ------------------------------------------------------------ life cycle
    @property
    def url(self) -> str:
        assert self._hub is not None, "server not started"
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn_url(self) -> str:
        assert self._cdn is not None, "server not started"
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def start(self) -> "HubServer":
        self._hub = _make_server(self, cdn=False)
        self._cdn = _make_server(self, cdn=True)
        for srv in (self._hub, self._cdn):
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving; the port then refuses connections (a real outage)."""
        for srv in (self._hub, self._cdn):
            if srv is not None:
                srv.shutdown()
                srv.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _make_server(hub: HubServer, cdn: bool) -> ThreadingHTTPServer:
    handler = type("Handler", (_CdnHandler if cdn else _HubHandler,), {"hub": hub})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    return srv


class _BaseHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a stopped server is really gone
    protocol_version = "HTTP/1.0"
    hub: HubServer

    def log_message(self, format, *args):  # keep pytest output clean; requests go to hub.log
        pass

    def _record(self, status: int) -> None:
        with self.hub._lock:
            self.hub.log.append((self.command, self.path, status))

    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: Mapping[str, str] | None = None):
        h = dict(headers or {})
        if code:
            h["X-Error-Code"] = code
        h["X-Error-Message"] = message
        self._json({"error": message}, status, h)

    def _unknown(self) -> None:
        line = f"{self.command} {self.path}"
        with self.hub._lock:
            self.hub.unknown.append(line)
        print(f"[hub_server] unknown request: {line}", file=sys.stderr)
        self._error(404, None, f"unknown endpoint {line}")

    def _stream(self, f: _File, extra: Mapping[str, str]) -> None:
        """Send a file's bytes, honouring ``Range: bytes=N-`` (huggingface_hub resumes with it)."""
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
            start = min(int(rng[6:].split("-")[0]), f.size)
        status = 206 if start else 200
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(f.size - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{f.size - 1}/{f.size}")
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        try:
            with f.open() as fh:
                fh.seek(start)
                while block := fh.read(CHUNK):
                    self.wfile.write(block)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (e.g. a test that interrupts a download)


class _HubHandler(_BaseHandler):
    def do_GET(self):
        self._route()

    def do_HEAD(self):
        self._route()

    def _route(self) -> None:
        parts = urlsplit(self.path)
        segs = [unquote(s) for s in parts.path.strip("/").split("/")] if parts.path.strip("/") else []
        query = parse_qs(parts.query)
        if len(segs) >= 4 and segs[:2] == ["api", "models"]:
            return self._api(segs[2] + "/" + segs[3], segs[4:], query)
        if len(segs) >= 5 and segs[2] == "resolve":
            return self._resolve(segs[0] + "/" + segs[1], segs[3], "/".join(segs[4:]))
        return self._unknown()

    def _repo(self, repo_id: str, needs_auth: bool = True) -> _Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        if needs_auth and repo.token is not None:
            auth = self.headers.get("Authorization")
            if auth is None:  # the Hub hides private repos from anonymous requests
                self._error(401, "RepoNotFound", "Invalid username or password.")
                return None
            if auth != f"Bearer {repo.token}":
                self._error(401, None, "Invalid credentials in Authorization header")
                return None
        return repo

    def _api(self, repo_id: str, rest: list[str], query: dict) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        if not rest or rest[0] == "revision":
            rev_name = rest[1] if len(rest) >= 2 else "main"
            if len(rest) > 2:
                return self._unknown()
            rev = repo.revision(rev_name)
            if rev is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev_name}")
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for f in rev.files.values():
                s = {"rfilename": f.name}
                if blobs:
                    s.update(size=f.size, blobId=f.git_oid)
                    if f.lfs:
                        s["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": 134}
                siblings.append(s)
            return self._json({
                "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24], "id": repo_id, "modelId": repo_id,
                "author": repo_id.split("/")[0], "sha": rev.commit, "private": repo.token is not None,
                "gated": "manual" if repo.gated else False, "disabled": False, "tags": repo.tags,
                "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
                "siblings": siblings,
            })
        if rest[0] == "tree" and len(rest) >= 2:
            rev = repo.revision(rest[1])
            if rev is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
            prefix = "/".join(rest[2:]).strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            return self._json(_tree(rev, prefix, recursive))
        return self._unknown()

    def _resolve(self, repo_id: str, rev_name: str, filename: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        if repo.gated:
            return self._error(403, "GatedRepo", "Access to this model is restricted: accept its conditions")
        rev = repo.revision(rev_name)
        if rev is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev_name}")
        f = rev.files.get(filename)
        if f is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist at {rev_name}",
                               {"X-Repo-Commit": rev.commit})
        common = {"X-Repo-Commit": rev.commit, "Accept-Ranges": "bytes"}
        if f.lfs:  # like the Hub: redirect to the CDN, metadata on the redirect itself
            location = f"{self.hub.cdn_url}/blobs/{f.sha256}?name={quote(filename)}"
            return self._send(302, b"", {**common, "Location": location, "X-Linked-Etag": f'"{f.sha256}"',
                                         "X-Linked-Size": str(f.size), "ETag": f'"{f.git_oid}"'})
        return self._stream(f, {**common, "ETag": f'"{f.git_oid}"'})


def _tree(rev: _Revision, prefix: str, recursive: bool) -> list[dict]:
    out, dirs = [], set()
    for name, f in sorted(rev.files.items()):
        if prefix and not name.startswith(prefix + "/"):
            continue
        rel = name[len(prefix) + 1:] if prefix else name
        parts = rel.split("/")
        for i in range(1, len(parts)):  # folders on the way
            d = "/".join(([prefix] if prefix else []) + parts[:i])
            if (recursive or i == 1) and d not in dirs:
                dirs.add(d)
                out.append({"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d})
        if len(parts) > 1 and not recursive:
            continue
        entry = {"type": "file", "oid": f.git_oid, "size": f.size, "path": name}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": 134}
        out.append(entry)
    return out


class _CdnHandler(_BaseHandler):
    def do_GET(self):
        self._blob()

    def do_HEAD(self):
        self._blob()

    def _blob(self) -> None:
        parts = urlsplit(self.path)
        segs = parts.path.strip("/").split("/")
        if len(segs) != 2 or segs[0] != "blobs":
            return self._unknown()
        f = self.hub._blobs.get(segs[1])
        if f is None:
            return self._error(404, None, "no such blob")
        self._stream(f, {"ETag": f'"{f.sha256}"'})


# ---------------------------------------------------------------- fixtures
def tokenizer_files(src: Path = TINY_DIR) -> dict[str, Path]:
    """The tiny model's tokenizer files, as served under ``google/flan-t5-base``."""
    return {n: src / n for n in TOKENIZER_FILES if (src / n).is_file()}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running :class:`HubServer`, with this process pointed at it and fresh caches.

    Serves the tiny tokenizer as ``google/flan-t5-base``; tests add model repos.
    ``hub.env`` is the environment for a subprocess (the CLI).
    """
    import huggingface_hub.constants as hf_constants

    server = HubServer().start()
    server.add("google/flan-t5-base", tokenizer_files())
    env = {
        "HF_ENDPOINT": server.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf-home"),
        "ECGTEXT_CACHE": str(tmp_path / "ecgtext-cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import (the suite's conftest sets it to 1)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    server.env = {**os.environ, **env}
    try:
        yield server
    finally:
        server.stop()
