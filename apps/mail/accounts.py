"""A bot's SMTP and IMAP accounts, read from its config.csv (spec 2.4.4, 8.2) with platform SMTP defaults.

Failure modes this module prevents:

* Leaking the platform's SMTP password to a server a tenant chose: the platform account (`SMTP_*`) is
  used whole or not at all. A bot that names its own `email-server` authenticates with its own user and
  password only, never with `SMTP_PASSWORD`.
* Reading another tenant's (or the platform's) secrets: `vault:` references in a bot's config are resolved
  only inside the bot's tenant scope (`bot_config_secret_value`), so `email-pass,vault:gbo/tenants/other#x`
  is refused with a clear error, and so is the tenant admins' own `gbo/tenants/<tenant>/admin` (an editor
  sending the OIDC client secret as an SMTP password to a server they chose).
* Turning the mail client into a port scanner of the internal network: a server a bot names must resolve
  to public addresses (the same guard as the HTTP keywords), unless the operator allows private hosts
  (`MAIL_ALLOW_PRIVATE_HOSTS`, for an in-house relay or a development server).
* Guessing wrong about TLS: `email-security` / `imap-security` accept a short list of values and anything
  else is an error naming them; without it, the port decides (465/993 implicit TLS, otherwise STARTTLS).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection

from apps.basic.ssrf import SSRFError, check_url
from apps.bots.config_csv import config_is_secret_reference, config_lookup
from apps.bots.models import Bot
from apps.bots.selectors import bot_config_values
from apps.core.secrets import SecretNotFound, bot_config_secret_value

logger = logging.getLogger(__name__)

# Keys, most specific first; upstream documents both the `email-*` and the `smtp-*` spellings (spec 2.4.4).
SMTP_HOST_KEYS = ("email-server", "smtp-server", "smtp-host")
SMTP_PORT_KEYS = ("email-port", "smtp-port")
SMTP_USER_KEYS = ("email-user", "smtp-user")
SMTP_PASSWORD_KEYS = ("email-pass", "email-password", "smtp-password", "smtp-pass")
SMTP_SECURITY_KEYS = ("email-security", "smtp-security")
FROM_KEYS = ("email-from", "smtp-from-address")
FROM_NAME_KEYS = ("email-from-name", "smtp-from-name")
IMAP_HOST_KEYS = ("imap-server", "imap-host")
IMAP_PORT_KEYS = ("imap-port",)
IMAP_USER_KEYS = ("imap-user",)
IMAP_PASSWORD_KEYS = ("imap-pass", "imap-password")
IMAP_SECURITY_KEYS = ("imap-security",)
IMAP_FOLDER_KEYS = ("imap-folder",)

# TLS modes. `none` is a placeholder in config.csv (it reads as "not set"), hence `plain` / `off`.
SSL, STARTTLS, PLAIN = "ssl", "starttls", "plain"
SECURITY_VALUES = {
    "ssl": SSL, "tls": SSL, "implicit": SSL, "ssl/tls": SSL,
    "starttls": STARTTLS,
    "plain": PLAIN, "off": PLAIN, "false": PLAIN, "insecure": PLAIN,
}
# Ports whose protocol starts with TLS (SMTPS, IMAPS); any other port starts in clear and uses STARTTLS.
IMPLICIT_TLS_PORTS = frozenset({465, 993})
SMTP_DEFAULT_PORT = 587  # submission (spec 2.4.4)
IMAP_DEFAULT_PORT = 993
IMAP_DEFAULT_FOLDER = "INBOX"
# RFC 5321: an address is at most 254 characters in practice (path limit 256 with the brackets).
ADDRESS_MAX_CHARS = 254
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\]")
_ADDRESS_RE = re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


class MailConfigError(ValueError):
    """The bot's mail settings are missing or wrong; the message says which key and how to fix it.
    Permanent: retrying does not help until the configuration changes."""


@dataclass(frozen=True)
class SmtpAccount:
    host: str
    port: int
    security: str
    user: str
    password: str = field(repr=False)
    sender: str
    sender_name: str
    platform: bool  # the platform's SMTP_* account, not one the bot configured
    reply_to: str = ""  # the bot's own address when the platform's relay sends as MAIL_DEFAULT_FROM


@dataclass(frozen=True)
class ImapAccount:
    host: str
    port: int
    security: str
    user: str
    password: str = field(repr=False)
    folder: str

    @property
    def mailbox(self) -> str:
        """What a stored mailbox position belongs to."""
        return f"{self.host}:{self.port}/{self.user}/{self.folder}"[:600]


def address_valid(address: str) -> bool:
    return len(address) <= ADDRESS_MAX_CHARS and bool(_ADDRESS_RE.fullmatch(address))


def _first(values: dict[str, str], keys: tuple[str, ...]) -> tuple[str, str] | None:
    for key in keys:
        value = config_lookup(values, key)
        if value is not None and value.strip():
            return key, value.strip()
    return None


def _value(values: dict[str, str], keys: tuple[str, ...], default: str = "") -> str:
    found = _first(values, keys)
    return found[1] if found else default


def _port(values: dict[str, str], keys: tuple[str, ...], default: int) -> int:
    found = _first(values, keys)
    if found is None:
        return default
    key, text = found
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise MailConfigError(f"config.csv {key}: {text!r} is not a port number (1-65535)")
    return int(text)


def _security(values: dict[str, str], keys: tuple[str, ...], port: int) -> str:
    found = _first(values, keys)
    if found is None:
        return SSL if port in IMPLICIT_TLS_PORTS else STARTTLS
    key, text = found
    mode = SECURITY_VALUES.get(text.lower())
    if mode is None:
        raise MailConfigError(f"config.csv {key}: {text!r} is not one of {', '.join(sorted(SECURITY_VALUES))}")
    return mode


def _host(values: dict[str, str], keys: tuple[str, ...], port: int) -> str | None:
    found = _first(values, keys)
    if found is None:
        return None
    key, host = found
    if not _HOST_RE.fullmatch(host):
        raise MailConfigError(f"config.csv {key}: {host!r} is not a host name")
    if not getattr(settings, "MAIL_ALLOW_PRIVATE_HOSTS", False):
        try:
            # The HTTP keywords' guard, given the host as a URL: public addresses only, every one checked.
            check_url(f"https://{host}:{port}/")
        except SSRFError as exc:
            raise MailConfigError(f"config.csv {key}: {exc} (mail servers must be public hosts)") from None
    return host


def _password(bot: Bot, values: dict[str, str], keys: tuple[str, ...]) -> str:
    found = _first(values, keys)
    if found is None:
        return ""
    key, value = found
    if not config_is_secret_reference(value):
        logger.warning("mail: bot %s keeps %s in config.csv in clear; use a vault: reference", bot.name, key)
        return value
    try:
        # Its tenant's secrets (the current schema) and below, except the tenant admins' own.
        return bot_config_secret_value(value, tenant=connection.schema_name, bot=bot.name, with_bot_path=False)
    except SecretNotFound as exc:
        raise MailConfigError(f"config.csv {key}: {exc}") from None
    except ValueError as exc:  # malformed or outside the tenant's scope
        raise MailConfigError(f"config.csv {key}: {exc}") from None
    # SecretUnavailable (Vault down) propagates: a temporary failure, worth a retry.


def smtp_account(bot: Bot, values: dict[str, str] | None = None, *, with_password: bool = True) -> SmtpAccount:
    """The account `bot` sends with: its own `email-*` settings, else the platform's SMTP_*.

    `with_password=False` checks everything but leaves the password empty (no Vault call): for telling a
    script at once that its bot cannot send mail."""
    values = bot_config_values(bot) if values is None else values
    sender = _value(values, FROM_KEYS) or getattr(settings, "MAIL_DEFAULT_FROM", "")
    sender_name = _value(values, FROM_NAME_KEYS, bot.display_name or "")
    if not sender:
        raise MailConfigError("no sender address: set email-from in config.csv (or MAIL_DEFAULT_FROM)")
    if not address_valid(sender):
        raise MailConfigError(f"config.csv email-from: {sender!r} is not an e-mail address")
    port = _port(values, SMTP_PORT_KEYS, SMTP_DEFAULT_PORT)
    host = _host(values, SMTP_HOST_KEYS, port)
    if host is not None:
        return SmtpAccount(
            host=host, port=port, security=_security(values, SMTP_SECURITY_KEYS, port),
            user=_value(values, SMTP_USER_KEYS),
            password=_password(bot, values, SMTP_PASSWORD_KEYS) if with_password else "",
            sender=sender, sender_name=sender_name, platform=False,
        )
    if not settings.SMTP_HOST:
        raise MailConfigError("no SMTP server: set email-server in config.csv (or SMTP_HOST for the platform)")
    port = int(settings.SMTP_PORT)
    security = (SSL if port in IMPLICIT_TLS_PORTS else STARTTLS) if settings.SMTP_USE_TLS else PLAIN
    sender, reply_to = _platform_sender(sender)
    return SmtpAccount(host=settings.SMTP_HOST, port=port, security=security, user=settings.SMTP_USER,
                       password=settings.SMTP_PASSWORD, sender=sender, sender_name=sender_name, platform=True,
                       reply_to=reply_to)


def _platform_sender(wanted: str) -> tuple[str, str]:
    """(From, Reply-To) through the platform's relay: the bot's address only in a domain the platform sends
    for (MAIL_PLATFORM_SENDER_DOMAINS); otherwise MAIL_DEFAULT_FROM, with the bot's address to reply to. A
    tenant could otherwise send as anyone (another tenant, the platform's own admin) through the relay."""
    domain = wanted.rpartition("@")[2].lower()
    allowed = getattr(settings, "MAIL_PLATFORM_SENDER_DOMAINS", [])
    if domain in allowed:
        return wanted, ""
    default = getattr(settings, "MAIL_DEFAULT_FROM", "")
    if not default:
        raise MailConfigError(f"the platform's SMTP server does not send as {wanted!r}: set MAIL_DEFAULT_FROM "
                              "(the bot's address then becomes Reply-To), list its domain in "
                              "MAIL_PLATFORM_SENDER_DOMAINS, or give the bot its own email-server")
    return default, ("" if wanted.lower() == default.lower() else wanted)


def imap_configured(bot: Bot, values: dict[str, str] | None = None) -> bool:
    """True when the bot names an IMAP server (nothing is resolved or checked)."""
    values = bot_config_values(bot) if values is None else values
    return _first(values, IMAP_HOST_KEYS) is not None


def imap_account(bot: Bot, values: dict[str, str] | None = None) -> ImapAccount | None:
    """The mailbox `bot` answers, or None when it has no `imap-server`. User and password default to
    the SMTP ones (`email-user`, `email-pass`): most providers use one account for both."""
    values = bot_config_values(bot) if values is None else values
    if not imap_configured(bot, values):
        return None
    port = _port(values, IMAP_PORT_KEYS, IMAP_DEFAULT_PORT)
    security = _security(values, IMAP_SECURITY_KEYS, port)
    if _first(values, IMAP_PORT_KEYS) is None and security != SSL:
        port = 143  # IMAP's clear-text port, for STARTTLS or plain
    host = _host(values, IMAP_HOST_KEYS, port)
    assert host is not None
    user = _value(values, IMAP_USER_KEYS) or _value(values, SMTP_USER_KEYS)
    if not user:
        raise MailConfigError("config.csv imap-user (or email-user) is required with imap-server")
    password_keys = IMAP_PASSWORD_KEYS if _first(values, IMAP_PASSWORD_KEYS) else SMTP_PASSWORD_KEYS
    password = _password(bot, values, password_keys)
    folder = _value(values, IMAP_FOLDER_KEYS, IMAP_DEFAULT_FOLDER)
    return ImapAccount(host=host, port=port, security=security, user=user, password=password, folder=folder)
