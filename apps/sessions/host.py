"""The BASIC host of a chat session: TALK becomes a message, suggestions/KBs/tools/context live in the session.

Everything a script changes about the session is written to `ChatSession.state` (saved by the turn at its
end, under the session lock), so the next turn (on any web process, after a restart) sees it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from django.db import transaction

from apps.basic.errors import LimitExceeded
from apps.basic.host import HostError
from apps.basic.values import bounded_json
from apps.bots.host import BotHost
from apps.bots.models import BotScript
from apps.sessions.models import ChatSession, ChatUser

if TYPE_CHECKING:
    from apps.sessions.turns import Turn

logger = logging.getLogger(__name__)

# Chips a session keeps (spec 3.5.5: the client shows 10); more is a script bug, not a menu.
SUGGESTIONS_MAX = 20
# Format switchers one session offers (upstream has 8 built-in ones) and the length of a custom one's prompt.
SWITCHERS_MAX = 12
SWITCHER_PROMPT_MAX_CHARS = 2000
# Tools one session may offer the LLM: each costs 50-200 prompt tokens (spec 7.5).
SESSION_TOOLS_MAX = 32
# SET USER MEMORY / REMEMBER keys per user, and the size of one value: settings, not documents.
USER_MEMORY_MAX_KEYS = 200
USER_MEMORY_VALUE_MAX_CHARS = 16 * 1024
# A system prompt or context value set by a script (BEGIN SYSTEM PROMPT, SET CONTEXT).
PROMPT_MAX_CHARS = 32 * 1024
# SET CONTEXT names one session keeps (a script looping over names must not grow the state forever).
CONTEXTS_MAX = 20
# KBs one session may have active (USE KB names can come from user input).
SESSION_KBS_MAX = 20
# REMEMBER durations: "30 days", "2 hours"... (unit -> seconds).
_DURATION_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400,
                   "month": 30 * 86400, "year": 365 * 86400}


def _duration_seconds(text: str | None) -> float | None:
    if not text:
        return None
    parts = str(text).strip().lower().split()
    if len(parts) == 2:
        try:
            amount = float(parts[0])
        except ValueError:
            return None
        unit = parts[1].rstrip("s")
        if unit in _DURATION_UNITS:
            return amount * _DURATION_UNITS[unit]
    return None


def user_memory_expired(entry: object, now: datetime) -> bool:
    """Whether a user memory entry ({"value", "expires"}) is past its expiry at `now`: RECALL no longer returns
    it and retention removes it (apps.compliance.retention), by this one rule. A stamp that is not a time
    never expires."""
    stamp = entry.get("expires") if isinstance(entry, dict) else None
    try:
        return bool(stamp) and datetime.fromisoformat(stamp) < now
    except (TypeError, ValueError):
        return False


def tool_name(text: str) -> str:
    """A tool's script name as USE TOOL, a button or a chip names it ("Book.bas" -> "book"): the one spelling the
    session keeps and a tool button is checked against."""
    return text.strip().lower().removesuffix(".bas")


class SessionHost(BotHost):
    def __init__(self, session: ChatSession, turn: Turn) -> None:
        user = session.user
        state = session.state
        super().__init__(
            session.bot,
            user={"id": str(user.id), "name": user.username, "username": user.username, "email": user.email,
                  "address": user.external_id},
            session={"id": str(session.id), "channel": session.channel, "title": session.title},
            kbs=list(state.get("kbs") or []),
        )
        self.chat = session
        self.turn = turn
        self.script_name = ""

    @property
    def state(self) -> dict:
        return self.chat.state

    # -- dialog ----------------------------------------------------------------------------------
    def talk(self, text: str) -> None:
        self.turn.bot_message(str(text), meta={"script": self.script_name} if self.script_name else None)

    def log(self, text: str) -> None:
        logger.info("script %s of bot %s: %s", self.script_name, self.bot.name, str(text)[:500])

    def set_system_prompt(self, text: str) -> None:
        self.state["system_prompt"] = str(text)[:PROMPT_MAX_CHARS]

    def set_context(self, name: str | None, value: str) -> None:
        contexts = self.state.setdefault("context", {})
        key = (name or "default").strip().lower()[:100] or "default"
        if key not in contexts and len(contexts) >= CONTEXTS_MAX:
            raise HostError(f"a session keeps at most {CONTEXTS_MAX} contexts")
        contexts[key] = str(value)[:PROMPT_MAX_CHARS]
        self.state["active_context"] = key

    # -- suggestions -----------------------------------------------------------------------------
    def add_suggestion(self, kind: str, value: str, label: str) -> None:
        chips = self.state.setdefault("suggestions", [])
        chip = {"kind": kind, "value": str(value), "label": str(label or value)}
        if chip not in chips and len(chips) < SUGGESTIONS_MAX:
            chips.append(chip)

    def clear_suggestions(self) -> None:
        self.state["suggestions"] = []

    def add_switcher(self, switcher_id: str, label: str) -> None:
        switchers = self.state.setdefault("switchers", [])
        if len(switcher_id) > SWITCHER_PROMPT_MAX_CHARS:
            raise HostError(f"a switcher id or prompt is at most {SWITCHER_PROMPT_MAX_CHARS} characters")
        if switcher_id in [s["id"] for s in switchers]:
            return
        if len(switchers) >= SWITCHERS_MAX:
            raise HostError(f"a session offers at most {SWITCHERS_MAX} switchers")
        switchers.append({"id": switcher_id, "label": label[:200]})

    def clear_switchers(self) -> None:
        self.state["switchers"] = []
        self.state["active_switchers"] = []

    # -- knowledge and tools ---------------------------------------------------------------------
    def use_kb(self, name: str) -> None:
        if str(name).strip() not in self.kbs and len(self.kbs) >= SESSION_KBS_MAX:
            raise HostError(f"a session uses at most {SESSION_KBS_MAX} knowledge bases")
        super().use_kb(name)
        self.state["kbs"] = list(self.kbs)

    def clear_kb(self, name: str | None) -> None:
        super().clear_kb(name)
        self.state["kbs"] = list(self.kbs)

    def use_tool(self, name: str) -> object:
        tool = tool_name(str(name))
        exists = BotScript.objects.filter(bot=self.bot, name=tool, tool_schema__isnull=False).exists()
        if not exists:
            # Spec 3.11 #1: a missing tool is a warning, the script goes on.
            logger.warning("bot %s: USE TOOL %r: no tool script of that name", self.bot.name, tool)
            return False
        tools = self.state.setdefault("tools", [])
        if tool not in tools and len(tools) < SESSION_TOOLS_MAX:
            tools.append(tool)
        return True

    def clear_tools(self) -> None:
        self.state["tools"] = []

    def call_script(self, name: str, args: list) -> object:
        return self.turn.call_script(self, str(name), list(args))

    # -- user memory -----------------------------------------------------------------------------
    def _memory(self) -> dict:
        memory = self.chat.user.memory
        return memory if isinstance(memory, dict) else {}

    def _memory_put(self, key: str, value: object, expires: datetime | None) -> None:
        try:
            bounded_json(value, USER_MEMORY_VALUE_MAX_CHARS)
        except LimitExceeded:
            raise HostError(f"a user memory value is limited to {USER_MEMORY_VALUE_MAX_CHARS} characters") from None
        key = str(key).strip().lower()
        with transaction.atomic():
            # Re-read under a row lock: another session of the same user (another e-mail thread) may have
            # written other keys since this turn loaded the user.
            user = ChatUser.objects.select_for_update().get(pk=self.chat.user_id)
            memory = user.memory if isinstance(user.memory, dict) else {}
            if key not in memory and len(memory) >= USER_MEMORY_MAX_KEYS:
                raise HostError(f"a user keeps at most {USER_MEMORY_MAX_KEYS} memory keys")
            memory[key] = {"value": value, "expires": expires.isoformat() if expires else None}
            user.memory = memory
            user.save(update_fields=["memory"])
        self.chat.user.memory = memory

    def _memory_get(self, key: str) -> object:
        entry = self._memory().get(str(key).strip().lower())
        if not isinstance(entry, dict) or user_memory_expired(entry, datetime.now(UTC)):
            return None
        return entry.get("value")

    def set_user_memory(self, key: str, value: object) -> None:
        self._memory_put(key, value, None)

    def get_user_memory(self, key: str) -> object:
        return self._memory_get(key)

    def remember(self, key: str, value: object, duration: str | None) -> None:
        seconds = _duration_seconds(duration)
        expires = datetime.now(UTC) + timedelta(seconds=seconds) if seconds else None
        self._memory_put(key, value, expires)

    def recall(self, key: str) -> object:
        return self._memory_get(key)
