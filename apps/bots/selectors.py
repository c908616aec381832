"""Read-side queries for bots, always in the current tenant's schema."""

from apps.bots.models import Bot


def bot_list() -> list[dict]:
    return [
        {"name": bot.name, "display_name": bot.display_name or bot.name}
        for bot in Bot.objects.order_by("name")
    ]
