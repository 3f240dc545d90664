"""
A local stand-in for the Hugging Face Hub endpoints an upload calls (huggingface_hub 2.4: `create_repo`,
`create_branch`, `upload_folder` -> `/api/validate-yaml`, `preupload`, `commit`; `hf_hub_download` of a README.md),
bound to 127.0.0.1. It keeps every repository's files in memory and records every request, so tests assert what was
uploaded. Every file is answered `uploadMode: regular` by `preupload`: its bytes then travel inside the commit itself
(the LFS/Xet transfer a real Hub asks for large files is not emulated).
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml


REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
ROUTES = {
    ("POST", re.compile(r"^/api/repos/create$")): "create_repo",
    ("POST", re.compile(rf"^/api/models/{REPO}/branch/(?P<revision>[^/]+)$")): "create_branch",
    ("POST", re.compile(r"^/api/validate-yaml$")): "validate_yaml",
    ("POST", re.compile(rf"^/api/models/{REPO}/preupload/(?P<revision>[^/]+)$")): "preupload",
    ("POST", re.compile(rf"^/api/models/{REPO}/commit/(?P<revision>[^/]+)$")): "commit",
    ("HEAD", re.compile(rf"^/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")): "resolve",
    ("GET", re.compile(rf"^/{REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)$")): "resolve",
    # huggingface_hub 2.4 fetches (unauthenticated, once a day, best effort) a registry for its user agent.
    ("GET", re.compile(r"^/api/agent-harnesses$")): "agent_harnesses",
}
# Requests that carry no credentials by design.
UNAUTHENTICATED = ("/api/agent-harnesses",)
# What the Hub refuses as `base_model` / `datasets` in a card's metadata: a path rather than an id (transformers#33922).
NOT_AN_ID = re.compile(r"^[./~]|/.*/|\\")


@dataclass
class Commit:
    repo_id: str
    revision: str
    summary: str
    files: dict[str, bytes]


@dataclass
class HubState:
    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commits: list[Commit] = field(default_factory=list)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Authorization)
    unexpected: list[str] = field(default_factory=list)


class HubStub:
    """The stub server: `start()` binds a free port of 127.0.0.1 and serves from a thread; `stop()` shuts it down."""

    def __init__(self, user: str = "stub-user"):
        self.user = user
        self.state = HubState()
        self._server = None
        self._thread = None

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubStub":
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet: the requests are recorded in `state.requests`
                pass

            def do_HEAD(self):
                stub._handle(self, "HEAD")

            def do_GET(self):
                stub._handle(self, "GET")

            def do_POST(self):
                stub._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # ------------------------------------------------------------------------------------------------------------

    def _handle(self, request: BaseHTTPRequestHandler, method: str) -> None:
        path = unquote(urlsplit(request.path).path)
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        self.state.requests.append((method, path, request.headers.get("Authorization")))
        for (route_method, pattern), name in ROUTES.items():
            found = pattern.match(path)
            if route_method == method and found:
                status, headers, payload = getattr(self, name)(body=body, **found.groupdict())
                break
        else:
            self.state.unexpected.append(f"{method} {path}")
            status, headers, payload = 404, {}, {"error": f"stub: no route for {method} {path}"}
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        request.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        headers.setdefault("Content-Length", str(len(data)))
        for key, value in headers.items():
            request.send_header(key, value)
        request.end_headers()
        if method != "HEAD":
            request.wfile.write(data)

    def create_repo(self, body: bytes):
        payload = json.loads(body)
        repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
        if repo_id in self.state.repos:
            return 409, {}, {"error": "You already created this model repo", "url": f"{self.endpoint}/{repo_id}"}
        self.state.repos[repo_id] = {}
        return 200, {}, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id}

    def agent_harnesses(self, body: bytes):
        return 404, {}, {"error": "not served by the stub"}

    def create_branch(self, body: bytes, repo: str, revision: str):
        return 200, {}, {}

    def validate_yaml(self, body: bytes):
        content = json.loads(body)["content"]
        found = re.match(r"^---\n(.*?)\n---", content, re.DOTALL)
        metadata = yaml.safe_load(found.group(1)) if found else {}
        errors = []
        for key in ("base_model", "datasets"):
            values = metadata.get(key) or []
            for value in [values] if isinstance(values, str) else values:
                if not isinstance(value, str) or NOT_AN_ID.search(value):
                    errors.append({"message": f'"{key}" with value "{value}" is not valid. Use an id from hf.co.'})
        return (400 if errors else 200), {}, {"errors": errors, "warnings": []}

    def preupload(self, body: bytes, repo: str, revision: str):
        if repo not in self.state.repos:
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
        files = json.loads(body)["files"]
        return 200, {}, {
            "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]
        }

    def commit(self, body: bytes, repo: str, revision: str):
        if repo not in self.state.repos:
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
        summary, files = None, {}
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                summary = item["value"]["summary"]
            elif item["key"] == "file" and item["value"].get("encoding") == "base64":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            else:
                self.state.unexpected.append(f"commit operation {item['key']}")
        self.state.repos[repo].update(files)
        self.state.commits.append(Commit(repo, revision, summary, files))
        oid = hashlib.sha1(f"{repo}{len(self.state.commits)}".encode()).hexdigest()
        return 200, {}, {"commitUrl": f"{self.endpoint}/{repo}/commit/{oid}", "commitOid": oid, "success": True}

    def resolve(self, body: bytes, repo: str, revision: str, path: str):
        if repo not in self.state.repos:
            return 404, {"X-Error-Code": "RepoNotFound"}, {"error": "Repository not found"}
        if path not in self.state.repos[repo]:
            return 404, {"X-Error-Code": "EntryNotFound"}, {"error": "Entry not found"}
        content = self.state.repos[repo][path]
        etag = hashlib.sha1(content).hexdigest()
        headers = {"X-Repo-Commit": hashlib.sha1(repo.encode()).hexdigest(), "ETag": f'"{etag}"'}
        headers["Content-Length"] = str(len(content))
        return 200, headers, content
