"""`make run`: every process of the platform on one machine, with embedded defaults.

Starts embedded PostgreSQL (unless DATABASE_URL is set) and a local Redis (unless REDIS_URL is set),
migrates the shared and tenant schemas, makes sure the demo tenant exists, then runs the web processes
(gbplatform.serve: daphne, one per core up to two unless WEB_PROCESSES says), a Celery
worker and Celery beat as children. Ctrl-C (or SIGTERM) stops the children, then the local servers.
Data lives in var/, so later runs reuse it and start in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gbplatform import localservices

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("GB_VAR_DIR") or BASE_DIR / "var")
# Children get this long to finish in-flight work after SIGTERM before they are killed.
CHILD_STOP_TIMEOUT_S = 15
HOST = os.environ.get("GB_BIND", "127.0.0.1")
PORT = int(os.environ.get("GB_PORT", "8000"))


def _log(message: str) -> None:
    # The terminal may be gone (a hang-up): writing then fails with EIO, and stopping must go on regardless.
    with contextlib.suppress(OSError):
        print(f"[run] {message}", flush=True)


def _manage(env: dict, *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True)  # noqa: S603


def _spawn(env: dict, name: str, args: list[str]) -> subprocess.Popen:
    _log(f"starting {name}")
    # Each child leads its own process group so a stop reaches its own children (Celery's pool) too.
    return subprocess.Popen(args, cwd=BASE_DIR, env=env, start_new_session=True)  # noqa: S603


def _stop(children: list[tuple[str, subprocess.Popen]]) -> None:
    for _name, proc in children:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
    for name, proc in children:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _log(f"{name} did not stop in {CHILD_STOP_TIMEOUT_S} s: killing it")
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> int:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "gbplatform.settings.dev")
    env["PYTHONUNBUFFERED"] = "1"
    VAR_DIR.mkdir(parents=True, exist_ok=True)

    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # The terminal closing (or an SSH session dropping): the children lead their own process groups, so the
    # hang-up reaches only this process; by default it would die here and leave them all running.
    signal.signal(signal.SIGHUP, on_signal)

    postgres = redis = None
    children: list[tuple[str, subprocess.Popen]] = []
    try:
        if not env.get("DATABASE_URL"):
            _log("starting embedded PostgreSQL (var/pg)")
            postgres = localservices.postgres_start(VAR_DIR / "pg")
            env["DATABASE_URL"] = postgres.url
        if not env.get("REDIS_URL"):
            _log("starting local Redis (var/redis)")
            redis = localservices.redis_start(VAR_DIR / "redis", persist=True)
            env["REDIS_URL"] = redis.url

        _log("migrating shared and tenant schemas")
        _manage(env, "migrate_schemas", "--shared", "-v", "0")
        _manage(env, "migrate_schemas", "--tenant", "-v", "0")
        _manage(env, "platform_bootstrap", "--demo")

        python = sys.executable
        children = [
            ("web", _spawn(env, "web (daphne processes behind one socket)",
                           [python, "-m", "gbplatform.serve", "-b", HOST, "-p", str(PORT),
                            "gbplatform.asgi:application"])),
            ("worker", _spawn(env, "celery worker", [python, "-m", "celery", "-A", "gbplatform", "worker",
                                                     "-Q", "dispatch,drive,index,jobs,mail", "-c", "2",
                                                     "--loglevel", "INFO"])),
            ("beat", _spawn(env, "celery beat", [python, "-m", "celery", "-A", "gbplatform", "beat",
                                                 "--loglevel", "INFO",
                                                 "-s", str(VAR_DIR / "celerybeat-schedule")])),
        ]
        _print_banner()
        while not stopping:
            for name, proc in children:
                if proc.poll() is not None:
                    _log(f"{name} exited with {proc.returncode}: stopping everything")
                    stopping = True
            time.sleep(0.5)
        return 0
    except subprocess.CalledProcessError as exc:
        _log(f"setup failed: {exc}")
        return 1
    finally:
        _log("stopping")
        _stop(children)
        if redis:
            redis.stop()
        if postgres:
            postgres.stop()
        _log("stopped")


def _display_path(path: Path) -> str:
    return str(path.relative_to(BASE_DIR)) if path.is_relative_to(BASE_DIR) else str(path)


def _print_banner() -> None:
    credentials_path = VAR_DIR / "demo-credentials.json"
    credentials = json.loads(credentials_path.read_text()) if credentials_path.exists() else {}
    admin = credentials.get("tenant_admin", {})
    staff = credentials.get("staff", {})
    lines = [
        "",
        "  The platform is running. Ctrl-C stops everything.",
        f"  Demo tenant:     http://demo.localhost:{PORT}/",
        f"  Tenant console:  http://demo.localhost:{PORT}/console/  login {admin.get('username')} / "
        f"{admin.get('password')}",
        f"  Health:          http://demo.localhost:{PORT}/api/health",
        f"  Support admin:   http://localhost:{PORT}/admin/  login {staff.get('username')} / "
        f"{staff.get('password')}",
        f"  (credentials are kept in {_display_path(credentials_path)})",
        "",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
