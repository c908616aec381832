"""Message rate limits of the chat (WebSocket and REST), from the bot's `rate-limit-*` keys.

Two buckets per message: the session's (one client flooding) and the client IP's (one host opening many
sessions). The IP allows CHAT_RATE_IP_FACTOR times the session's rate: several people behind one NAT
share an address.
"""

from __future__ import annotations

import logging

from django.conf import settings

from apps.bots.models import Bot
from apps.bots.selectors import bot_config_values
from apps.core.ratelimit import RateLimit, RateLimitUnavailable, rate_check, rate_limits_for

logger = logging.getLogger(__name__)

CHAT_RATE_IP_FACTOR = int(getattr(settings, "CHAT_RATE_IP_FACTOR", 10))


def chat_rate_limit(bot: Bot) -> RateLimit:
    """The bot's message limit (its config.csv over the platform defaults)."""
    return rate_limits_for(bot_config_values(bot), "chat")


def message_rate_check(*, session_id: str, ip: str, limit: RateLimit) -> float | None:
    """None when the message may go on, else the seconds to wait. `limit` is chat_rate_limit's (a socket
    keeps the one it read when it connected: the check is then Redis only)."""
    if not limit.enabled:
        return None
    try:
        wait = rate_check("chat.session", str(session_id), limit=limit.limit, window_s=limit.window_s,
                          burst=limit.burst)
        if wait is None and ip:
            wait = rate_check("chat.ip", ip, limit=limit.limit * CHAT_RATE_IP_FACTOR, window_s=limit.window_s,
                              burst=limit.burst * CHAT_RATE_IP_FACTOR)
    except RateLimitUnavailable:
        if getattr(settings, "RATE_LIMIT_FAIL_OPEN", False):
            return None
        logger.warning("chat: rate-limit store down, refusing the message (RATE_LIMIT_FAIL_OPEN is off)")
        return 5.0
    return wait
