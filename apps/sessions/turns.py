"""One chat turn: the user's input goes to a waiting dialog, a tool, or the LLM, and the answers are saved.

The architecture's chat turn (design/architecture.md "A chat turn"):
1. the user message is persisted with the next index, under the session's lock;
2. a dialog suspended at HEAR gets the input (typed HEAR validates and re-asks);
3. a tool button (message_type 6) runs that tool script;
4. otherwise an LLM turn: system prompt + context + KB passages + history + the session's tools, a
   function-calling loop running tool scripts in the VM, tokens streamed, the answer saved;
5. start.bas runs when the session starts.

Scripts never block a thread waiting for input: HEAR suspends the VM, its JSON state is saved with the
session and the turn ends. The next message (on any process, after any restart) resumes it. This is what
lets a HEAR inside start.bas or inside a tool work (upstream deadlocks there, spec 6.3).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from apps.basic.errors import BasicError, StateError
from apps.basic.vm import VM, RunResult
from apps.bots.config_csv import config_params
from apps.bots.models import Bot, BotScript
from apps.bots.runtime import ScriptUnavailable, bot_script_program
from apps.core.memo import in_open_transaction
from apps.core.wire import nul_replaced
from apps.sessions import events
from apps.sessions.host import SessionHost, tool_name
from apps.sessions.models import ChatSession, ChatUser, Message, MessageType, Role
from apps.sessions.switchers import active_switchers_clean

logger = logging.getLogger(__name__)

# Upstream's history-limit default: the last 10 exchanges (20 rows) go to the LLM (spec 6.3 step 10).
HISTORY_DEFAULT_EXCHANGES = 10
# History is cut to this many estimated tokens (chars/4) whatever history-limit says: long pastes must not
# push the KB passages and the question out of the model's window.
HISTORY_MAX_TOKENS = 6000
# KB passages put into the system prompt (spec 5.7: 4000 tokens of context).
KB_CONTEXT_MAX_CHARS = 16_000
KB_CONTEXT_HITS = 5
# Passages quoted by the offline answer (no LLM): enough to be useful, short enough to read.
OFFLINE_PASSAGES = 3
OFFLINE_PASSAGE_CHARS = 600
# Nested CALLs from a chat script: recursion is a bug, not a feature.
# WAIT resumes in a row, with no user message in between, after which a chat dialog is ended: a polling loop
# (DO / TALK "ping" / WAIT 1 / LOOP) resumed itself forever with nobody there. Same bound as a job's
# suspensions (apps.automation.services.JOB_MAX_SLICES).
CHAT_MAX_WAIT_RESUMES = 100
# Text a tool's TALKs contribute to its result for the LLM when it RETURNs nothing.
TOOL_RESULT_MAX_CHARS = 8000
# How long a turn waits for the previous turn of the same session before giving up (a turn streaming a
# long LLM answer holds the lock; the database's statement_timeout would otherwise cut the wait at 30 s).
TURN_LOCK_WAIT_MS = 180_000

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant of this organisation. Answer briefly and accurately. When passages from "
    "the knowledge base are given, answer from them and cite their numbers like [1]; if they do not "
    "contain the answer, say so instead of guessing."
)
OFFLINE_NO_MODEL = "No language model is configured for this bot, so I can only quote its knowledge base."
OFFLINE_DOWN = "The language model is unavailable right now, so I can only quote the knowledge base."
OFFLINE_NOTHING = "I found nothing about that in my knowledge base."
QUOTA_REACHED = "This service has used its language-model allowance for today. Please try again tomorrow."
SCRIPT_FAILED = "Sorry, something went wrong on my side. Please try again."
# Stored and shown instead of the answer to a secret HEAR (PASSWORD, CREDITCARD...).
SECRET_MASK = "••••••"  # noqa: S105 - a mask, not a password


# A user message starting with this names a tool to run (old web clients' buttons).
LEGACY_TOOL_PREFIX = "__TOOL__:"


class TurnError(Exception):
    """The input cannot be taken (too large, unknown session...); the message says why."""


# The user message's meta key holding the client's id of the message (REST Idempotency-Key).
CLIENT_MESSAGE_ID_META = "client_message_id"
# Message meta clients may see; the rest (error texts, provider names, script names) stays in the console.
PUBLIC_META_KEYS = ("citations", "tool_calls", "tool", "cached", "offline", "secret", "interrupted", "quota",
                    "kb_degraded")


def session_chips(state: dict) -> dict:
    """The session's chips: suggestions, and the format switchers with the ones switched on."""
    return {"suggestions": list(state.get("suggestions") or []), "switchers": list(state.get("switchers") or []),
            "active_switchers": active_switchers_clean(state.get("active_switchers"), state)}


def bot_has_start_script(bot) -> bool:
    return BotScript.objects.filter(bot=bot, name="start").exists()


def _public_meta(meta: dict) -> dict:
    public = {k: meta[k] for k in PUBLIC_META_KEYS if k in meta}
    if isinstance(public.get("tool_calls"), list):
        # Which tools answered, not what they returned or how they failed (exception texts, records the model
        # read): those stay in the console's transcript.
        public["tool_calls"] = [{"name": str(call.get("name") or "")} for call in public["tool_calls"]
                                if isinstance(call, dict)]
    return public


def message_event(message: Message, stream: str | None = None) -> dict:
    meta = message.meta if isinstance(message.meta, dict) else {}
    event = {"index": message.index, "role": message.role, "message_type": message.message_type,
             "content": message.content, "meta": _public_meta(meta),
             "created_at": message.created_at.isoformat() if message.created_at else ""}
    if stream:
        event["stream"] = stream
    return event


@contextlib.contextmanager
def session_locked(session_id: object) -> Iterator[ChatSession | None]:
    """The session's row (None: there is none), read holding its lock: one turn at a time per session, across
    every web process and worker. A PostgreSQL advisory lock of the connection (it dies with the connection
    if the process does); waiters queue in arrival order."""
    if in_open_transaction():
        # Released before the outer transaction commits, the lock would let the next turn read stale state.
        # (A test case's own wrapping transaction is the one exception: it never commits.)
        raise RuntimeError("session_locked must not be used inside a transaction")
    key = f"chat:{connection.schema_name}:{session_id}"
    locked = False
    try:
        # Usually free: the lock is tried in the query that reads the row (one round trip; no row, no lock).
        try:
            try:
                session, locked = _session_read(session_id, lock_key=key)
            except (OperationalError, InterfaceError):
                # The pooled connection was ended by the server a moment ago (a restart, pg_terminate_backend)
                # after the socket poll before the turn found it alive: nothing was read, locked or written on
                # it (a lock dies with its connection). Once more, on a new connection.
                logger.info("chat: the database connection of session %s's turn was gone; reconnecting", session_id)
                connection.close()
                session, locked = _session_read(session_id, lock_key=key)
        except BaseException:
            # The server may have granted the lock before the row failed to load: release it (a no-op if not).
            with contextlib.suppress(Exception), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])
            raise
        if session is not None and not locked:
            # Another turn holds it: wait (longer than the statement limit), then read the row it saved.
            with connection.cursor() as cursor:
                cursor.execute("SET statement_timeout = %s", [TURN_LOCK_WAIT_MS])
                try:
                    cursor.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", [key])
                    locked = True
                finally:
                    cursor.execute("RESET statement_timeout")
            session, _ = _session_read(session_id)
        yield session
    finally:
        if locked:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", [key])
            except Exception:
                # A lock that cannot be released would wedge the session: dropping the connection releases it.
                logger.exception("chat: could not release the lock of session %s; closing the connection", session_id)
                connection.close()


# A turn reads its session with its bot and user (what select_related("bot", "user") reads) and tries the
# turn lock in one statement built once per process: compiling that query through the ORM on every turn
# took a quarter of a scripted turn's CPU. Rows become instances as the ORM makes them (from_db, each field's
# converters: the state JSON, sealed content), the bot and user cached on the session as select_related does.
_SESSION_READ_PARTS = ((ChatSession, "s", None), (Bot, "b", "bot"), (ChatUser, "u", "user"))


@functools.cache
def _session_read_plan() -> tuple[dict[bool, str], list[tuple[type, list[str], list[tuple[int, object, list]]]]]:
    """({locking: SQL}, per model: (model, attnames, [(position, column, converters)]))."""
    columns, layout = [], []
    for model, alias, _relation in _SESSION_READ_PARTS:
        fields = list(model._meta.concrete_fields)
        converters = []
        for position, field in enumerate(fields):
            col = field.get_col(alias)
            found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            if found:
                converters.append((position, col, found))
        columns += [f"{alias}.{connection.ops.quote_name(f.column)}" for f in fields]
        layout.append((model, [f.attname for f in fields], converters))
    table = {model: connection.ops.quote_name(model._meta.db_table) for model, _a, _r in _SESSION_READ_PARTS}
    joins = (f"FROM {table[ChatSession]} s JOIN {table[Bot]} b ON b.id = s.bot_id "
             f"JOIN {table[ChatUser]} u ON u.id = s.user_id WHERE s.id = %s")
    sql = {locking: f"SELECT {', '.join(columns)}, {lock} {joins}"  # noqa: S608 - model names; values are bound
           for locking, lock in ((True, "pg_try_advisory_lock(hashtextextended(%s, 0))"), (False, "false"))}
    return sql, layout


def _session_read(session_id: object, *, lock_key: str | None = None) -> tuple[ChatSession | None, bool]:
    """(the session with its bot and user, or None; whether the turn lock `lock_key` was taken with it)."""
    sql, layout = _session_read_plan()
    try:
        pk = ChatSession._meta.pk.to_python(session_id)
    except ValidationError:
        return None, False
    with connection.cursor() as cursor:
        if lock_key is None:
            cursor.execute(sql[False], [pk])
        else:
            cursor.execute(sql[True], [lock_key, pk])
        row = cursor.fetchone()
    if row is None:
        return None, False
    instances, start = [], 0
    for model, names, converters in layout:
        values = list(row[start:start + len(names)])
        for position, col, found in converters:
            for converter in found:
                values[position] = converter(values[position], col, connection)
        instances.append(model.from_db(connection.alias, names, values))
        start += len(names)
    session = instances[0]
    for (_model, _alias, relation), related in zip(_SESSION_READ_PARTS[1:], instances[1:], strict=True):
        ChatSession._meta.get_field(relation).set_cached_value(session, related)
    return session, bool(row[-1])


class Turn:
    """The work of one turn on one locked session. Create one per turn; call `save()` at the end."""

    def __init__(self, session: ChatSession, sink: events.Sink | None = None) -> None:
        self.session = session
        self.sink = sink or events.NullSink()
        self.produced: list[Message] = []
        # Every message of a session is added by a turn, which saves the count at its end (under the lock).
        self.next_index = session.message_count or 0
        self.tokens = 0
        # The formats the message switched on (None: as they were); kept to be applied again once start.bas
        # ran, since the switchers it offers only exist from then on.
        self.requested_switchers: list | None = None
        # The client's id of this message (REST `Idempotency-Key`): kept in the meta of the user row the turn
        # adds, so a retry of the same request finds this turn instead of running another.
        self.client_message_id: str | None = None
        state = session.state if isinstance(session.state, dict) else {}
        session.state = state
        self.host = SessionHost(session, self)

    @property
    def state(self) -> dict:
        return self.session.state

    # -- messages --------------------------------------------------------------------------------
    def add(self, role: int, content: str, message_type: int, *, stream: str | None = None,
            **fields: object) -> Message:
        # PostgreSQL stores no NUL in text or jsonb (a script's TALK of a parsed "\u0000", a tool's error text):
        # shown as the replacement character instead of failing the turn.
        content = nul_replaced(content)
        if fields.get("meta"):
            fields["meta"] = nul_replaced(fields["meta"])
        if role == Role.USER and self.client_message_id is not None:
            fields["meta"] = {**(fields.get("meta") or {}), CLIENT_MESSAGE_ID_META: self.client_message_id}
            self.client_message_id = None  # the turn's first user row is the message

        # In autocommit a failed INSERT leaves nothing behind; inside a transaction a savepoint keeps it usable.
        def create() -> Message:
            message = Message(session=self.session, index=self.next_index, role=role, message_type=message_type,
                              content=content, **fields)
            _message_insert(message)
            return message

        guard = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
        try:
            with guard:
                message = create()
        except IntegrityError:
            # The count is behind the rows: a process died between a message and the end of its turn.
            last = Message.objects.filter(session=self.session).aggregate(m=Max("index"))["m"]
            self.next_index = 0 if last is None else last + 1
            message = create()
        self.next_index += 1
        if role == Role.ASSISTANT:
            self.produced.append(message)
        if role in (Role.USER, Role.ASSISTANT):
            self.sink.emit({"kind": "message", "message": message_event(message, stream)})
        return message

    def bot_message(self, text: str, *, meta: dict | None = None, stream: str | None = None,
                    **fields: object) -> Message:
        return self.add(Role.ASSISTANT, text, MessageType.BOT_RESPONSE, stream=stream, meta=meta or {}, **fields)

    def last_user_index(self) -> int:
        last = (Message.objects.filter(session=self.session, role=Role.USER).order_by("-index")
                .values_list("index", flat=True).first())
        return self.next_index if last is None else last

    def status(self, text: str) -> None:
        self.sink.emit({"kind": "status", "text": text})

    # -- the turn --------------------------------------------------------------------------------
    def start(self) -> None:
        """start.bas, once per session (spec 1.5, 6.3 step 7)."""
        if self.state.get("started"):
            return
        self.state["started"] = True
        if bot_has_start_script(self.session.bot):
            self.run_script("start")
            if self.requested_switchers is not None:
                self.state["active_switchers"] = active_switchers_clean(self.requested_switchers, self.state)

    def process(self, text: str, message_type: int) -> None:
        if message_type == MessageType.SYSTEM:
            return  # spec 6.3 step 2: ignored
        if message_type == MessageType.SWITCHER_TOGGLE:
            self.switcher_replay()
            return
        if message_type == MessageType.USER and text.startswith(LEGACY_TOOL_PREFIX):
            # Old clients' tool buttons (spec 6.3 step 4): upstream answers "not implemented"; we run the tool
            # as message_type 6 would.
            text, message_type = text[len(LEGACY_TOOL_PREFIX):], MessageType.TOOL_EXEC
        if not self.state.get("started"):
            self.start()
            if self.dialog_waiting() and message_type != MessageType.TOOL_EXEC:
                # start.bas asked a question the user has not seen yet: keep the message, let them answer.
                self.add(Role.USER, text, MessageType.USER)
                return
        if message_type == MessageType.TOOL_EXEC:
            name = tool_name(text)
            self.add(Role.USER, name, MessageType.TOOL_EXEC, meta={"tool": name})
            if not self.tool_runnable(name):
                self.bot_message(f"Sorry, '{name}' is not available.", meta={"tool": name})
                return
            self.state["dialog"] = None  # a tool button starts over, whatever dialog was waiting
            self.run_script(name)
            return
        secret = self.dialog_waiting() and bool(((self.state["dialog"].get("vm") or {}).get("waiting") or {})
                                                .get("secret"))
        if secret:
            # HEAR AS PASSWORD / CREDITCARD: the answer goes to the script only; the transcript, the clients
            # and later LLM history see a mask.
            self.add(Role.USER, SECRET_MASK, MessageType.USER, meta={"secret": True})
        else:
            self.add(Role.USER, text, MessageType.USER)
        dialog = self.state.get("dialog")
        if isinstance(dialog, dict) and dialog.get("kind") == "wait":
            dialog["wait_resumes"] = 0  # the user is here: the WAIT loop is not running unattended
        if self.dialog_waiting() and self.resume_dialog(text):
            return
        self.answer(text)

    def switcher_replay(self) -> None:
        """A switcher toggle (message_type 8; turn_execute applied the formats): the model answers the last
        question again in the new format (spec 6.3 step 3, no new row). Only the model: while a dialog waits
        at HEAR the old text is no answer to its question (nor a secret's), and it is no tool button again;
        the formats are simply on for what comes next."""
        if self.dialog_waiting():
            return
        last = (Message.objects.filter(session=self.session, role=Role.USER, message_type=MessageType.USER)
                .order_by("-index").first())
        if last is None or (isinstance(last.meta, dict) and last.meta.get("secret")):
            return  # nothing asked yet; or the last text was a secret's answer (stored masked)
        self.answer(last.content, replay=True)

    # -- scripts ---------------------------------------------------------------------------------
    def dialog_waiting(self) -> bool:
        dialog = self.state.get("dialog")
        return isinstance(dialog, dict) and dialog.get("kind") == "hear"

    def tools_offered(self) -> set[str]:
        """The scripts this session offers to run: its tools (ADD TOOL / USE TOOL) and its tool chips (ADD
        SUGGESTION TOOL)."""
        offered = {str(t) for t in self.state.get("tools") or []}
        for chip in self.state.get("suggestions") or []:
            if isinstance(chip, dict) and chip.get("kind") == "tool":
                offered.add(tool_name(str(chip.get("value") or "")))
        return offered

    def tool_runnable(self, name: str) -> bool:
        """A button (message_type 6) may run a tool the session offers (upstream runs any script of the bot
        by name: helper scripts meant for CALL only, which trust their arguments, would be a visitor's to
        run), never start nor a scheduled script (jobs that mail or write tables on the bot's behalf)."""
        if name == "start" or name not in self.tools_offered():
            return False
        script = BotScript.objects.filter(bot=self.session.bot, name=name).only("metadata").first()
        return script is not None and not (script.metadata or {}).get("schedules")

    def _program(self, name: str):
        return bot_script_program(self.session.bot, name)

    def run_script(self, name: str, args: dict | None = None) -> RunResult | None:
        try:
            program = self._program(name)
        except ScriptUnavailable as exc:
            logger.warning("chat: %s", exc)
            self.bot_message(f"Sorry, '{name}' is not available.", meta={"error": str(exc)})
            return None
        self.host.script_name = name
        params = config_params(self.host.config_values())
        result = VM(program, self.host).start({**params, **(args or {})})
        self._after_run(name, result)
        return result

    def resume_dialog(self, text: str) -> bool:
        """Give `text` to the dialog waiting at HEAR; False when it cannot continue (script changed)."""
        dialog = self.state["dialog"]
        name = dialog.get("script", "")
        try:
            program = self._program(name)
            self.host.script_name = name
            result = VM(program, self.host).resume(dialog.get("vm"), text)
        except (ScriptUnavailable, StateError) as exc:
            logger.info("chat: dropping the suspended dialog of %s: %s", name, exc)
            self.state["dialog"] = None
            return False
        self._after_run(name, result)
        return True

    def resume_wait(self, token: str) -> bool:
        """Continue a dialog suspended at WAIT (the `chat.resume_wait` task calls this when it is due)."""
        dialog = self.state.get("dialog")
        if not isinstance(dialog, dict) or dialog.get("kind") != "wait" or dialog.get("token") != token:
            return False  # answered, restarted or replaced since: nothing to do
        name = dialog.get("script", "")
        resumes = int(dialog.get("wait_resumes") or 0) + 1
        try:
            program = self._program(name)
            self.host.script_name = name
            result = VM(program, self.host).resume(dialog.get("vm"))
        except (ScriptUnavailable, StateError) as exc:
            logger.info("chat: dropping the waiting dialog of %s: %s", name, exc)
            self.state["dialog"] = None
            return False
        self._after_run(name, result, wait_resumes=resumes)
        return True

    def _after_run(self, name: str, result: RunResult, wait_resumes: int = 0) -> None:
        """`wait_resumes`: WAIT resumes in a row that led to this run (0 when a user message or a start did)."""
        if result.status == "waiting" and result.waiting_for == "wait" and wait_resumes >= CHAT_MAX_WAIT_RESUMES:
            reason = f"ended after {CHAT_MAX_WAIT_RESUMES} WAITs in a row without a user message"
            logger.warning("chat: script %s of bot %s in session %s %s", name, self.session.bot.name,
                           self.session.pk, reason)
            self.state["dialog"] = None
            self.add(Role.SYSTEM, f"{name}: {reason}", MessageType.SYSTEM,
                     meta={"script": name, "error": {"line": None, "message": reason}})
            return
        if result.status == "waiting":
            dialog = {"script": name, "vm": result.state, "kind": result.waiting_for}
            if result.waiting_for == "wait":
                dialog["wait_resumes"] = wait_resumes
                dialog["token"] = uuid.uuid4().hex
                # Saved with the state (`save`): the lost-wait sweep queues the resume again if it never comes.
                self.session.wait_due_at = timezone.now() + timedelta(seconds=result.wait_seconds)
                self._schedule_wait(dialog["token"], result.wait_seconds)
            self.state["dialog"] = dialog
            return
        dialog = self.state.get("dialog")
        if not isinstance(dialog, dict) or dialog.get("script") == name:
            self.state["dialog"] = None  # this script's dialog ended; another script's (a WAIT) stays
        if result.status == "error":
            error = result.error or {}
            logger.warning("chat: script %s of bot %s failed at line %s: %s", name, self.session.bot.name,
                           error.get("line"), error.get("message"))
            # The transcript keeps the reason (for the console); the user gets an apology, not internals.
            self.add(Role.SYSTEM, f"{name} line {error.get('line')}: {error.get('message')}",
                     MessageType.SYSTEM, meta={"script": name, "error": error})
            self.bot_message(SCRIPT_FAILED, meta={"script": name, "failed": True})

    def _schedule_wait(self, token: str, seconds: float) -> None:
        from apps.sessions.tasks import resume_wait

        session_id = str(self.session.id)
        # Robust: with the broker down the turn has committed and its messages were delivered; raising here
        # would answer the user "Something went wrong" for a turn that went well. The WAIT then stays
        # suspended (logged) until beat's lost-wait sweep queues its resume (services.waits_requeue_lost).
        transaction.on_commit(lambda: resume_wait.apply_async(args=[session_id, token], countdown=seconds),
                              robust=True)

    def call_script(self, host: SessionHost, name: str, args: list) -> object:
        """CALL "other": run another script of the bot in this session; its RETURN is the value."""
        from apps.bots.runtime import script_call

        name = tool_name(name)
        return script_call(host=host, program=self._program(name), name=name, args=args,
                           params=config_params(self.host.config_values()))

    # -- the LLM turn ----------------------------------------------------------------------------
    def answer(self, text: str, *, replay: bool = False) -> None:
        from apps.sessions import answer

        answer.llm_answer(self, text, replay=replay)

    def run_tool(self, name: str, arguments: dict) -> str:
        """A tool the LLM called: its script runs in this session with the arguments as PARAMs."""
        first_new = len(self.produced)
        result = self.run_script(name, arguments)
        if result is None:
            return f"error: tool '{name}' is not available"
        if result.status == "waiting":
            from apps.llm.errors import ToolSuspended

            raise ToolSuspended(name)  # the tool asks the user: its dialog takes over
        if result.status == "error":
            return f"error: the tool failed: {(result.error or {}).get('message')}"
        if result.value is not None:
            from apps.basic.values import value_to_text

            return value_to_text(result.value)[:TOOL_RESULT_MAX_CHARS]
        talked = "\n".join(m.content for m in self.produced[first_new:] if m.role == Role.ASSISTANT)
        return (talked or "done")[:TOOL_RESULT_MAX_CHARS]

    # -- end of turn -----------------------------------------------------------------------------
    def save(self) -> None:
        session = self.session
        dialog = self.state.get("dialog")
        if not (isinstance(dialog, dict) and dialog.get("kind") == "wait"):
            session.wait_due_at = None  # no WAIT (any more): nothing for the lost-wait sweep to resume
        session.message_count = self.next_index
        session.total_tokens = (session.total_tokens or 0) + self.tokens
        _session_update(session)


# A turn writes its messages and its session with the statements below instead of the ORM's save(): the
# same values, prepared by each field (the content is sealed per tenant, the meta JSON adapted), without
# building the query each time (a third of a scripted turn's time went into that). Models with signals
# would lose them: neither has any.
_MESSAGE_FIELDS = [f for f in Message._meta.concrete_fields if not f.primary_key]
_SESSION_TURN_FIELDS = [ChatSession._meta.get_field(name)
                        for name in ("state", "wait_due_at", "message_count", "total_tokens", "last_activity")]


def _quoted(names: list[str]) -> list[str]:
    return [connection.ops.quote_name(name) for name in names]


@functools.cache
def _message_insert_sql() -> str:
    columns = ", ".join(_quoted([f.column for f in _MESSAGE_FIELDS]))
    placeholders = ", ".join(["%s"] * len(_MESSAGE_FIELDS))
    table = connection.ops.quote_name(Message._meta.db_table)
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) RETURNING id"  # noqa: S608 - model names


@functools.cache
def _session_update_sql() -> str:
    assignments = ", ".join(f"{column} = %s" for column in _quoted([f.column for f in _SESSION_TURN_FIELDS]))
    table = connection.ops.quote_name(ChatSession._meta.db_table)
    return f"UPDATE {table} SET {assignments} WHERE id = %s"  # noqa: S608 - model names; values are bound


def _message_insert(message: Message) -> None:
    """INSERT one message (as Message.objects.create would) and set its id."""
    values = [f.get_db_prep_save(f.pre_save(message, add=True), connection) for f in _MESSAGE_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(_message_insert_sql(), values)
        message.pk = cursor.fetchone()[0]
    message._state.adding, message._state.db = False, connection.alias


def _session_update(session: ChatSession) -> None:
    """UPDATE the fields a turn changes (as save(update_fields=...) would, last_activity set to now)."""
    values = [f.get_db_prep_save(f.pre_save(session, add=False), connection) for f in _SESSION_TURN_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(_session_update_sql(),
                       [*values, ChatSession._meta.pk.get_db_prep_value(session.pk, connection)])



def turn_of_client_message(session: ChatSession, client_message_id: str) -> list[Message] | None:
    """The bot's messages of the turn that took the user message with this client id (those after it, up to
    the next user message), or None when no message of the session has that id."""
    asked = (Message.objects.filter(session=session, role=Role.USER, meta__contains={
        CLIENT_MESSAGE_ID_META: client_message_id}).order_by("index").values_list("index", flat=True).first())
    if asked is None:
        return None
    following = Message.objects.filter(session=session, index__gt=asked)
    next_user = following.filter(role=Role.USER).order_by("index").values_list("index", flat=True).first()
    if next_user is not None:
        following = following.filter(index__lt=next_user)
    return list(following.filter(role=Role.ASSISTANT).order_by("index"))


def turn_execute(session_id: object, *, text: str, message_type: int = MessageType.USER,
                 sink: events.Sink | None = None, start_only: bool = False,
                 wait_token: str | None = None, active_switchers: list | None = None,
                 client_message_id: str | None = None) -> list[Message]:
    """Run one turn on the session (in the current tenant) under its lock; returns the messages produced.
    With `client_message_id`, a message of the session already sent with that id is not taken again: its
    turn's messages are returned (and emitted) instead."""
    sink = sink or events.NullSink()
    started = time.monotonic()
    sink.emit({"kind": "thinking", "on": True})
    ended = False
    try:
        with session_locked(session_id) as session:
            try:
                if session is None:  # erased (a data-subject request) while the client was connected
                    raise TurnError("no such session")
                if client_message_id is not None:
                    # Under the lock: a retry sent while the first request still runs waits for it, then finds it.
                    earlier = turn_of_client_message(session, client_message_id)
                    if earlier is not None:
                        for message in earlier:
                            sink.emit({"kind": "message", "message": message_event(message)})
                        return earlier
                turn = Turn(session, sink)
                turn.client_message_id = client_message_id
                if active_switchers is not None:  # the message says which formats are on (None: as they were)
                    turn.requested_switchers = active_switchers
                    turn.state["active_switchers"] = active_switchers_clean(active_switchers, turn.state)
                try:
                    if wait_token is not None:
                        turn.resume_wait(wait_token)
                    elif start_only:
                        turn.start()
                    else:
                        turn.process(text, message_type)
                except BasicError as exc:  # a host error escaping a script run: the session stays usable
                    logger.warning("chat: turn of session %s failed: %s", session_id, exc)
                    turn.bot_message(SCRIPT_FAILED, meta={"failed": True, "error": str(exc)[:500]})
                finally:
                    turn.save()
            except Exception:
                # Inside the lock: a failed turn leaves no bubble streaming forever, and never clears the buffer
                # of the next turn (which may already stream, in another process, once the lock is released).
                # Quietly: a Redis error clearing it must not replace the turn's own error.
                events.stream_buffer_clear_quietly(str(session_id))
                raise
            sink.emit({"kind": "suggestions", **session_chips(turn.state)})
            # Inside the lock, with the chips: the next turn's indicator (maybe from another process) comes after.
            sink.emit({"kind": "thinking", "on": False})
            ended = True
            flush = getattr(sink, "flush", None)
            if flush is not None:
                flush()  # published before the lock is released: the next turn's events come after these
            return turn.produced
    finally:
        if not ended:
            sink.emit({"kind": "thinking", "on": False})
        logger.debug("chat: turn of session %s took %.1f ms", session_id, (time.monotonic() - started) * 1000)


def history_messages(session: ChatSession, *, before_index: int, exchanges: int,
                     with_summary: bool = False) -> list[dict]:
    """The last `exchanges` user/assistant pairs before `before_index`, oldest first, within the budget.
    `with_summary`: the latest episodic summary (apps.sessions.memory) leads, and only messages after the
    ones it covers follow."""
    if before_index <= 0 or exchanges <= 0:
        return []  # the session's first message: nothing before it
    rows = (Message.objects.filter(session=session, index__lt=before_index, role__in=[Role.USER, Role.ASSISTANT])
            .exclude(message_type=MessageType.TOOL_EXEC))
    summary = None
    if with_summary:
        from apps.sessions.memory import latest_summary, summary_upto

        summary = latest_summary(session, before_index)
        if summary is not None:
            rows = rows.filter(index__gt=summary_upto(summary))
    budget = HISTORY_MAX_TOKENS * 4
    lead: list[dict] = []
    if summary is not None:
        text = f"Summary of the earlier conversation:\n{summary.content}"
        budget -= len(text)
        lead.append({"role": "system", "content": text})
    out: list[dict] = []
    for role, content in rows.order_by("-index").values_list("role", "content")[: exchanges * 2]:
        if budget - len(content) < 0:
            break
        budget -= len(content)
        out.append({"role": "user" if role == Role.USER else "assistant", "content": content})
    out.reverse()
    return lead + out


def history_limit(config: dict[str, str]) -> int:
    from apps.bots.config_csv import config_lookup

    raw = config_lookup(config, "history-limit", "")
    try:
        value = int(str(raw).strip())
    except ValueError:
        return HISTORY_DEFAULT_EXCHANGES
    return max(0, min(value, 100))


def chat_message_max_chars() -> int:
    return int(getattr(settings, "CHAT_MESSAGE_MAX_CHARS", 8000))


def bot_config(turn: Turn) -> dict[str, str]:
    """The bot's config.csv, read once per turn (the session host keeps it)."""
    return turn.host.config_values()
