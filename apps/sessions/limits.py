"""Message rate limits of the chat (WebSocket and REST), from the bot's `rate-limit-*` keys.

Three buckets per message, counted in one Redis round trip (all or none): the session's (one client
flooding), the client IP's in this tenant (one host opening many sessions) and the client IP's platform-wide
one (one host spreading over many tenants: apps.core.ratelimit.platform_ip_bucket). The tenant's IP bucket
allows CHAT_RATE_IP_FACTOR times the session's rate: several people behind one NAT share an address. A bot
whose config switches its limits off (`rate-limit-enabled,false`) still counts in the platform-wide bucket,
and its sessions in the platform's own session bucket (CHAT_SESSION_MESSAGES_PER_MINUTE_MAX), which is also
counted when the bot's session limit is looser than it: a config.csv cannot let one session send without end.
"""

from __future__ import annotations

import logging

from django.conf import settings

from apps.bots.models import Bot
from apps.bots.selectors import bot_config_values
from apps.core.ratelimit import (
    Bucket,
    RateLimit,
    RateLimitUnavailable,
    address_bucket,
    platform_ip_bucket,
    rate_check_buckets,
    rate_limits_for,
)

logger = logging.getLogger(__name__)

CHAT_RATE_IP_FACTOR = int(getattr(settings, "CHAT_RATE_IP_FACTOR", 10))
# Messages one session may send per minute whatever its bot's config.csv says (`rate-limit-enabled,false`, a huge
# `rate-limit-api-chat`): each message is a turn (a chat thread, database writes, maybe minutes of a model) and
# a person writes far less than one a second. 0 switches it off (settings.CHAT_SESSION_MESSAGES_PER_MINUTE_MAX),
# and so does RATE_LIMIT_ENABLED false, as for every limit.
CHAT_SESSION_MESSAGES_PER_MINUTE_MAX = 60
# ...and back to back after a quiet spell (the platform's default burst: a pasted list, quick suggestion clicks).
CHAT_SESSION_MESSAGES_BURST_MAX = 20
CHAT_SESSION_WINDOW_S = 60  # the "per minute" of the ceiling


def chat_rate_limit(bot: Bot) -> RateLimit:
    """The bot's message limit (its config.csv over the platform defaults)."""
    return rate_limits_for(bot_config_values(bot), "chat")


def _session_ceiling(session_id: str, limit: RateLimit) -> Bucket | None:
    """The platform's bucket of the session when the bot's own session limit is off or looser than it (a
    stricter one alone is enough: it refuses first), else None."""
    per_minute = int(getattr(settings, "CHAT_SESSION_MESSAGES_PER_MINUTE_MAX", CHAT_SESSION_MESSAGES_PER_MINUTE_MAX))
    if per_minute <= 0 or not getattr(settings, "RATE_LIMIT_ENABLED", True):
        return None
    burst = CHAT_SESSION_MESSAGES_BURST_MAX
    stricter = (limit.limit * CHAT_SESSION_WINDOW_S <= per_minute * limit.window_s  # its rate, and its burst
                and limit.limit + limit.burst <= per_minute + burst)
    if limit.enabled and stricter:
        return None
    return Bucket("chat.session.max", str(session_id), limit=per_minute, window_s=CHAT_SESSION_WINDOW_S, burst=burst)


def message_rate_checked(*, ip: str, limit: RateLimit) -> bool:
    """Whether a message under `limit` is counted anywhere (a socket skips the round trip when not): the bot's
    own limits, the platform's per-session ceiling, or the address's platform-wide bucket."""
    return limit.enabled or _session_ceiling("", limit) is not None or platform_ip_bucket(ip) is not None


def message_rate_check(*, session_id: str, ip: str, limit: RateLimit) -> float | None:
    """None when the message may go on, else the seconds to wait. `limit` is chat_rate_limit's (a socket
    keeps the one it read when it connected: the check is then Redis only, one round trip). Raises
    RateLimitUnavailable when the store is down and the bot's own limits apply (RATE_LIMIT_FAIL_OPEN off)."""
    buckets = []
    if limit.enabled:
        buckets.append(Bucket("chat.session", str(session_id), limit=limit.limit, window_s=limit.window_s,
                              burst=limit.burst))
        if ip:
            # IPv6 per /64, as every address limit counts (a client holds a whole /64 to rotate through).
            buckets.append(Bucket("chat.ip", address_bucket(ip), limit=limit.limit * CHAT_RATE_IP_FACTOR,
                                  window_s=limit.window_s,
                                  burst=limit.burst * CHAT_RATE_IP_FACTOR))
    own_limits = bool(buckets)
    ceiling = _session_ceiling(session_id, limit)
    if ceiling is not None:
        buckets.append(ceiling)
    try:
        refusal = rate_check_buckets(buckets, client_ip=ip)
    except RateLimitUnavailable:
        # A bot whose limits are off is not refused for the platform's backstops alone (the session ceiling, the
        # platform-wide address bucket): they are there against abuse, not to stop the chat with the store.
        if not own_limits or getattr(settings, "RATE_LIMIT_FAIL_OPEN", False):
            return None
        # Raised, not a wait: the sender must hear "busy, send it again", not "too many messages" (503, not 429).
        logger.warning("chat: rate-limit store down, refusing the message (RATE_LIMIT_FAIL_OPEN is off)")
        raise
    if refusal is None:
        return None
    if refusal.platform:
        logger.warning("chat: message refused by the platform-wide per-IP limit, retry in %.1f s", refusal.wait_s)
    elif refusal.bucket is ceiling:
        logger.warning("chat: message refused by the platform's per-session limit (%d a minute), retry in %.1f s",
                       ceiling.limit, refusal.wait_s)
    return refusal.wait_s


def connect_rate_check(ip: str, *, per_minute: int, scope: str = "chat.connect") -> float | None:
    """None when a chat socket from `ip` may open, else the seconds to wait: `per_minute` connects per
    address in this tenant, and the address's platform-wide bucket, in one round trip. Redis down lets the
    socket open (its messages are still checked, and refused while the store is down)."""
    if not ip:
        return None
    try:
        refusal = rate_check_buckets([Bucket(scope, address_bucket(ip), limit=per_minute, window_s=60)],
                                     client_ip=ip)
    except RateLimitUnavailable:
        return None
    return None if refusal is None else refusal.wait_s
