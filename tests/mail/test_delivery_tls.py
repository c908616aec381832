"""TLS failures when sending: a connection the server cuts off during the handshake is retried, a TLS setup that
cannot work (a refused certificate, TLS spoken to a plain port) fails at once. Real loopback servers."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotConfig
from apps.mail.models import OutgoingMail
from apps.mail.services import MailTemporaryError, mail_deliver, mail_send
from tests.mail.conftest import bot_name_new

pytestmark = pytest.mark.django_db


@contextmanager
def loopback_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A TCP server on a free loopback port that runs `handle` on each connection it accepts; yields the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                with suppress(OSError):  # the client gave up first
                    handle(connection)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def cut_off_in_the_handshake(connection: socket.socket) -> None:
    """Read the client's hello, then end the connection without answering it (a relay restarting)."""
    connection.recv(65536)
    connection.shutdown(socket.SHUT_RDWR)


def starttls_then_cut_off(connection: socket.socket) -> None:
    reader = connection.makefile("rb")
    connection.sendall(b"220 relay.test ESMTP\r\n")
    reader.readline()  # EHLO
    connection.sendall(b"250-relay.test\r\n250 STARTTLS\r\n")
    reader.readline()  # STARTTLS
    connection.sendall(b"220 2.0.0 Ready to start TLS\r\n")
    cut_off_in_the_handshake(connection)


def plain_smtp(connection: socket.socket) -> None:
    """A server speaking plain SMTP where the bot expects implicit TLS."""
    connection.sendall(b"220 relay.test ESMTP\r\n")
    connection.recv(65536)


def self_signed_context(tmp_path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return context


def tls_bot(port: int, security: str) -> Bot:
    bot = Bot.objects.create(name=bot_name_new("tls"), display_name="TLS Bot")
    config = {"email-from": f"{bot.name}@shop.test", "email-server": "127.0.0.1", "email-port": str(port),
              "email-security": security}
    for line, (key, value) in enumerate(config.items(), start=2):
        BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
    return bot


@pytest.mark.parametrize(("handler", "security"), [(cut_off_in_the_handshake, "ssl"),
                                                   (starttls_then_cut_off, "starttls")])
def test_a_tls_handshake_the_server_cuts_off_is_retried_not_failed(mail_tenant, handler, security):
    """`_classify` made every ssl.SSLError permanent: an SSLEOFError from a relay that dropped the connection
    mid-handshake failed the mail at its first attempt, never retried."""
    with schema_context(mail_tenant.schema_name), loopback_server(handler) as port:
        row = mail_send(bot=tls_bot(port, security), to="ana@example.test", subject="x", body_text="y")
        with pytest.raises(MailTemporaryError, match="TLS cut off: SSLEOFError"):
            mail_deliver(mail_id=row.pk)
        row = OutgoingMail.objects.get(pk=row.pk)
        assert (row.status, row.attempts) == ("queued", 1)
        assert row.last_error.startswith("TLS cut off: SSLEOFError")


def test_a_certificate_the_bot_cannot_verify_and_tls_to_a_plain_port_still_fail_at_once(mail_tenant, tmp_path):
    server_context = self_signed_context(tmp_path)

    def self_signed(connection: socket.socket) -> None:
        with server_context.wrap_socket(connection, server_side=True):
            pass

    with schema_context(mail_tenant.schema_name):
        with loopback_server(self_signed) as port:
            row = mail_send(bot=tls_bot(port, "ssl"), to="ana@example.test", subject="x", body_text="y")
            assert mail_deliver(mail_id=row.pk) == "failed"
            row = OutgoingMail.objects.get(pk=row.pk)
            assert row.last_error.startswith("TLS failed: CERTIFICATE_VERIFY_FAILED")
        with loopback_server(plain_smtp) as port:
            row = mail_send(bot=tls_bot(port, "ssl"), to="ana@example.test", subject="x", body_text="y")
            assert mail_deliver(mail_id=row.pk) == "failed"
            row = OutgoingMail.objects.get(pk=row.pk)
            assert row.last_error.startswith("TLS failed: WRONG_VERSION_NUMBER")
