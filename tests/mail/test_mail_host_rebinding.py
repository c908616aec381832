"""DNS rebinding against a bot's mail servers: `email-server` / `imap-server` are checked as public when the
account is read (apps.mail.accounts), and smtplib / imapclient connect only to an address checked in the same
resolution (apps.core.outbound). A honeypot on 127.0.0.1 speaks enough SMTP or IMAP to take a whole message or
a login: it must see no connection at all. A name resolving consistently to a public address (routed to a
loopback server) still works, and the platform's SMTP_HOST (trusted) is not checked."""

from __future__ import annotations

from email.message import EmailMessage

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotConfig
from apps.mail import services
from apps.mail.accounts import MailConfigError, imap_account, smtp_account
from tests.support.rebinding import LOOPBACK, PUBLIC_ADDRESS, Honeypot, Resolver, Route

pytestmark = pytest.mark.django_db

REBINDING = [PUBLIC_ADDRESS, LOOPBACK]


def _bot(name: str, config: dict[str, str]) -> Bot:
    bot = Bot.objects.create(name=name)
    for line, (key, value) in enumerate(config.items(), start=2):
        BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
    return bot


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "shop@example.test", "ann@example.test", "order"
    message.set_content("your order")
    return message


@pytest.fixture
def guarded(settings):
    settings.MAIL_ALLOW_PRIVATE_HOSTS = False  # production's default
    return settings


@pytest.mark.parametrize("security", ["plain", "starttls", "ssl"])
def test_an_email_server_rebinding_to_loopback_is_refused_when_connecting(monkeypatch, canary_tenants, guarded,
                                                                         security):
    with Honeypot("smtp") as honeypot:
        resolver = Resolver(monkeypatch, {"smtp.rebind.test": REBINDING})
        with schema_context(canary_tenants.a.schema_name):
            account = smtp_account(_bot(f"rebind-smtp-{security}", {
                "email-from": "shop@example.test", "email-server": "smtp.rebind.test",
                "email-port": str(honeypot.port), "email-security": security}))  # the check passes: public
            with pytest.raises(MailConfigError, match=r"SMTP server smtp\.rebind\.test refused: address 127\.0\.0\.1 "
                                                      r"of 'smtp\.rebind\.test' is not a public address"):
                services._smtp_deliver(account, _message(), ["ann@example.test"])
    assert honeypot.hits == []
    assert resolver.lookups == ["smtp.rebind.test", "smtp.rebind.test"]


def test_an_imap_server_rebinding_to_loopback_is_refused_when_connecting(monkeypatch, canary_tenants, guarded):
    with Honeypot("imap") as honeypot:
        Resolver(monkeypatch, {"imap.rebind.test": REBINDING})
        with schema_context(canary_tenants.a.schema_name):
            bot = _bot("rebind-imap", {"imap-server": "imap.rebind.test", "imap-port": str(honeypot.port),
                                       "imap-security": "plain", "imap-user": "u", "imap-pass": "p"})
            report = services.mailbox_poll(bot=bot)
    assert "IMAP server imap.rebind.test refused: address 127.0.0.1" in report.error
    assert honeypot.hits == []


def test_an_email_server_resolving_consistently_to_a_public_address_still_sends(monkeypatch, canary_tenants,
                                                                               guarded, smtp):
    Resolver(monkeypatch, {"smtp.public.test": [PUBLIC_ADDRESS]})
    route = Route(monkeypatch, {(PUBLIC_ADDRESS, smtp.port): (LOOPBACK, smtp.port)})  # the "public" server
    with schema_context(canary_tenants.a.schema_name):
        account = smtp_account(_bot("public-smtp", {
            "email-from": "shop@example.test", "email-server": "smtp.public.test", "email-port": str(smtp.port),
            "email-security": "plain"}))
        # (the recipients the server took it for, the ones it refused)
        assert services._smtp_deliver(account, _message(), ["ann@example.test"]) == (["ann@example.test"], {})
    [mail] = smtp.wait_for(1)
    assert mail.rcpt_tos == ["ann@example.test"]
    assert (PUBLIC_ADDRESS, smtp.port) in route.connects and (LOOPBACK, smtp.port) not in route.connects


def test_an_imap_server_resolving_consistently_to_a_public_address_still_connects(monkeypatch, canary_tenants,
                                                                                 guarded):
    with Honeypot("imap") as server:  # here it stands for the bot's real mailbox server
        Resolver(monkeypatch, {"imap.public.test": [PUBLIC_ADDRESS]})
        route = Route(monkeypatch, {(PUBLIC_ADDRESS, server.port): (LOOPBACK, server.port)})
        with schema_context(canary_tenants.a.schema_name):
            account = imap_account(_bot("public-imap", {
                "imap-server": "imap.public.test", "imap-port": str(server.port), "imap-security": "plain",
                "imap-user": "u", "imap-pass": "p"}))
        with services._imap_connect(account):
            pass
    assert len(server.hits) == 1 and b"LOGIN" in server.hits[0].upper()
    assert route.connects.count((PUBLIC_ADDRESS, server.port)) == 1


def test_the_platform_smtp_host_is_trusted_and_not_checked(canary_tenants, guarded, smtp):
    guarded.SMTP_HOST, guarded.SMTP_PORT, guarded.SMTP_USE_TLS = LOOPBACK, smtp.port, False
    guarded.SMTP_USER, guarded.SMTP_PASSWORD, guarded.MAIL_DEFAULT_FROM = "", "", "bots@example.test"
    with schema_context(canary_tenants.a.schema_name):
        account = smtp_account(_bot("platform-smtp", {"email-from": "bots@example.test"}))
    assert account.platform
    services._smtp_deliver(account, _message(), ["ann@example.test"])
    assert len(smtp.wait_for(1)) == 1
