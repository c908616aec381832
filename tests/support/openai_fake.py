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
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np

from tests.support.loopback_http import LoopbackServer


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
    _http: LoopbackServer | None = None

    @property
    def base_url(self) -> str:
        assert self._http is not None
        return f"{self._http.url}/v1"

    def start(self) -> FakeEmbeddingsServer:
        self._http = LoopbackServer(self._serve, methods=("POST",), name="openai-fake").start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        def reply(status: int, body: dict[str, Any]) -> None:
            payload = json.dumps(body).encode()
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)

        length = int(handler.headers.get("Content-Length") or 0)
        request = json.loads(handler.rfile.read(length) or b"{}")
        self.requests.append(request)
        self.authorizations.append(handler.headers.get("Authorization", ""))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.redirect_to is not None:
            handler.send_response(307)
            handler.send_header("Location", self.redirect_to)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return None
        if handler.path.rstrip("/") != "/v1/embeddings":
            return reply(404, {"error": {"message": f"no route {handler.path}", "type": "not_found"}})
        if self.api_key is not None and handler.headers.get("Authorization") != f"Bearer {self.api_key}":
            return reply(401, {"error": {"message": "Incorrect API key", "type": "invalid_request"}})
        if self.fail_status is not None:
            return reply(self.fail_status, {"error": {"message": "model overloaded", "type": "server"}})
        texts = request.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        data = []
        for i, text in enumerate(texts):
            vector = fake_vector(text, self.dimensions)
            if request.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        data.reverse()  # servers may answer out of order: clients must sort by `index`
        tokens = sum(len(t.split()) for t in texts)
        return reply(200, {"object": "list", "data": data, "model": request.get("model", ""),
                           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
