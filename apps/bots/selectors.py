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
_config_cache: OrderedDict[tuple[str, int, int], dict[str, str]] = OrderedDict()
_config_lock = threading.Lock()


def bot_config_values(bot) -> dict[str, str]:
    """The bot's config.csv as stored (key -> value); look keys up with config_csv.config_lookup.

    Cached per (tenant schema, bot, config_revision): a change bumps the revision (apps.bots.services) and
    drops this process's copy (signals in apps.bots.apps), so another process sees it on its next read of
    the bot row."""
    from apps.bots.models import BotConfig

    key = (connection.schema_name, bot.pk, getattr(bot, "config_revision", 0))
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
