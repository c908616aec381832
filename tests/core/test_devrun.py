"""`make run` (gbplatform.devrun): its children lead their own process groups, so a signal to the terminal
reaches only devrun, which must stop them all: Ctrl-C, a TERM, and the hang-up of a closed terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# devrun with its set-up and its processes replaced: each "process" is a sleep in its own process group.
RUNNER = """
import subprocess, sys
from gbplatform import devrun

spawned = []

def spawn(env, name, args):
    spawned.append(subprocess.Popen(["sleep", "300"], start_new_session=True))
    return spawned[-1]

devrun._manage = lambda env, *args: None
devrun._spawn = spawn
devrun._print_banner = lambda: print("children:", *[p.pid for p in spawned], flush=True)
sys.exit(devrun.main())
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM, signal.SIGINT])
def test_devrun_stops_every_child_on_a_signal(tmp_path, signum):
    env = {**os.environ, "DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused", "REDIS_URL": "redis://127.0.0.1:1/0",
           "GB_VAR_DIR": str(tmp_path)}
    runner = subprocess.Popen([sys.executable, "-c", RUNNER], cwd=ROOT, env=env, stdout=subprocess.PIPE,  # noqa: S603
                              stderr=subprocess.STDOUT, text=True)
    try:
        children: list[int] = []
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline:
            line = runner.stdout.readline()
            if not line:
                break
            if line.startswith("children:"):
                children = [int(pid) for pid in line.split()[1:]]
        assert len(children) == 3, "devrun did not start its three processes"
        runner.send_signal(signum)
        assert runner.wait(timeout=30) == 0
        time.sleep(0.2)
        assert [pid for pid in children if _alive(pid)] == []
    finally:
        if runner.poll() is None:
            runner.kill()


def test_a_closed_terminal_stops_every_child_though_devrun_can_no_longer_write_to_it(tmp_path):
    """The hang-up comes with the terminal gone: devrun's own messages then fail (EIO), which must not stop it
    from stopping its children."""
    import pty

    env = {**os.environ, "DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused", "REDIS_URL": "redis://127.0.0.1:1/0",
           "GB_VAR_DIR": str(tmp_path)}
    master, slave = pty.openpty()
    runner = subprocess.Popen([sys.executable, "-c", RUNNER], cwd=ROOT, env=env, stdout=slave,  # noqa: S603
                              stderr=slave, stdin=slave)
    os.close(slave)
    try:
        output, children = b"", []
        deadline = time.monotonic() + 60
        while not children and time.monotonic() < deadline:
            output += os.read(master, 4096)
            for line in output.decode(errors="replace").splitlines():
                if line.startswith("children:") and len(line.split()) == 4:
                    children = [int(pid) for pid in line.split()[1:]]
        assert len(children) == 3, output
        os.close(master)  # the terminal window closes
        runner.send_signal(signal.SIGHUP)
        runner.wait(timeout=30)
        time.sleep(0.2)
        assert [pid for pid in children if _alive(pid)] == []
    finally:
        if runner.poll() is None:
            runner.kill()
