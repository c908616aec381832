"""A small Vault HTTP API server of our own, on loopback, for tests.

It implements exactly what `apps.core.secrets` asks of Vault through hvac, with Vault's JSON shapes and
status codes, so the real hvac client is exercised over a socket:

* KV v2 read `GET /v1/<mount>/data/<path>` (404 when absent) and write `POST|PUT /v1/<mount>/data/<path>`
  (`{"data": {...}}`, for test setup over the API; `put_secret` does the same without HTTP);
* KV v2 soft delete `DELETE /v1/<mount>/data/<path>` (the latest version reads as absent, but the path keeps its
  metadata: it is still listed, and `stored` still sees it, as a real Vault keeps an undeletable version);
* KV v2 metadata: `LIST /v1/<mount>/metadata/<folder>` (also `GET ...?list=true`): `{"data": {"keys": [...]}}`
  with sub-folders ending in `/`, 404 for an empty folder; `DELETE /v1/<mount>/metadata/<path>` removes the
  path with all its versions (204, also when there was nothing);
* `GET /v1/auth/token/lookup-self` and `POST /v1/auth/token/renew-self` with real TTL semantics: a token
  stops working once its TTL has passed unless it was renewed; renewal extends to the token's TTL,
  capped by its max TTL; a non-renewable token answers 400 to renew-self; an expired or unknown token -> 403;
* `POST /v1/auth/approle/login` issuing tokens with a configurable TTL / renewability / max TTL;
* `GET /v1/sys/health`.

Switches simulate failures: `outage_status` (every request answers it, e.g. 503 sealed),
`fail_next` (the next requests answer these statuses, one each), `hang_s` (requests stall that long
before answering; released by `stop`), `deny_paths` (403 for a KV path even with a valid token, as a
policy would). `stop()` closes the socket, so a client then gets "connection refused". Every request is
recorded as `(method, path)` in `requests` (path URL-decoded, query string dropped); `count()` counts by path.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

LOOKUP_SELF = "/v1/auth/token/lookup-self"
RENEW_SELF = "/v1/auth/token/renew-self"
APPROLE_LOGIN = "/v1/auth/approle/login"
SYS_HEALTH = "/v1/sys/health"


@dataclass
class FakeToken:
    ttl_s: float  # the lease a renewal grants again (Vault: the token's / role's TTL)
    renewable: bool
    expires_at: float  # monotonic
    max_expires_at: float | None  # monotonic; None = no max TTL
    issued_at: float
    renewals: int = 0

    def remaining(self, now: float) -> float:
        return max(0.0, self.expires_at - now)


@dataclass
class FakeVault:
    mount: str = "secret"
    # AppRole login issues tokens with these properties.
    approle_ttl_s: float = 60.0
    approle_renewable: bool = True
    approle_max_ttl_s: float | None = None
    # Failure switches (see the module docstring).
    outage_status: int | None = None
    fail_next: list[int] = field(default_factory=list)
    hang_s: float = 0.0
    deny_paths: set[str] = field(default_factory=set)
    requests: list[tuple[str, str]] = field(default_factory=list)
    issued_tokens: list[str] = field(default_factory=list)  # every token ever issued, for leak checks
    tokens: dict[str, FakeToken] = field(default_factory=dict)
    approles: dict[str, str] = field(default_factory=dict)  # role_id -> secret_id
    secrets_data: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> data
    soft_deleted: set[str] = field(default_factory=set)  # paths whose latest version was deleted, metadata kept
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _release: threading.Event = field(default_factory=threading.Event)
    _connections: set[socket.socket] = field(default_factory=set)

    # --- setup ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def put_secret(self, path: str, data: dict[str, Any]) -> None:
        with self._lock:
            self.secrets_data[path.strip("/")] = dict(data)
            self.soft_deleted.discard(path.strip("/"))

    def stored(self, path: str) -> bool:
        """Whether Vault still holds anything of `path`: a readable version, or a soft-deleted one."""
        with self._lock:
            return path.strip("/") in self.secrets_data or path.strip("/") in self.soft_deleted

    def seed_encryption_keys(self) -> None:
        """Serve the test run's encryption keys (the key file) at the keyring path: with VAULT_ADDR set,
        encrypted fields read their keys from Vault, and rows sealed earlier in the run must still open."""
        import json

        from apps.core import crypto

        path = crypto.key_file_path()
        crypto.key_file_create(path)
        self.put_secret(crypto.vault_key_path(), json.loads(path.read_text()))

    def create_token(self, ttl_s: float, *, renewable: bool = True, max_ttl_s: float | None = None) -> str:
        """A token valid for `ttl_s` seconds from now (`ttl_s=0`: never expires, like a root token)."""
        token = "hvs." + secrets.token_urlsafe(18)
        now = time.monotonic()
        expires = float("inf") if ttl_s == 0 else now + ttl_s
        max_expires = None if max_ttl_s is None else now + max_ttl_s
        with self._lock:
            self.tokens[token] = FakeToken(ttl_s, renewable, expires, max_expires, now)
            self.issued_tokens.append(token)
        return token

    def add_approle(self, role_id: str, secret_id: str) -> None:
        with self._lock:
            self.approles[role_id] = secret_id

    def revoke_all_tokens(self) -> None:
        with self._lock:
            self.tokens.clear()

    def count(self, path: str, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for m, p in self.requests if p == path and (method is None or m == method))

    def kv_path(self, path: str) -> str:
        """The HTTP path of a KV v2 read of `path` in this fake's mount."""
        return f"/v1/{self.mount}/data/{path.strip('/')}"

    def metadata_path(self, path: str) -> str:
        """The HTTP path of a KV v2 metadata call (list, delete) on `path` in this fake's mount."""
        return f"/v1/{self.mount}/metadata/{path.strip('/')}"

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self, port: int = 0) -> FakeVault:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like a real Vault behind hvac's Session

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def do_PUT(self) -> None:
                fake._handle(self, "PUT")

            def do_DELETE(self) -> None:
                fake._handle(self, "DELETE")

            def do_LIST(self) -> None:  # Vault's own HTTP verb (hvac sends it for list calls)
                fake._handle(self, "LIST")

        self._release.clear()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-vault", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering and close the listening socket: new connections are refused."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:  # kept-alive connections too, or a pooled client would still be answered
            open_connections, self._connections = list(self._connections), set()
        for connection in open_connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeVault:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API -------------------------------------------------------------------------------------

    def _valid_token(self, token: str | None, now: float) -> FakeToken | None:
        record = self.tokens.get(token or "")
        if record is None:
            return None
        if now >= record.expires_at:
            del self.tokens[token or ""]  # Vault revokes an expired token
            return None
        return record

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path, _, query = handler.path.partition("?")
        path = unquote(path)  # hvac quotes each path segment
        if method == "GET" and parse_qs(query).get("list") == ["true"]:
            method = "LIST"  # Vault takes `GET ...?list=true` for clients that cannot send LIST
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append((method, path))
            forced = self.fail_next.pop(0) if self.fail_next else None
        if self.hang_s:
            self._release.wait(self.hang_s)
        status = forced or self.outage_status
        if status is not None:
            return _reply(handler, status, {"errors": [_STATUS_TEXT.get(status, "error")]})
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return _reply(handler, 400, {"errors": ["failed to parse JSON input"]})
        token = handler.headers.get("X-Vault-Token")
        now = time.monotonic()
        with self._lock:
            status, payload = self._route(method, path, body, token, now)
        _reply(handler, status, payload)

    def _route(self, method: str, path: str, body: dict, token: str | None, now: float) -> tuple[int, dict]:
        if path == SYS_HEALTH and method == "GET":
            return 200, {"initialized": True, "sealed": False, "standby": False, "version": "fake"}
        if path == APPROLE_LOGIN and method in ("POST", "PUT"):
            if self.approles.get(str(body.get("role_id"))) != body.get("secret_id") or not body.get("secret_id"):
                return 400, {"errors": ["invalid role or secret ID"]}
            new = "hvs." + secrets.token_urlsafe(18)
            max_at = None if self.approle_max_ttl_s is None else now + self.approle_max_ttl_s
            self.issued_tokens.append(new)
            self.tokens[new] = FakeToken(self.approle_ttl_s, self.approle_renewable, now + self.approle_ttl_s,
                                         max_at, now)
            return 200, {"auth": {"client_token": new, "lease_duration": int(self.approle_ttl_s),
                                  "renewable": self.approle_renewable, "policies": ["default", "gbo"]}}
        record = self._valid_token(token, now)
        if record is None:
            return 403, {"errors": ["permission denied"]}
        if path == LOOKUP_SELF and method == "GET":
            ttl = 0 if record.expires_at == float("inf") else int(round(record.remaining(now)))
            return 200, {"data": {"ttl": ttl, "creation_ttl": int(record.ttl_s), "renewable": record.renewable,
                                  "policies": ["default", "gbo"], "type": "service"}}
        if path == RENEW_SELF and method in ("POST", "PUT"):
            if not record.renewable:
                return 400, {"errors": ["lease is not renewable"]}
            increment = float(body.get("increment") or record.ttl_s)
            expires = now + increment
            if record.max_expires_at is not None:
                expires = min(expires, record.max_expires_at)
            record.expires_at = expires
            record.renewals += 1
            return 200, {"auth": {"client_token": token, "lease_duration": int(record.remaining(now)),
                                  "renewable": record.renewable, "policies": ["default", "gbo"]}}
        prefix = f"/v1/{self.mount}/data/"
        if path.startswith(prefix):
            secret_path = path[len(prefix):].strip("/")
            if secret_path in self.deny_paths:
                return 403, {"errors": ["permission denied"]}
            if method == "GET":
                data = self.secrets_data.get(secret_path)
                if data is None:
                    return 404, {"errors": []}
                return 200, {"data": {"data": dict(data), "metadata": {
                    "created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "destroyed": False,
                    "version": 1}}}
            if method in ("POST", "PUT"):
                self.secrets_data[secret_path] = dict(body.get("data") or {})
                self.soft_deleted.discard(secret_path)
                return 200, {"data": {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "",
                                      "destroyed": False, "version": 1}}
            if method == "DELETE":  # soft delete of the latest version: the metadata stays
                if self.secrets_data.pop(secret_path, None) is not None:
                    self.soft_deleted.add(secret_path)
                return 204, {}
        prefix = f"/v1/{self.mount}/metadata/"
        if path.startswith(prefix) or path == prefix.rstrip("/"):
            secret_path = path[len(prefix):].strip("/")
            if secret_path in self.deny_paths:
                return 403, {"errors": ["permission denied"]}
            if method == "LIST":
                keys = self._list(secret_path)
                if not keys:
                    return 404, {"errors": []}
                return 200, {"data": {"keys": keys}}
            if method == "DELETE":  # every version and the metadata: nothing left to undelete
                self.secrets_data.pop(secret_path, None)
                self.soft_deleted.discard(secret_path)
                return 204, {}
        return 404, {"errors": [f"no handler for route {path!r}"]}


    def _list(self, folder: str) -> list[str]:
        """The names directly inside `folder`, as Vault lists them: secrets by name, sub-folders with a `/`."""
        start = f"{folder}/" if folder else ""
        names = set()
        for path in (*self.secrets_data, *self.soft_deleted):
            if path.startswith(start) and len(path) > len(start):
                head, slash, _ = path[len(start):].partition("/")
                names.add(head + slash)
        return sorted(names)


_STATUS_TEXT = {
    403: "permission denied",
    412: "required index state not present",
    429: "request rate limited",
    500: "internal error",
    503: "Vault is sealed",
}


def _reply(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any]) -> None:
    payload = b"" if status == 204 else json.dumps(body).encode()  # 204: Vault's empty answer to a delete
    try:
        handler.send_response(status)
        if payload:
            handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)
    except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout) while we hung
        pass
