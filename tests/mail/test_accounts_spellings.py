"""config.csv spellings of the mail keys that the spec lists (2.4.4), each read by the mail accounts."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotConfig
from apps.mail.accounts import imap_account, smtp_account

pytestmark = pytest.mark.django_db


def _bot(name: str, config: dict[str, str]) -> Bot:
    bot = Bot.objects.create(name=name)
    for line, (key, value) in enumerate(config.items(), start=2):
        BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
    return bot


@pytest.mark.parametrize("user_key", ["smtp-username", "SMTP Username", "smtp-user"])
def test_the_smtp_spellings_of_the_spec_give_the_login_of_both_accounts(canary_tenants, user_key):
    """Spec 2.4.4 lists `smtp-user`/`smtp-username`: a bot using the second must send with AUTH, not without.
    (config_lookup maps `smtp-username` to `smtp-user` through apps.bots.config_csv.KEY_ALIASES.)"""
    with schema_context(canary_tenants.a.schema_name):
        bot = _bot("shop", {"smtp-from-address": "shop@example.test", "smtp-from-name": "The Shop",
                            "smtp-host": "smtp.example.test", "smtp-port": "465", "smtp-security": "ssl",
                            user_key: "shop-login", "smtp-password": "pw", "imap-server": "imap.example.test",
                            "imap-port": "993"})
        account = smtp_account(bot)
        mailbox = imap_account(bot)
    assert (account.host, account.port, account.user, account.password) == ("smtp.example.test", 465, "shop-login",
                                                                            "pw")
    assert (account.sender, account.sender_name) == ("shop@example.test", "The Shop")
    assert (mailbox.host, mailbox.port, mailbox.user, mailbox.password) == ("imap.example.test", 993, "shop-login",
                                                                            "pw")
