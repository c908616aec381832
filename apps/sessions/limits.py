"""Message rate limits of the chat (WebSocket and REST), from the bot's `rate-limit-*` keys.

Two buckets per message: the session's (one client flooding) and the client IP's (one host opening many
sessions). The IP allows CHAT_RATE_IP_FACTOR times the session's rate: several people behind one NAT
share an address.
"""

from __future__ import annotations

import logging

from django.conf import settings

from apps.bots.selectors import bot_config_values
from apps.core.ratelimit import RateLimit, RateLimitUnavailable, rate_check, rate_limits_for
from apps.sessions.services import bot_by_name

logger = logging.getLogger(__name__)

CHAT_RATE_IP_FACTOR = int(getattr(settings, "CHAT_RATE_IP_FACTOR", 10))


def chat_rate_limit(bot_name: str) -> RateLimit:
    """The bot's message limit (its config.csv over the platform defaults)."""
    return rate_limits_for(bot_config_values(bot_by_name(bot_name)), "chat")


def message_rate_check(*, session_id: str, ip: str, bot_name: str = "", limit: RateLimit | None = None
                       ) -> float | None:
    """None when the message may go on, else the seconds to wait. A caller that read the bot's `limit`
    already (a socket, when it connected) passes it: the check is then Redis only."""
    if limit is None:
        limit = chat_rate_limit(bot_name)
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
