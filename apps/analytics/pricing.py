"""What a model's tokens cost: the price table behind "cost per bot".

Where prices come from, first match wins:
1. the bot's config.csv keys `llm-price-prompt` and `llm-price-completion` (USD per million tokens; they
   apply to every model the bot used: a bot usually has one model and the operator knows its price);
2. settings.ANALYTICS_MODEL_PRICES: {"model name or prefix": [prompt, completion]} in USD per million
   tokens, the longest matching prefix winning ("gpt-4o-mini" before "gpt-4o");
3. nothing: the tokens are shown as "unpriced", never as free.

No price is built in: providers change them, and a wrong built-in number is worse than an honest gap.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings

from apps.bots.config_csv import config_lookup
from apps.bots.models import Bot, BotConfig

PROMPT_PRICE_KEY = "llm-price-prompt"
COMPLETION_PRICE_KEY = "llm-price-completion"
# A price above this (USD per million tokens) is a typo (a per-token price entered per million...).
PRICE_MAX = 10_000.0


@dataclass(frozen=True)
class ModelPrice:
    prompt: float
    completion: float
    source: str


class PriceInvalid(ValueError):
    pass


def price_parse(value: object, *, where: str) -> float:
    try:
        price = float(str(value).strip())
    except ValueError as exc:
        raise PriceInvalid(f"{where}: {value!r} is not a number (USD per million tokens)") from exc
    if not 0 <= price <= PRICE_MAX:
        raise PriceInvalid(f"{where}: {price} must be between 0 and {PRICE_MAX:g} USD per million tokens")
    return price


def settings_price_for(model: str) -> ModelPrice | None:
    table = getattr(settings, "ANALYTICS_MODEL_PRICES", {}) or {}
    best = ""
    for prefix in table:
        if model.startswith(prefix) and len(prefix) > len(best):
            best = prefix
    if not best:
        return None
    prompt, completion = table[best]
    return ModelPrice(price_parse(prompt, where=f"ANALYTICS_MODEL_PRICES[{best!r}]"),
                      price_parse(completion, where=f"ANALYTICS_MODEL_PRICES[{best!r}]"), "settings")


def bot_price(values: dict[str, str]) -> ModelPrice | None:
    """The price the bot's config.csv sets, or None; a malformed value counts as unset (the page says so)."""
    prompt = config_lookup(values, PROMPT_PRICE_KEY)
    completion = config_lookup(values, COMPLETION_PRICE_KEY)
    if prompt is None and completion is None:
        return None
    try:
        return ModelPrice(price_parse(prompt or 0, where=PROMPT_PRICE_KEY),
                          price_parse(completion or 0, where=COMPLETION_PRICE_KEY), "config.csv")
    except PriceInvalid:
        return None


def model_prices_for_bots(bots: Iterable[Bot]) -> _Prices:
    """A lookup (bot name, model) -> ModelPrice | None for these bots (one query for their config keys)."""
    bots = list(bots)
    values: dict[int, dict[str, str]] = {bot.pk: {} for bot in bots}
    rows = BotConfig.objects.filter(bot__in=bots, key__iregex=r"^llm[-_ ]price[-_ ]").values_list("bot_id", "key",
                                                                                                   "value")
    for bot_id, key, value in rows:
        values[bot_id][key] = value
    return _Prices({bot.name: bot_price(values[bot.pk]) for bot in bots})


class _Prices:
    def __init__(self, by_bot: dict[str, ModelPrice | None]) -> None:
        self.by_bot = by_bot

    def get(self, key: tuple[str, str]) -> ModelPrice | None:
        bot, model = key
        return self.by_bot.get(bot) or (settings_price_for(model) if model else None)
