"""Read-side queries for bots, always in the current tenant's schema."""

import threading
from collections import OrderedDict

from django.db import connection

from apps.bots.models import Bot


def bot_list() -> list[dict]:
    return [
        {"name": bot.name, "display_name": bot.display_name or bot.name}
        for bot in Bot.objects.order_by("name")
    ]


# Decrypted configurations kept per process (a few KiB each): every chat turn of an LLM bot needs its config,
# and reading plus decrypting the rows was a third of a cached answer's time. Bounded: least used go first.
CONFIG_CACHE_BOTS = 1024
_config_cache: OrderedDict[tuple, dict[str, str]] = OrderedDict()
_config_lock = threading.Lock()


def bot_config_values(bot) -> dict[str, str]:
    """The bot's config.csv as stored (key -> value); look keys up with config_csv.config_lookup.

    Cached per (tenant schema, bot, its creation time, config_revision): every ORM write to the rows bumps the
    revision and drops this process's copy (apps.bots.models.BotConfigQuerySet), so another process sees it on
    its next read of the bot row. Writes that bypass the ORM (raw SQL, data migrations, loaddata, a restore
    of an older backup) must bump `Bot.config_revision` themselves or restart the web and worker processes."""
    from apps.bots.models import BotConfig

    # created_at: a schema name and bot ids come back when a tenant is deleted and another created under the
    # same name; a process still holding the old tenant's copy must never serve it to the new one.
    key = (connection.schema_name, bot.pk, getattr(bot, "created_at", None), getattr(bot, "config_revision", 0))
    with _config_lock:
        cached = _config_cache.get(key)
        if cached is not None:
            _config_cache.move_to_end(key)
            return dict(cached)
    values = dict(BotConfig.objects.filter(bot=bot).values_list("key", "value"))
    if any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks):
        return values  # rows this transaction may still change or roll back are not shared
    with _config_lock:
        _config_cache[key] = values
        while len(_config_cache) > CONFIG_CACHE_BOTS:
            _config_cache.popitem(last=False)
    return dict(values)


def bot_config_forget(schema: str, bot_id: int) -> None:
    """Drop this process's copies of a bot's config (its rows changed)."""
    with _config_lock:
        for key in [k for k in _config_cache if k[0] == schema and k[1] == bot_id]:
            del _config_cache[key]
