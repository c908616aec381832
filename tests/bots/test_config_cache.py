"""The per-process copy of a bot's decrypted config.csv (apps.bots.selectors.bot_config_values): read once per
config revision, stale after any ORM write to the rows (this process drops it, others see a new revision),
and never shared between tenants whose bots share a primary key."""

from __future__ import annotations

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from apps.bots import selectors
from apps.bots.models import Bot, BotConfig
from apps.bots.selectors import bot_config_values
from apps.bots.services import config_sync

pytestmark = pytest.mark.django_db


def _fresh(bot: Bot) -> Bot:
    """The bot as another turn reads it (its current revision)."""
    return Bot.objects.get(pk=bot.pk)


def test_the_config_is_read_once_per_revision(canary_tenants, django_assert_num_queries):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="cache-once")
        config_sync(bot=bot, data=b"name,value\nllm-model,small\n")
        bot = _fresh(bot)
        assert bot_config_values(bot) == {"llm-model": "small"}
        with django_assert_num_queries(0):
            values = bot_config_values(bot)
        values["llm-model"] = "changed by a caller"  # callers get a copy
        assert bot_config_values(bot) == {"llm-model": "small"}


@pytest.mark.parametrize("write", ["service", "update", "save", "create", "delete"])
def test_every_orm_write_to_the_rows_is_seen_by_the_next_read(canary_tenants, write):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name=f"cache-{write}")
        config_sync(bot=bot, data=b"name,value\nllm-model,small\nllm-cache,true\n")
        before = _fresh(bot)
        assert bot_config_values(before)["llm-model"] == "small"
        if write == "service":
            config_sync(bot=bot, data=b"name,value\nllm-model,large\nllm-cache,true\n")
        elif write == "update":
            BotConfig.objects.filter(bot=bot, key="llm-model").update(value="large")
        elif write == "save":
            row = BotConfig.objects.get(bot=bot, key="llm-model")
            row.value = "large"
            row.save()
        elif write == "create":
            BotConfig.objects.filter(bot=bot, key="llm-model").delete()
            BotConfig.objects.create(bot=bot, key="llm-model", value="large", line=9)
        else:
            BotConfig.objects.get(bot=bot, key="llm-model").delete()
        expected = None if write == "delete" else "large"
        assert bot_config_values(_fresh(bot)).get("llm-model") == expected
        assert bot_config_values(before).get("llm-model") == expected  # an instance read before the write too
        assert _fresh(bot).config_revision > before.config_revision


def test_another_process_sees_the_new_revision(canary_tenants):
    """A process that cached the old rows keeps them under the old revision only: the bot row it reads for its
    next turn carries the new revision, which it has never cached."""
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="cache-other-process")
        config_sync(bot=bot, data=b"name,value\nllm-model,small\n")
        old = _fresh(bot)
        stale = bot_config_values(old)
        BotConfig.objects.filter(bot=bot).update(value="large")
        # The other process still holds its copy (nothing told it): put it back as it would have it.
        selectors._config_cache[(connection.schema_name, old.pk, old.created_at, old.config_revision)] = stale
        assert bot_config_values(_fresh(bot)) == {"llm-model": "large"}


def test_tenants_whose_bots_share_a_primary_key_never_share_a_config(canary_tenants):
    a, b = canary_tenants.a, canary_tenants.b
    for tenant, model in ((a, "model-of-a"), (b, "model-of-b")):
        with schema_context(tenant.schema_name):
            bot = Bot.objects.get(pk=tenant.bot_pk)
            config_sync(bot=bot, data=f"name,value\nllm-model,{model}\n".encode())
    for tenant, model in ((a, "model-of-a"), (b, "model-of-b"), (a, "model-of-a")):
        with schema_context(tenant.schema_name):
            assert bot_config_values(Bot.objects.get(pk=tenant.bot_pk))["llm-model"] == model


def test_a_copy_of_a_deleted_tenant_under_the_same_schema_name_is_never_served(canary_tenants):
    """A tenant deleted and another created under the same name gets the same schema, bot ids and revisions: a
    process still holding the old tenant's copy must not hand its secrets to the new one."""
    import datetime as dt

    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="cache-reused")
        config_sync(bot=bot, data=b"name,value\nllm-key,key-of-the-new-customer\n")
        bot = _fresh(bot)
        earlier = bot.created_at - dt.timedelta(days=30)
        selectors._config_cache[(connection.schema_name, bot.pk, earlier, bot.config_revision)] = {
            "llm-key": "key-of-the-old-customer"}
        assert bot_config_values(bot) == {"llm-key": "key-of-the-new-customer"}
