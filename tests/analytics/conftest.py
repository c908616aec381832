"""A small hand-made conversation dataset (exact numbers known) in canary tenant A, with decoys in B.

Day 1 (2026-11-10), bot = tenant A's canary bot:
- session "web" (user alice): a question answered with a tool call, then the same question again answered
  from the cache with a strong KB citation;
- session "whatsapp" (user bob): a question answered offline, then again with only a weak citation (both
  unanswered);
Day 2 (2026-11-11), bot "helpdesk": a session with a system error message and two tool calls (one failed).
Tenant B gets messages on the same days whose counts would change every number if they leaked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot
from apps.sessions.models import ChatSession, ChatUser, Message, MessageType, Role

DAY1 = date(2026, 11, 10)
DAY2 = date(2026, 11, 11)
USER = (Role.USER, MessageType.USER)
BOT = (Role.ASSISTANT, MessageType.BOT_RESPONSE)
SYSTEM = (Role.SYSTEM, MessageType.SYSTEM)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def session_make(bot: Bot, user: ChatUser, *, channel: str, started: datetime, turns: list[dict],
                 title: str = "New Conversation") -> ChatSession:
    """A session whose messages are `turns` ({kind, content, meta, tokens, model, latency_ms}) one minute apart."""
    session = ChatSession.objects.create(bot=bot, user=user, channel=channel, title=title)
    moment = started
    for index, turn in enumerate(turns):
        role, message_type = turn["kind"]
        message = Message.objects.create(
            session=session, index=index, role=role, message_type=message_type, content=turn.get("content", ""),
            meta=turn.get("meta", {}), tokens=turn.get("tokens", 0), model=turn.get("model", ""),
            latency_ms=turn.get("latency_ms"))
        Message.objects.filter(pk=message.pk).update(created_at=moment)
        moment += timedelta(minutes=1)
    ChatSession.objects.filter(pk=session.pk).update(
        created_at=started, last_activity=moment - timedelta(minutes=1), message_count=len(turns),
        total_tokens=sum(t.get("tokens", 0) for t in turns))
    session.refresh_from_db()
    return session


TOOL_ANSWER = {
    "kind": BOT, "content": "The fax costs **42**.", "tokens": 120, "model": "m-large", "latency_ms": 900,
    "meta": {"citations": [], "cached": False, "provider": "fake", "prompt_tokens": 100, "completion_tokens": 20,
             "tool_calls": [{"name": "get-price", "arguments": {"product": "fax"}, "result": "42", "error": None}]},
}
CACHED_ANSWER = {
    "kind": BOT, "content": "Still 42 <script>alert(1)</script>", "tokens": 0, "model": "m-large", "latency_ms": 40,
    "meta": {"citations": [{"n": 1, "source": "prices.md", "kb": "products", "page": 2, "score": 0.033}],
             "cached": True, "provider": "fake", "prompt_tokens": 0, "completion_tokens": 0},
}
OFFLINE_ANSWER = {
    "kind": BOT, "content": "The language model is unavailable right now.",
    "meta": {"citations": [], "offline": True},
}
WEAK_ANSWER = {
    "kind": BOT, "content": "Maybe 9 to 5.", "tokens": 60, "model": "m-small", "latency_ms": 3000,
    "meta": {"citations": [{"n": 1, "source": "misc.md", "kb": "faq", "page": None, "score": 0.011}],
             "cached": False, "prompt_tokens": 50, "completion_tokens": 10},
}


@dataclass
class Dataset:
    bot: Bot
    helpdesk: Bot
    web: ChatSession
    whatsapp: ChatSession
    day2: ChatSession
    b_session_id: str


def dataset_make(canary_tenants) -> Dataset:
    with schema_context(canary_tenants.b.schema_name):
        bot_b = Bot.objects.get(pk=canary_tenants.b.bot_pk)
        eve = ChatUser.objects.create(username=f"eve {canary_tenants.b.canary}")
        b_session = session_make(bot_b, eve, channel="web", started=at(DAY1, 9), title=canary_tenants.b.canary, turns=[
            {"kind": USER, "content": f"what is the price of fax {canary_tenants.b.canary}"}, TOOL_ANSWER,
            {"kind": USER, "content": "opening hours"}, OFFLINE_ANSWER, OFFLINE_ANSWER, OFFLINE_ANSWER])
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=canary_tenants.a.bot_pk)
        helpdesk = Bot.objects.create(name="helpdesk")
        alice = ChatUser.objects.create(username="alice")
        bob = ChatUser.objects.create(username="bob", external_id="+5511999")
        web = session_make(bot, alice, channel="web", started=at(DAY1, 10), title="Fax prices", turns=[
            {"kind": USER, "content": "What is the PRICE of fax?  "}, TOOL_ANSWER,
            {"kind": USER, "content": "what is the   price of fax"}, CACHED_ANSWER])
        whatsapp = session_make(bot, bob, channel="whatsapp", started=at(DAY1, 11), title="Hours", turns=[
            {"kind": USER, "content": "Opening hours?"}, OFFLINE_ANSWER,
            {"kind": USER, "content": "opening hours"}, WEAK_ANSWER])
        day2 = session_make(helpdesk, alice, channel="web", started=at(DAY2, 8), title="Helpdesk", turns=[
            {"kind": USER, "content": "reset my password"},
            {"kind": SYSTEM, "content": "reset line 3: boom", "meta": {"script": "reset", "error": {"line": 3}}},
            {"kind": BOT, "content": "Done.", "tokens": 15, "model": "m-small", "latency_ms": 150,
             "meta": {"cached": False, "prompt_tokens": 10, "completion_tokens": 5, "tool_calls": [
                 {"name": "get-price", "arguments": {}, "result": None, "error": "boom"},
                 {"name": "lookup", "arguments": {"q": "x"}, "result": "ok", "error": None}]}}])
    return Dataset(bot=bot, helpdesk=helpdesk, web=web, whatsapp=whatsapp, day2=day2, b_session_id=str(b_session.pk))


@pytest.fixture
def dataset(db, canary_tenants) -> Dataset:
    return dataset_make(canary_tenants)
