"""Read-side queries for bots, always in the current tenant's schema."""

from django.db import connection

from apps.bots.models import Bot
from apps.core.memo import ProcessLRU, in_open_transaction


def bot_list() -> list[dict]:
    return [
        {"name": bot.name, "display_name": bot.display_name or bot.name}
        for bot in Bot.objects.order_by("name")
    ]


# Decrypted configurations kept per process (a few KiB each): every chat turn of an LLM bot needs its config,
# and reading plus decrypting the rows was a third of a cached answer's time. Bounded: least used go first.
CONFIG_CACHE_BOTS = 1024
_config_cache: ProcessLRU[tuple, dict[str, str]] = ProcessLRU(CONFIG_CACHE_BOTS)


def bot_config_values(bot) -> dict[str, str]:
    """The bot's config.csv as stored (key -> value); look keys up with config_csv.config_lookup.

    Cached per (tenant schema, bot, its creation time, config_revision): every ORM write to the rows bumps the
    revision and drops this process's copy (apps.bots.models.BotRevisionedRow), so another process sees it on
    its next read of the bot row. Writes that bypass the ORM (raw SQL, data migrations, loaddata, a restore
    of an older backup) must bump `Bot.config_revision` themselves or restart the web and worker processes."""
    from apps.bots.models import BotConfig

    # created_at: a schema name and bot ids come back when a tenant is deleted and another created under the
    # same name; a process still holding the old tenant's copy must never serve it to the new one.
    key = (connection.schema_name, bot.pk, getattr(bot, "created_at", None), getattr(bot, "config_revision", 0))
    cached = _config_cache.get(key)
    if cached is not None:
        return dict(cached)
    values = dict(BotConfig.objects.filter(bot=bot).values_list("key", "value"))
    if in_open_transaction():
        return values  # rows this transaction may still change or roll back are not shared
    _config_cache[key] = values
    return dict(values)


def bot_config_forget(schema: str, bot_id: int) -> None:
    """Drop this process's copies of a bot's config (its rows changed)."""
    _config_cache.forget(lambda key: key[0] == schema and key[1] == bot_id)
