"""Read-side queries for bots, always in the current tenant's schema."""

from apps.bots.models import Bot


def bot_list() -> list[dict]:
    return [
        {"name": bot.name, "display_name": bot.display_name or bot.name}
        for bot in Bot.objects.order_by("name")
    ]


def bot_config_values(bot) -> dict[str, str]:
    """The bot's config.csv as stored (key -> value); look keys up with config_csv.config_lookup."""
    from apps.bots.models import BotConfig

    return dict(BotConfig.objects.filter(bot=bot).values_list("key", "value"))
