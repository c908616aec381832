"""The browser tests' live server and Chromium: real daphne, real Chromium, loopback only.

`LiveServer` runs the production ASGI application (tests.browser.asgi) in a daphne subprocess against the
test run's database and Redis, so the page, the WebSocket consumer and the channel layer are the ones
that run in production. Chromium is Debian's (`/usr/bin/chromium`) driven by Playwright's client; no
browser is downloaded. Host names under `.localhost` resolve to loopback in Chromium by itself, so the
tenant's own host name (e.g. `browser.test.localhost`) reaches the server and selects the tenant.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

# Debian's chromium package (`make system-deps`); another build can be named with CHROMIUM_PATH.
CHROMIUM_PATH = Path(os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium")
# Flags for a headless Chromium in a container: no sandbox when root (the sandbox needs user
# namespaces), no GPU, and no background traffic (the machine has no Internet).
CHROMIUM_ARGS = ["--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# Daphne imports Django and the whole project: a few seconds on a busy 2-core machine.
SERVER_START_TIMEOUT_S = 60
# Longer than gbplatform.serve's own wait for its children (CHILD_STOP_TIMEOUT_S).
SERVER_STOP_TIMEOUT_S = 20
REPO_ROOT = Path(__file__).resolve().parents[2]


def chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM_PATH.exists():
        return (f"{CHROMIUM_PATH} is not installed (`make system-deps` installs Debian's chromium as root; "
                "CHROMIUM_PATH names another build)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return None


def chromium_launch_args() -> list[str]:
    return CHROMIUM_ARGS + (["--no-sandbox"] if os.geteuid() == 0 else [])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url_for(url: str, database_name: str) -> str:
    """`url` pointing at `database_name` instead (the test run's database, not the base one)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database_name))


@dataclass
class LiveServer:
    """daphne serving tests.browser.asgi:application on 127.0.0.1:<port>; with `processes` > 1, that many
    behind one socket (gbplatform.serve, as deployed)."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    processes: int = 1

    def start(self) -> LiveServer:
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                   "tests.browser.asgi:application"]
        if self.processes > 1:
            command[1:3] = ["-m", "gbplatform.serve", "--processes", str(self.processes)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daphne exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"daphne did not listen within {SERVER_START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Stop the server (its sockets drop as in a deploy or crash) and start it again on the same port."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def url(self, host: str, path: str = "/") -> str:
        return f"http://{host}:{self.port}{path}"


class FramingSite:
    """Another web site on loopback whose page frames a URL: `/host.html?src=<url>` answers
    `<iframe id="f" src="<url>">`. Reached under any `*.localhost` name, each name being its own origin."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                src = parse_qs(urlsplit(self.path).query).get("src", [""])[0]
                body = f'<!doctype html><title>outer</title><iframe id="f" src="{escape(src)}"></iframe>'.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def origin(self, host: str) -> str:
        return f"http://{host}:{self.port}"

    def page_url(self, host: str, framed_url: str) -> str:
        return f"{self.origin(host)}/host.html?{urlencode({'src': framed_url})}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def write_package(root: Path, bot_name: str, files: dict[str, str]) -> Path:
    """A `<bot>.gbai` folder under `root` holding `files` (path inside the package -> text)."""
    package = root / f"{bot_name}.gbai"
    if package.exists():
        shutil.rmtree(package)
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package
