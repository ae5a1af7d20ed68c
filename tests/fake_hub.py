"""A tiny Hugging Face hub on 127.0.0.1: the endpoints huggingface_hub's snapshot_download uses.

    GET  /api/models/{org}/{name}/revision/{rev}      repo info (sha, siblings)
    GET  /api/models/{org}/{name}/tree/{rev}          recursive file listing
    HEAD /{org}/{name}/resolve/{rev}/{path}           ETag, X-Repo-Commit, Content-Length
    GET  /{org}/{name}/resolve/{rev}/{path}           the bytes, with Range support (206)

Repositories are folders on disk (`add_folder`) or an HTTP status (`add_status`: 404 RepoNotFound,
401 GatedRepo). `truncate_once[path] = n` makes the first GET of a file send only n bytes and close
the connection (an interrupted transfer). Every request is recorded in `requests` as (method, path,
Range header).
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

ERROR_CODES = {404: "RepoNotFound", 401: "GatedRepo", 403: "GatedRepo"}


class FakeHub:
    def __init__(self):
        self.repos: dict[str, dict[str, bytes]] = {}
        self.status: dict[str, int] = {}
        self.truncate_once: dict[str, int] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._handle(self, body=False)

            def do_GET(self):
                hub._handle(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def add_folder(self, repo: str, folder: Path) -> None:
        folder = Path(folder)
        self.repos[repo] = {
            p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
        }

    def add_status(self, repo: str, status: int) -> None:
        self.status[repo] = status

    def sha(self, repo: str) -> str:
        return hashlib.sha1(repo.encode()).hexdigest()

    # ----- request handling -------------------------------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(req.path).path)
        self.requests.append((req.command, path, req.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo, what = "/".join(parts[2:4]), parts[4]
            if not self._exists(req, repo):
                return
            if what == "revision":
                files = [{"rfilename": f} for f in self.repos[repo]]
                return self._json(
                    req,
                    {
                        "id": repo,
                        "modelId": repo,
                        "sha": self.sha(repo),
                        "siblings": files,
                        "private": False,
                        "gated": False,
                    },
                )
            if what == "tree":
                data = self.repos[repo]
                return self._json(
                    req,
                    [
                        {"type": "file", "path": f, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                        for f, b in data.items()
                    ],
                )
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, name = "/".join(parts[:2]), "/".join(parts[4:])
            if not self._exists(req, repo):
                return
            if name not in self.repos[repo]:
                return self._error(req, 404, "EntryNotFound")
            return self._file(req, repo, name, body)
        self._error(req, 404, "RepoNotFound")

    def _exists(self, req, repo: str) -> bool:
        status = self.status.get(repo, 200 if repo in self.repos else 404)
        if status != 200:
            self._error(req, status, ERROR_CODES.get(status, "Error"))
            return False
        return True

    def _error(self, req, status: int, code: str) -> None:
        payload = json.dumps({"error": code}).encode()
        req.send_response(status)
        req.send_header("X-Error-Code", code)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(payload)

    def _json(self, req, data) -> None:
        payload = json.dumps(data).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        req.wfile.write(payload)

    def _file(self, req, repo: str, name: str, body: bool) -> None:
        data = self.repos[repo][name]
        start = 0
        rng = req.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
        req.send_response(206 if start else 200)
        req.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        req.send_header("X-Repo-Commit", self.sha(repo))
        req.send_header("Accept-Ranges", "bytes")
        req.send_header("Content-Length", str(len(data) - start))
        if start:
            req.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        req.end_headers()
        if not body:
            return
        cut = self.truncate_once.pop(name, None) if start == 0 else None
        if cut is not None:
            req.wfile.write(data[:cut])
            req.wfile.flush()
            req.close_connection = True
            return
        req.wfile.write(data[start:])
