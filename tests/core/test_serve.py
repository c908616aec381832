"""gbplatform.serve: several daphne processes accept on one socket; a child that dies is replaced while the
others keep answering; children that die on start stop the server with an error; SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from gbplatform import serve
from tests.browser.harness import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30


def _start(port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gbplatform.serve", "-b", "127.0.0.1", "-p", str(port), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _get(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:  # noqa: S310 - loopback
        return int(response.read())


def _children(process: subprocess.Popen) -> list[psutil.Process]:
    return [c for c in psutil.Process(process.pid).children() if "daphne" in " ".join(c.cmdline())]


def _listening(child: psutil.Process, port: int) -> bool:
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in child.net_connections("tcp"))


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, psutil.Error):
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def served():
    port = free_port()
    process = _start(port, "--processes", "2", "tests.support.pid_asgi:application")
    yield port, process
    if process.poll() is None:
        children = psutil.Process(process.pid).children(recursive=True)  # before the parent goes
        process.kill()
        for child in children:
            child.kill()
        process.wait()


def test_two_processes_share_the_socket_and_a_dead_one_is_replaced(served):
    port, process = served
    _wait(lambda: len(_children(process)) == 2 and all(_listening(c, port) for c in _children(process)),
          "two daphne processes listening")
    pids = {c.pid for c in _children(process)}
    assert _get(port) in pids
    # Each child knows how many they are (the database connection budget is counted from it).
    assert [c.environ().get("WEB_PROCESSES") for c in _children(process)] == ["2", "2"]
    victim = _children(process)[0]
    victim.kill()
    # The other process answers at once, and the supervisor starts a replacement on the same socket.
    assert _get(port) in pids - {victim.pid}
    _wait(lambda: len(_children(process)) == 2 and victim.pid not in {c.pid for c in _children(process)}
          and all(_listening(c, port) for c in _children(process)), "a replacement listening")
    assert process.poll() is None

    children = _children(process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(serve.CHILD_STOP_TIMEOUT_S + 5) == 0
    assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)
    with pytest.raises(OSError):
        _get(port)


def test_children_dying_on_start_stop_the_server_with_an_error():
    port = free_port()
    process = _start(port, "--processes", "1", "tests.support.no_such_module:application")
    output, _ = process.communicate(timeout=serve.QUICK_DEATHS_MAX * (serve.RESTART_DELAY_S + 10))
    assert process.returncode == 1
    assert f"keep dying on start ({serve.QUICK_DEATHS_MAX} in a row)" in output


def test_a_port_in_use_is_a_clear_error():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = _start(port, "tests.support.pid_asgi:application")
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in output


def test_web_processes_setting(monkeypatch):
    monkeypatch.setenv("WEB_PROCESSES", "3")
    assert serve.processes_default() == 3
    monkeypatch.setenv("WEB_PROCESSES", "")
    assert serve.processes_default() == max(1, min(os.cpu_count() or 1, serve.PROCESSES_DEFAULT_MAX))
    for bad in ("zero", "0"):
        monkeypatch.setenv("WEB_PROCESSES", bad)
        with pytest.raises(SystemExit, match="WEB_PROCESSES must be"):
            serve.processes_default()


def test_daphne_options_go_after_a_double_dash_and_unknown_ones_are_refused():
    port = free_port()
    refused = _start(port, "--processes", "1", "--proxy-headers", "tests.support.pid_asgi:application")
    output, _ = refused.communicate(timeout=30)
    assert refused.returncode == 2 and "unrecognized arguments: --proxy-headers" in output
    process = _start(port, "--processes", "1", "tests.support.pid_asgi:application", "--", "--proxy-headers")
    try:
        _wait(lambda: _get(port) > 0, "the server answering")
        assert "--proxy-headers" in _children(process)[0].cmdline()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(serve.CHILD_STOP_TIMEOUT_S + 5) == 0


def test_children_go_with_a_supervisor_killed_outright(served):
    port, process = served
    _wait(lambda: len(_children(process)) == 2 and all(_listening(c, port) for c in _children(process)),
          "two daphne processes listening")
    children = _children(process)
    process.kill()  # no chance to stop them itself
    process.wait()
    _, alive = psutil.wait_procs(children, timeout=serve.CHILD_STOP_TIMEOUT_S + 5)
    assert alive == []


@pytest.mark.parametrize(("args", "reason"), [
    (["-b", "::1"], "--bind takes an IPv4 address"),
    (["tests.support.pid_asgi:application", "--", "-p", "9"], "may not name an endpoint (-p)"),
])
def test_binds_the_children_cannot_serve_are_refused(args, reason):
    process = _start(free_port(), *args)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 2 and reason in output
