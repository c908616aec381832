"""A real IMAP server for tests: Debian's dovecot (`dovecot-imapd`) on a free loopback port.

Each server gets a private configuration in a temporary folder (nothing under /etc is read or written):
IMAP only, plain-text logins allowed on loopback without TLS, users and passwords from passwd-files (one per user),
maildir storage under the same folder. Every dovecot process runs as the user running the tests, so the
harness works as an ordinary user; as root (dovecot refuses to run its login and mail processes as
root), they run as the package's own `dovecot` and `dovenull` users instead. `add_user` may be called
while the server runs (each login reads that user's passwd-file).

`dovecot_binary()` is None when dovecot is not installed: tests skip with the reason then.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gbplatform.localservices import free_port

# Dovecot is up in ~0.3 s here; allow for a busy machine before calling it a failure.
STARTUP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
BINARY_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")
# Accounts the Debian package creates; used for dovecot's own processes when the tests run as root.
ROOT_MAIL_USER, ROOT_LOGIN_USER = "dovecot", "dovenull"
SKIP_REASON = "dovecot not installed: `apt-get install dovecot-imapd` (or `make system-deps`) to run the IMAP tests"

CONFIG_TEMPLATE = """\
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {login_user}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:{root}/mail/%u
mail_uid = {uid}
mail_gid = {gid}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users/%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  chroot =
  user = {login_user}
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  chroot =
}}
service submission-login {{
  chroot =
}}
service anvil {{
  chroot =
}}
service auth {{
  user = {user}
}}
service auth-worker {{
  user = {user}
}}
service stats {{
  unix_listener stats-reader {{
    user = {user}
  }}
  unix_listener stats-writer {{
    user = {user}
  }}
}}
"""


def dovecot_binary() -> str | None:
    for candidate in BINARY_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("dovecot")


@dataclass
class DovecotServer:
    host: str
    port: int
    root: Path
    process: subprocess.Popen
    users: dict[str, str] = field(default_factory=dict)

    def add_user(self, username: str, password: str) -> None:
        if ":" in username or ":" in password or "\n" in username + password:
            raise ValueError("passwd-file fields cannot hold ':' or newlines")
        if "/" in username or username.startswith("."):
            raise ValueError("a user name is a file name here: no '/' and no leading '.'")
        self.users[username] = password
        # One passwd-file per user: dovecot re-reads a changed file by its mtime and size, which two quick
        # writes of one shared file can leave unchanged; a new file per user is always seen.
        (self.root / "users" / username).write_text(f"{username}:{{PLAIN}}{password}::::::\n")

    def log_text(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def dovecot_start(*, binary: str | None = None) -> DovecotServer:
    binary = binary or dovecot_binary()
    if binary is None:
        raise FileNotFoundError(SKIP_REASON)
    root = Path(tempfile.mkdtemp(prefix="gb-dovecot-"))
    uid, gid = os.getuid(), os.getgid()
    user, group = pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name
    login_user = user
    if uid == 0:
        account = pwd.getpwnam(ROOT_MAIL_USER)
        uid, gid, user, group = account.pw_uid, account.pw_gid, account.pw_name, grp.getgrgid(account.pw_gid).gr_name
        login_user = ROOT_LOGIN_USER
    root.chmod(0o755)  # the unprivileged dovecot processes read the passwd-file and write the maildirs
    for sub in ("run", "state", "mail", "home", "users"):
        (root / sub).mkdir()
    for sub in ("mail", "home"):
        os.chown(root / sub, uid, gid)
    port = free_port()
    config = root / "dovecot.conf"
    config.write_text(CONFIG_TEMPLATE.format(root=root, user=user, group=group, uid=uid, gid=gid, port=port,
                                             login_user=login_user))
    process = subprocess.Popen(  # noqa: S603 - a fixed binary with our own config
        [binary, "-F", "-c", str(config)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=(root / "stderr.log").open("wb"),
        start_new_session=True,
    )
    server = DovecotServer(host="127.0.0.1", port=port, root=root, process=process)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            detail = (root / "stderr.log").read_text(errors="replace") + server.log_text()
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"dovecot exited with {process.returncode}: {detail.strip()[-2000:]}")
        try:
            with socket.create_connection((server.host, port), timeout=0.5) as sock:
                if sock.recv(64).startswith(b"* OK"):
                    return server
        except OSError:
            pass
        time.sleep(0.05)
    detail = server.log_text()
    server.stop()
    raise RuntimeError(f"dovecot did not greet on port {port} within {STARTUP_TIMEOUT_S} s: {detail[-2000:]}")
