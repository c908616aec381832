"""config.csv values are encrypted at rest (credentials live there when they are not vault: references)."""

import pytest
from django.db import connection
from django_tenants.utils import schema_context

from apps.bots.models import Bot
from apps.bots.selectors import bot_config_values
from apps.bots.services import config_sync

pytestmark = pytest.mark.django_db


def test_config_values_are_sealed_in_the_database_and_read_back_in_plaintext(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="sealedcfg")
        config_sync(bot=bot, data=b"name,value\nllm-key,sk-live-123456789\nemail-pass,hunter2\n")
        with connection.cursor() as cursor:
            cursor.execute("SELECT value FROM bots_botconfig WHERE bot_id = %s", [bot.pk])
            raw = " ".join(row[0] for row in cursor.fetchall())
        assert "sk-live" not in raw and "hunter2" not in raw
        assert bot_config_values(bot) == {"llm-key": "sk-live-123456789", "email-pass": "hunter2"}
