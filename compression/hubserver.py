"""A small Hugging Face Hub-protocol server: publish, download and run the Space offline.

Used by the tests, by ``benchmarks/space.py`` and by anyone who wants to rehearse a publish
without a network (``HF_ENDPOINT=http://127.0.0.1:PORT``). Standard library only.

Speaks just enough of the Hub's HTTP API for the *unmodified* huggingface_hub
client (and transformers'/optimum's from_pretrained on top of it): repo
creation, repo info, preupload, NDJSON commits, trees, resolve (HEAD/GET),
YAML validation, collections. Files live in a temp dir, content-addressed;
commits get real 40-hex ids. ``inject`` makes the next matching requests fail
with a status code or a dropped connection; ``responses`` logs every response
(status + body) so tests can check that no token leaks.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import os
import subprocess
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubState:
    def __init__(self, root: Path, tokens: dict[str, set[str]]):
        self.root = root
        self.tokens = tokens  # token -> namespaces it may write to
        self.repos: dict[tuple[str, str], dict] = {}  # (type, id) -> {private, commits: [{oid, files, message}]}
        self.collections: dict[str, dict] = {}
        self.faults: deque = deque()  # (regex, kind) kind: int status or "drop"
        self.responses: list[tuple[str, str, int, bytes]] = []
        self.requests: list[tuple[str, str]] = []
        self.retry_after = 0.2  # seconds a 429 asks the client to wait
        self.lock = threading.Lock()

    def inject(self, kind, pattern: str = ".*", times: int = 1):
        for _ in range(times):
            self.faults.append((re.compile(pattern), kind))

    def head(self, rtype, repo_id):
        repo = self.repos[(rtype, repo_id)]
        return repo["commits"][-1] if repo["commits"] else {"oid": "0" * 40, "files": {}}

    def blob(self, sha: str) -> bytes:
        return (self.root / sha).read_bytes()

    def commit_count(self, repo_id, rtype="model") -> int:
        return len(self.repos[(rtype, repo_id)]["commits"])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: HubState

    def log_message(self, *args):  # keep pytest output clean
        pass

    # ------------------------------------------------------------ plumbing
    def _send(self, status: int, body=b"", headers=None, content_type="application/json"):
        if not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode()
        self.state.responses.append((self.command, self.path, status, bytes(body)))
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status, message, code=None):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if status == 429:  # as the Hub does: how long to back off
            headers["Retry-After"] = str(self.state.retry_after)
        self._send(status, {"error": message}, headers)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _token(self):
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _can_write(self, namespace) -> bool:
        token = self._token()
        if token is None or token not in self.state.tokens:
            self._error(401, "Invalid credentials in Authorization header")
            return False
        if namespace not in self.state.tokens[token]:
            self._error(403, f"You don't have the rights to write to {namespace}")
            return False
        return True

    def _fault(self) -> bool:
        with self.state.lock:
            for i, (rx, kind) in enumerate(self.state.faults):
                if rx.search(self.path):
                    del self.state.faults[i]
                    break
            else:
                return False
        if kind == "drop":
            self._body()
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        self._body()
        self._error(int(kind), f"injected {kind}")
        return True

    def _route(self):
        self.state.requests.append((self.command, self.path))
        if self._fault():
            return
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        routes = [
            ("POST", r"^/api/repos/create$", self.create_repo),
            ("POST", r"^/api/validate-yaml$", self.validate_yaml),
            ("POST", r"^/api/collections$", self.create_collection),
            ("GET", r"^/api/collections/(?P<slug>.+)$", self.get_collection),
            ("POST", r"^/api/collections/(?P<slug>.+)/items$", self.add_item),
            ("POST", r"^/api/(?P<t>model|space|dataset)s/(?P<id>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)$", self.preupload),
            ("POST", r"^/api/(?P<t>model|space|dataset)s/(?P<id>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)$", self.commit),
            ("GET", r"^/api/(?P<t>model|space|dataset)s/(?P<id>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?P<sub>/.*)?$", self.tree),
            ("GET", r"^/api/(?P<t>model|space|dataset)s/(?P<id>[^/]+/[^/]+)(/revision/(?P<rev>[^/]+))?$", self.info),
            ("HEAD|GET", r"^/(?P<t>spaces/|datasets/)?(?P<id>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$", self.resolve),
        ]
        for method, pattern, fn in routes:
            m = re.match(pattern, path)
            if m and re.fullmatch(method, self.command):
                return fn(query=query, **{k: v for k, v in m.groupdict().items()})
        self._error(404, f"no route for {self.command} {path}")

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _route

    def _repo(self, t, repo_id):
        repo = self.state.repos.get((t, repo_id))
        if repo is None or (repo["private"] and self._token() not in self.state.tokens):
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        return repo

    # ------------------------------------------------------------ repos
    def create_repo(self, query):
        body = json.loads(self._body() or b"{}")
        ns = body.get("organization") or next(iter(self.state.tokens.get(self._token(), {"?"})))
        if not self._can_write(ns):
            return
        t = body.get("type") or "model"
        repo_id = f"{ns}/{body['name']}"
        if (t, repo_id) in self.state.repos:
            return self._send(409, {"error": "You already created this repo", "url": f"http://{self.headers['Host']}/{repo_id}"})
        self.state.repos[(t, repo_id)] = {"private": bool(body.get("private")), "commits": [], "sdk": body.get("sdk")}
        self._send(200, {"url": f"http://{self.headers['Host']}/{repo_id}", "name": repo_id})

    def info(self, t, id, rev=None, query=None):
        repo = self._repo(t, id)
        if repo is None:
            return
        head = self.state.head(t, id)
        self._send(200, {
            "id": id, "modelId": id, "sha": head["oid"], "private": repo["private"], "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(head["files"])],
            "lastModified": "2026-01-01T00:00:00.000Z", "sdk": repo.get("sdk"),
        })

    def tree(self, t, id, rev, sub=None, query=None):
        repo = self._repo(t, id)
        if repo is None:
            return
        files = self.state.head(t, id)["files"]
        prefix = (sub or "").strip("/")
        entries = [{"type": "file", "oid": sha, "size": (self.state.root / sha).stat().st_size, "path": p}
                   for p, sha in sorted(files.items()) if not prefix or p.startswith(prefix + "/")]
        self._send(200, entries)

    def validate_yaml(self, query):
        import yaml

        content = json.loads(self._body() or b"{}").get("content", "")
        m = re.match(r"^---\n(.*?)\n---", content, re.S)  # the README's front matter
        try:
            meta = yaml.safe_load(m.group(1)) if m else {}
        except yaml.YAMLError as exc:
            return self._send(400, {"errors": [{"message": f"invalid YAML: {exc}"}]})
        errors = []
        if not isinstance(meta, dict):
            errors.append("metadata must be a mapping")
        elif "model-index" in meta:
            for entry in meta["model-index"]:
                for res in entry.get("results", []):
                    if not {"task", "dataset", "metrics"} <= set(res):
                        errors.append("model-index results need task, dataset and metrics")
        if errors:
            return self._send(400, {"errors": [{"message": e} for e in errors]})
        self._send(200, {"errors": [], "warnings": []})

    def preupload(self, t, id, rev, query):
        body = json.loads(self._body())
        if not self._can_write(id.split("/")[0]) or self._repo(t, id) is None:
            return
        files = self.state.head(t, id)["files"]
        self._send(200, {"files": [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": files.get(f["path"])}
            for f in body["files"]
        ], "commitOid": self.state.head(t, id)["oid"]})

    def commit(self, t, id, rev, query):
        raw = self._body()
        if not self._can_write(id.split("/")[0]) or self._repo(t, id) is None:
            return
        files = dict(self.state.head(t, id)["files"])
        message = ""
        for line in raw.splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                message = item["value"].get("summary", "")
            elif item["key"] == "file":
                data = base64.b64decode(item["value"]["content"])
                sha = git_sha1(data)
                (self.state.root / sha).write_bytes(data)
                files[item["value"]["path"]] = sha
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
            else:
                return self._error(400, f"unsupported commit item {item['key']} (this test hub takes regular files only)")
        oid = hashlib.sha1(f"{id}{time.time_ns()}{sorted(files.items())}".encode()).hexdigest()
        self.state.repos[(t, id)]["commits"].append({"oid": oid, "files": files, "message": message})
        self._send(200, {"commitUrl": f"http://{self.headers['Host']}/{id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None})

    def resolve(self, t, id, rev, file, query):
        t = {"spaces/": "space", "datasets/": "dataset"}.get(t or "", "model")
        repo = self._repo(t, id)
        if repo is None:
            return
        commit = next((c for c in repo["commits"] if c["oid"] == rev), None) if len(rev) == 40 else None
        commit = commit or self.state.head(t, id)
        sha = commit["files"].get(file)
        if sha is None:
            return self._error(404, "Entry not found", "EntryNotFound")
        data = self.state.blob(sha)
        self._send(200, data, {"X-Repo-Commit": commit["oid"], "ETag": f'"{sha}"'}, "application/octet-stream")

    # ------------------------------------------------------------ collections
    def _collection_json(self, c):
        return {**c, "lastUpdated": "2026-01-01T00:00:00.000Z", "position": 0, "theme": "blue", "upvotes": 0}

    def create_collection(self, query):
        body = json.loads(self._body())
        if not self._can_write(body["namespace"]):
            return
        slug = f"{body['namespace']}/{re.sub('[^a-z0-9]+', '-', body['title'].lower()).strip('-')}-0123456789abcdef"
        if slug in self.state.collections:
            return self._send(409, {"error": "exists", "slug": slug})
        self.state.collections[slug] = {"slug": slug, "title": body["title"], "owner": {"name": body["namespace"]},
                                        "items": [], "private": body.get("private", False), "description": body.get("description")}
        self._send(200, self._collection_json(self.state.collections[slug]))

    def get_collection(self, slug, query):
        c = self.state.collections.get(slug)
        if c is None:
            return self._error(404, "Collection not found")
        self._send(200, self._collection_json(c))

    def add_item(self, slug, query):
        body = json.loads(self._body())
        c = self.state.collections.get(slug)
        if c is None:
            return self._error(404, "Collection not found")
        if not self._can_write(slug.split("/")[0]):
            return
        if any(i["id"] == body["item"]["id"] for i in c["items"]):
            return self._send(409, {"error": "Item already in collection"})
        item = {"_id": hashlib.md5(body["item"]["id"].encode()).hexdigest()[:24], "id": body["item"]["id"],
                "type": body["item"]["type"], "position": len(c["items"])}
        if body.get("note"):
            item["note"] = {"text": body["note"], "html": body["note"]}
        c["items"].append(item)
        self._send(200, self._collection_json(c))


def start(root: Path, tokens: dict[str, set[str]]):
    """Start the server on 127.0.0.1 (free port); returns (server, state, endpoint)."""
    state = HubState(root, tokens)
    handler = type("BoundHandler", (Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state, f"http://127.0.0.1:{server.server_address[1]}"


# ---------------------------------------------------------------- running a downloaded Space
NO_TORCH = '''
import importlib.abc, sys
class _NoBuildSide(importlib.abc.MetaPathFinder):
    """What a Space without torch looks like: these packages are simply not installed."""
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "optimum", "accelerate"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _NoBuildSide())
'''


def start_space(folder, tmp_path, port):
    """Run a downloaded Space's app.py as the Space would, with torch and transformers unimportable."""
    blocker = tmp_path / "no-torch"
    blocker.mkdir(exist_ok=True)
    (blocker / "sitecustomize.py").write_text(NO_TORCH)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BCS_")}
    env.update(PYTHONPATH=str(blocker), PORT=str(port), HF_HUB_CACHE=str(tmp_path / "space-cache"))
    # output to a file, not a pipe: nobody reads a pipe while the app runs, and once its 64 KiB
    # buffer filled (a load test logs per request) the app blocked on a write and answered nobody
    log_path = tmp_path / "space-app.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log_path
    return proc


def space_output(proc) -> str:
    """Everything the Space app printed so far."""
    return proc.log_path.read_text(errors="replace")


def free_port() -> int:
    """A TCP port nothing listens on now (the OS picks it): the test Hub's, the apps' of tests and benchmarks."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc=None, seconds: float = 180, poll_s: float = 0.5) -> float:
    """Seconds until ``url`` answers. AssertionError if ``proc`` exits first (with what it printed, where
    ``start_space`` logs it to a file) or nothing answers within ``seconds``. The tests and the
    benchmarks that start an app or a Space wait with this one function."""
    import urllib.request

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        if proc is not None and proc.poll() is not None:
            printed = space_output(proc) if hasattr(proc, "log_path") else ""
            raise AssertionError(f"the app exited with {proc.returncode} before {url} answered\n{printed}".rstrip())
        try:
            urllib.request.urlopen(url, timeout=2)
            return time.perf_counter() - t0
        except OSError:
            time.sleep(poll_s)
    raise AssertionError(f"{url} did not answer within {seconds:.0f} s")
