"""The web process: several daphne processes sharing one listening socket (`python -m gbplatform.serve`).

One daphne runs Python on one core at a time (the GIL), so a host with more cores serves more chat turns
and pages with more processes. This opens the socket once and starts `WEB_PROCESSES` daphne children that
accept on it (`daphne --fd`); the kernel hands each new connection to one of them. Everything that must be
shared between them already is: sessions, turn order (a PostgreSQL advisory lock per session), chat events
(the channel layer), rate limits (Redis).

A child that dies is started again (its sockets are lost; clients reconnect and resume). Children that keep
dying right after starting mean a broken deploy: the server stops with an error instead of looping.
SIGTERM or SIGINT closes the socket and stops the children (daphne ends its connections; chat clients
reconnect and resume; a child still running after CHILD_STOP_TIMEOUT_S is killed), then exits. The children
also get SIGTERM if the supervisor itself dies, so none keeps serving old code on the port.

Slow clients and daphne's timeouts: a client trickling its request head or body is dropped by
apps.core.daphne_slow_clients (HTTP_REQUEST_HEAD_TIMEOUT_S, HTTP_REQUEST_BODY_TIMEOUT_S and
HTTP_REQUEST_BODY_MIN_BYTES_PER_S), which every daphne of ours loads with gbplatform.asgi: daphne has no
command-line option for them, and Twisted alone keeps such a connection for ever. Our daphne commands leave
`--http-timeout` unset on purpose: its clock starts once the request has fully arrived, so it does nothing
about slow clients, and it would cut what may rightly take long (server-sent event streams, exports, a REST chat
turn waiting up to 10 minutes for a slow model) with a 503.

IPv4 addresses only: daphne adopts an inherited socket as IPv4, and an IPv6 one would give the application
garbage client addresses (rate limits and the audit log key on them). Put a proxy in front for IPv6.

    python -m gbplatform.serve --bind 0.0.0.0 --port 8000 --processes 4 gbplatform.asgi:application
    python -m gbplatform.serve -p 8000 gbplatform.asgi:application -- --proxy-headers   # daphne options after --
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time

logger = logging.getLogger("gbplatform.serve")

DEFAULT_APPLICATION = "gbplatform.asgi:application"
# daphne options that would make each child bind its own endpoint (the second would crash on a busy port).
ENDPOINT_OPTIONS = ("-b", "--bind", "-p", "--port", "-u", "--unix-socket", "--fd", "-e", "--endpoint")
# Without WEB_PROCESSES: one per core, at most this many. Each process keeps up to CHAT_TURN_THREADS +
# CHAT_QUICK_THREADS (40) PostgreSQL connections under load, and PostgreSQL's default allows 100.
PROCESSES_DEFAULT_MAX = 2
# Connections waiting to be accepted by some child (a burst of reconnects after a deploy).
LISTEN_BACKLOG = 1024
# A child gets this long after SIGTERM to finish in-flight requests before it is killed.
CHILD_STOP_TIMEOUT_S = 15.0
# A child that dies sooner than this after starting counts as a failed start; this many in a row across
# the children stop the server (an import error, a bad setting: restarting would only loop).
QUICK_DEATH_S = 10.0
QUICK_DEATHS_MAX = 5
# Pause before starting a replacement, so a crashing child cannot spin the CPU.
RESTART_DELAY_S = 1.0
# How often the supervisor looks at its children.
POLL_S = 0.2


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux; elsewhere a no-op)."""
    import contextlib
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def processes_default() -> int:
    raw = os.environ.get("WEB_PROCESSES", "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise SystemExit(f"WEB_PROCESSES must be a whole number, not {raw!r}") from None
        if value < 1:
            raise SystemExit(f"WEB_PROCESSES must be at least 1, not {value}")
        return value
    return max(1, min(os.cpu_count() or 1, PROCESSES_DEFAULT_MAX))


def listen(host: str, port: int) -> socket.socket:
    """The shared listening socket, inheritable by the children."""
    sock = socket.create_server((host, port), family=socket.AF_INET, backlog=LISTEN_BACKLOG)
    sock.set_inheritable(True)
    return sock


class Supervisor:
    def __init__(self, sock: socket.socket, processes: int, application: str, daphne_args: list[str]) -> None:
        self.sock, self.count, self.application, self.daphne_args = sock, processes, application, daphne_args
        self.children: dict[int, tuple[subprocess.Popen, float]] = {}  # slot -> (process, started at)
        self.stopping = False
        self.quick_deaths = 0

    def command(self) -> list[str]:
        return [sys.executable, "-m", "daphne", "--fd", str(self.sock.fileno()), *self.daphne_args, self.application]

    def spawn(self, slot: int) -> None:
        # The children know how many they are (apps.sessions.checks sizes the database connections by it).
        env = {**os.environ, "WEB_PROCESSES": str(self.count)}
        process = subprocess.Popen(self.command(), pass_fds=[self.sock.fileno()], env=env,  # noqa: S603
                                   preexec_fn=_die_with_parent)  # noqa: PLW1509 - one prctl call, no threads yet
        self.children[slot] = (process, time.monotonic())
        logger.info("web process %d started (pid %d)", slot, process.pid)

    def run(self) -> int:
        try:
            return self._supervise()
        finally:
            self.stop()  # whatever ended the loop (a failed respawn too), no child outlives it

    def _supervise(self) -> int:
        for slot in range(self.count):
            self.spawn(slot)
        while not self.stopping:
            time.sleep(POLL_S)
            for slot, (process, started) in list(self.children.items()):
                if self.stopping or process.poll() is None:
                    continue
                quick = time.monotonic() - started < QUICK_DEATH_S
                self.quick_deaths = self.quick_deaths + 1 if quick else 0
                logger.error("web process %d (pid %d) exited with %s%s", slot, process.pid, process.returncode,
                             " right after starting" if quick else "")
                if self.quick_deaths >= QUICK_DEATHS_MAX:
                    logger.error("web processes keep dying on start (%d in a row): stopping", self.quick_deaths)
                    return 1
                time.sleep(RESTART_DELAY_S)
                if not self.stopping:
                    self.spawn(slot)
        return 0

    def stop(self) -> None:
        self.stopping = True
        self.sock.close()  # no new connection waits in the backlog for a child that is going away
        for process, _started in self.children.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + CHILD_STOP_TIMEOUT_S
        for slot, (process, _started) in self.children.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("web process %d did not stop in %.0f s: killing it", slot, CHILD_STOP_TIMEOUT_S)
                process.kill()
                process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gbplatform.serve", description=__doc__.splitlines()[0])
    parser.add_argument("-b", "--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("-p", "--port", type=int, default=8000)
    parser.add_argument("--processes", type=int, default=None,
                        help=f"daphne processes (default: WEB_PROCESSES, else one per core up to "
                             f"{PROCESSES_DEFAULT_MAX})")
    parser.add_argument("application", nargs="?", default=DEFAULT_APPLICATION)
    argv = list(sys.argv[1:] if argv is None else argv)
    ours, daphne_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    args = parser.parse_args(ours)
    processes = args.processes if args.processes is not None else processes_default()
    if processes < 1:
        parser.error("--processes must be at least 1")
    if ":" in args.bind:
        parser.error("--bind takes an IPv4 address (daphne adopts the shared socket as IPv4; proxy IPv6)")
    bad = [a for a in daphne_args if a.split("=", 1)[0] in ENDPOINT_OPTIONS]
    if bad:
        parser.error(f"daphne options after '--' may not name an endpoint ({', '.join(bad)}): use --bind/--port")
    logging.basicConfig(level=logging.INFO, format="[serve] %(message)s")
    try:
        sock = listen(args.bind, args.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", args.bind, args.port, exc)
        return 2
    supervisor = Supervisor(sock, processes, args.application, daphne_args)

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info("listening on %s:%d with %d daphne process(es)", args.bind, args.port, processes)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
