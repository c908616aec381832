"""A real SMTP server for tests: aiosmtpd on a free loopback port, capturing every accepted message.

`SmtpServer.messages` holds what was accepted (envelope sender and recipients, the parsed message, the
raw bytes). Switches simulate a server's answers:

* `fail_next`: a list of SMTP replies ("451 4.3.0 try again later") given to the next DATA commands,
  one each, before messages are accepted again (a temporary failure, then success);
* `rcpt_replies`: address -> a list of replies ("450 4.2.0 greylisted", "550 5.1.1 no such user") given to
  the next RCPT TO commands naming that address, one each, before it is accepted again; the other recipients
  of the same transaction are accepted, as a real server does. `rcpt_commands` records every RCPT TO address;
* `users`: when set, AUTH (PLAIN/LOGIN) is required and checked against it; `auth_attempts` records
  every (user, password) offered. aiosmtpd allows AUTH without TLS only because `auth_require_tls=False`
  is passed, which is for loopback tests only.

`wait_for(count)` blocks until that many messages were accepted (the delivery runs on a Celery worker).
`bot_mail_config(server, sender=...)` gives the config.csv rows that make a bot send through the server
(tests must also set `settings.MAIL_ALLOW_PRIVATE_HOSTS = True`: it is a loopback host).
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from gbplatform.localservices import free_port

WAIT_TIMEOUT_S = 20.0


def bot_mail_config(server: SmtpServer, *, sender: str) -> dict[str, str]:
    """config.csv keys and values for a bot that sends through `server` (no TLS, no AUTH)."""
    return {"email-from": sender, "email-server": server.host, "email-port": str(server.port),
            "email-security": "plain"}


@dataclass
class CapturedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


@dataclass
class _Handler:
    server: SmtpServer

    async def handle_RCPT(self, smtp, session, envelope, address, rcpt_options) -> str:  # noqa: N802 - hook name
        with self.server.lock:
            self.server.rcpt_commands.append(address)
            replies = self.server.rcpt_replies.get(address)
            if replies:
                return replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        with self.server.lock:
            if self.server.fail_next:
                return self.server.fail_next.pop(0)
            raw = envelope.original_content or envelope.content
            # Parsed with local line ends, so tests compare bodies with "\n"; `raw` keeps the wire form.
            message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
            self.server.messages.append(
                CapturedMail(envelope.mail_from, list(envelope.rcpt_tos), message, raw))  # type: ignore[arg-type]
            self.server.data_commands += 1
        return "250 2.0.0 Message accepted"


@dataclass
class SmtpServer:
    host: str = "127.0.0.1"
    port: int = 0
    users: dict[str, str] | None = None
    messages: list[CapturedMail] = field(default_factory=list)
    fail_next: list[str] = field(default_factory=list)
    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)
    rcpt_commands: list[str] = field(default_factory=list)
    auth_attempts: list[tuple[str, str]] = field(default_factory=list)
    data_commands: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = auth_data.login.decode(), auth_data.password.decode()
        self.auth_attempts.append((user, password))
        ok = self.users is not None and self.users.get(user) == password
        return AuthResult(success=ok, handled=False)

    def start(self) -> SmtpServer:
        self.port = self.port or free_port()
        kwargs = {}
        if self.users is not None:
            kwargs = {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": False}
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port, **kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self.fail_next.clear()
            self.rcpt_replies.clear()
            self.rcpt_commands.clear()
            self.auth_attempts.clear()
            self.data_commands = 0

    def wait_for(self, count: int, timeout: float = WAIT_TIMEOUT_S) -> list[CapturedMail]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} message(s) within {timeout} s, got {len(self.messages)}")

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
