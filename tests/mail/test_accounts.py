"""Which SMTP/IMAP account a bot uses: its config.csv, Vault in its tenant's scope, platform defaults."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotConfig
from apps.mail.accounts import PLAIN, SSL, STARTTLS, MailConfigError, imap_account, smtp_account

pytestmark = pytest.mark.django_db


def _bot(name: str, config: dict[str, str]) -> Bot:
    bot = Bot.objects.create(name=name)
    for line, (key, value) in enumerate(config.items(), start=2):
        BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
    return bot


def test_bot_settings_in_either_spelling(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = _bot("shop", {"email-from": "shop@example.test", "Email Server": "smtp.example.test",
                            "email-port": "465", "email-user": "shop", "email-pass": "pw"})
        account = smtp_account(bot)
    assert (account.host, account.port, account.security, account.user, account.password) == (
        "smtp.example.test", 465, SSL, "shop", "pw")
    assert account.sender == "shop@example.test" and not account.platform
    assert "pw" not in repr(account)


def test_platform_account_is_used_whole_and_never_lends_its_password(canary_tenants, settings):
    settings.SMTP_HOST, settings.SMTP_PORT, settings.SMTP_USER = "relay.example.test", 587, "platform"
    settings.SMTP_PASSWORD, settings.SMTP_USE_TLS = "platform-secret", True
    settings.MAIL_DEFAULT_FROM = "bots@example.test"
    with schema_context(canary_tenants.a.schema_name):
        plain = _bot("plain", {})
        own = _bot("own", {"email-server": "mx.attacker.test", "email-port": "2525"})
        platform, chosen = smtp_account(plain), smtp_account(own)
    assert (platform.host, platform.security, platform.password, platform.sender) == (
        "relay.example.test", STARTTLS, "platform-secret", "bots@example.test")
    assert chosen.host == "mx.attacker.test" and chosen.user == "" and chosen.password == ""


def test_through_the_platform_relay_a_bot_sends_as_the_platform_unless_its_domain_is_allowed(canary_tenants,
                                                                                           settings):
    """A tenant set email-from to any address (another tenant's, the platform admin's) and the platform's
    authenticated relay sent as it."""
    settings.SMTP_HOST, settings.SMTP_PORT, settings.SMTP_USER = "relay.example.test", 587, "platform"
    settings.MAIL_DEFAULT_FROM, settings.MAIL_PLATFORM_SENDER_DOMAINS = "bots@example.test", ["shops.example.test"]
    with schema_context(canary_tenants.a.schema_name):
        spoof = smtp_account(_bot("spoof", {"email-from": "billing@othertenant.test"}))
        allowed = smtp_account(_bot("allowed", {"email-from": "lisbon@Shops.Example.test"}))
        settings.MAIL_DEFAULT_FROM = ""
        with pytest.raises(MailConfigError, match="MAIL_DEFAULT_FROM"):
            smtp_account(_bot("nowhere", {"email-from": "billing@othertenant.test"}))
    assert (spoof.sender, spoof.reply_to) == ("bots@example.test", "billing@othertenant.test")
    assert (allowed.sender, allowed.reply_to) == ("lisbon@Shops.Example.test", "")


def test_missing_or_wrong_settings_name_the_key(canary_tenants, settings):
    settings.MAIL_DEFAULT_FROM = ""
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(MailConfigError, match="email-from"):
            smtp_account(_bot("nofrom", {"email-server": "smtp.example.test"}))
        with pytest.raises(MailConfigError, match="SMTP server"):
            smtp_account(_bot("noserver", {"email-from": "a@example.test"}))
        with pytest.raises(MailConfigError, match="email-port"):
            smtp_account(_bot("badport", {"email-from": "a@example.test", "email-server": "s.test",
                                          "email-port": "99999"}))
        with pytest.raises(MailConfigError, match="email-security.*starttls"):
            smtp_account(_bot("badtls", {"email-from": "a@example.test", "email-server": "s.test",
                                         "email-security": "maybe"}))
        account = smtp_account(_bot("plaintls", {"email-from": "a@example.test", "email-server": "s.test",
                                                 "email-port": "25", "email-security": "plain"}))
        assert account.security == PLAIN


def test_a_bot_cannot_point_the_workers_at_private_addresses(canary_tenants, settings):
    settings.MAIL_ALLOW_PRIVATE_HOSTS = False
    with schema_context(canary_tenants.a.schema_name):
        for host in ("127.0.0.1", "localhost", "10.1.2.3", "169.254.169.254"):
            bot = _bot(f"ssrf-{host.replace('.', '-')}", {"email-from": "a@example.test", "email-server": host})
            with pytest.raises(MailConfigError, match="public"):
                smtp_account(bot)
        imap_bot = _bot("ssrf-imap", {"imap-server": "127.0.0.1", "imap-user": "u"})
        with pytest.raises(MailConfigError, match="imap-server"):
            imap_account(imap_bot)


def test_imap_defaults_to_the_smtp_login_and_inbox(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        assert imap_account(_bot("noimap", {"email-user": "u"})) is None
        account = imap_account(_bot("imap", {"imap-server": "imap.example.test", "email-user": "u",
                                             "email-pass": "p"}))
        starttls = imap_account(_bot("imap2", {"imap-server": "imap.example.test", "imap-user": "v",
                                               "imap-pass": "q", "imap-security": "starttls",
                                               "imap-folder": "Bots"}))
    assert (account.port, account.security, account.user, account.password, account.folder) == (
        993, SSL, "u", "p", "INBOX")
    assert (starttls.port, starttls.security, starttls.user, starttls.password, starttls.folder) == (
        143, STARTTLS, "v", "q", "Bots")


def test_vault_password_is_resolved_only_inside_the_bots_tenant(canary_tenants, vault):
    a, b = canary_tenants.a.schema_name, canary_tenants.b.schema_name
    vault.put_secret(f"gbo/tenants/{a}/mail", {"password": canary_tenants.a.canary})
    vault.put_secret(f"gbo/tenants/{b}/mail", {"password": canary_tenants.b.canary})
    base = {"email-from": "a@example.test", "email-server": "smtp.example.test"}
    with schema_context(a):
        own = _bot("vaulted", {**base, "email-pass": f"vault:gbo/tenants/{a}/mail#password"})
        other = _bot("thief", {**base, "email-pass": f"vault:gbo/tenants/{b}/mail#password"})
        platform = _bot("platform-thief", {**base, "email-pass": "vault:gbo/llm#api_key"})
        vault.put_secret(f"gbo/tenants/{a}/admin/oidc", {"client_secret": "oidc-secret"})
        admins = _bot("admin-thief", {**base, "email-pass": f"vault:gbo/tenants/{a}/admin/oidc#client_secret"})
        assert smtp_account(own).password == canary_tenants.a.canary
        with pytest.raises(MailConfigError, match="outside this bot's secrets"):
            smtp_account(other)
        with pytest.raises(MailConfigError, match="outside this bot's secrets"):
            smtp_account(platform)
        with pytest.raises(MailConfigError, match="the tenant admins' own secrets"):
            smtp_account(admins)
        missing = _bot("vault-missing", {**base, "email-pass": f"vault:gbo/tenants/{a}/mail#nope"})
        with pytest.raises(MailConfigError, match="email-pass"):
            smtp_account(missing)
    assert vault.count(vault.kv_path(f"gbo/tenants/{b}/mail")) == 0
    assert vault.count(vault.kv_path(f"gbo/tenants/{a}/admin/oidc")) == 0  # never even read
    # The same reference text in tenant B resolves B's own secret, never A's.
    with schema_context(b):
        mirror = _bot("vaulted", {**base, "email-pass": f"vault:gbo/tenants/{b}/mail#password"})
        assert smtp_account(mirror).password == canary_tenants.b.canary


def test_an_oidc_client_secret_kept_where_it_was_before_the_admin_path_is_no_bots_either(canary_tenants, vault):
    """The admin path guards secrets saved since it exists; an OIDC client secret saved before it still sits
    elsewhere in the tenant's path, where an editor's llm-key or email-pass could name it."""
    from apps.accounts.models import OidcConfig
    from apps.llm.config import llm_settings_for

    a = canary_tenants.a.schema_name
    vault.put_secret(f"gbo/tenants/{a}/oidc", {"client_secret": "oidc-secret", "note": "not the admins'"})
    base = {"email-from": "a@example.test", "email-server": "smtp.example.test"}
    with schema_context(a):
        OidcConfig.objects.create(issuer="https://id.example.test", client_id="c",  # as saved before: no clean()
                                  client_secret=f"vault:gbo/tenants/{a}/oidc#client_secret")
        thief = _bot("oidc-thief", {**base, "email-pass": f"vault:gbo/tenants/{a}/oidc#client_secret"})
        with pytest.raises(MailConfigError, match="the tenant admins' own secrets"):
            smtp_account(thief)
        other_key = _bot("oidc-neighbour", {**base, "email-pass": f"vault:gbo/tenants/{a}/oidc#note"})
        assert smtp_account(other_key).password == "not the admins'"
        settings = llm_settings_for(Bot.objects.get(name="oidc-thief"), {
            "llm-url": "https://llm.example.test/v1", "llm-model": "m",
            "llm-key": f"vault:gbo/tenants/{a}/oidc#client_secret"}, tenant=a)
        assert settings.providers == () and any("admins' own" in p for p in settings.problems)
