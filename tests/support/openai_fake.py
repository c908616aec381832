"""A small OpenAI-compatible `/v1/embeddings` server of our own, on loopback, for tests.

It speaks the real JSON (`{"input", "model", "encoding_format"}` -> `{"object": "list", "data": [...]}`),
so the real `openai` client is exercised end to end over a socket. Vectors are deterministic: a text's
vector is drawn from a generator seeded by the text's SHA-256, so tests can compute the expected value.
Switches let a test make it fail (HTTP status, slowness, a redirect) and inspect what it received.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np


def fake_vector(text: str, dimensions: int) -> list[float]:
    """The raw (unnormalised) vector the fake returns for `text`."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    return np.random.default_rng(seed).normal(size=dimensions).astype(np.float32).tolist()


@dataclass
class FakeEmbeddingsServer:
    dimensions: int = 8
    api_key: str | None = None  # when set, other keys get 401
    fail_status: int | None = None  # when set, every request gets this status
    delay_s: float = 0.0
    redirect_to: str | None = None  # when set, every request gets a 307 to this URL
    requests: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeEmbeddingsServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                fake.requests.append(request)
                fake.authorizations.append(self.headers.get("Authorization", ""))
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                if fake.redirect_to is not None:
                    self.send_response(307)
                    self.send_header("Location", fake.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if self.path.rstrip("/") != "/v1/embeddings":
                    return self._reply(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                if fake.api_key is not None and self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                    return self._reply(401, {"error": {"message": "Incorrect API key", "type": "invalid_request"}})
                if fake.fail_status is not None:
                    return self._reply(fake.fail_status, {"error": {"message": "model overloaded", "type": "server"}})
                texts = request.get("input")
                texts = [texts] if isinstance(texts, str) else list(texts or [])
                data = []
                for i, text in enumerate(texts):
                    vector = fake_vector(text, fake.dimensions)
                    if request.get("encoding_format") == "base64":
                        encoded: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
                    else:
                        encoded = vector
                    data.append({"object": "embedding", "index": i, "embedding": encoded})
                data.reverse()  # servers may answer out of order: clients must sort by `index`
                tokens = sum(len(t.split()) for t in texts)
                self._reply(
                    200,
                    {
                        "object": "list",
                        "data": data,
                        "model": request.get("model", ""),
                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
