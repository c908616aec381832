"""The chat's upstream WebSocket protocol end to end (spec 6.2-6.4; issue 6 acceptance).

A client of our own speaking General Bots' protocol over the real `websockets` library talks to a live daphne
(tests/browser/harness.LiveServer) against the test run's PostgreSQL and Redis; the bots' model is our fake
OpenAI-compatible server (tests/support/llm_fake.py), so the real `openai` client streams from a socket.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from websockets.exceptions import InvalidStatus

from tests.sessions.conftest import BOOK_ARGUMENTS, BOOK_TRIGGER, bot_config, in_schema
from tests.sessions.support import (
    ChatClient,
    bot_text,
    is_bot_message,
    is_connected,
    is_delta,
    is_error,
    is_suggestions,
    is_user,
)
from tests.support.llm_fake import Reply

pytestmark = [pytest.mark.django_db, pytest.mark.asyncio(loop_scope="session")]

GARDEN_START = """
USE KB "faq"
ADD TOOL "book-visit"
CLEAR SUGGESTIONS
ADD SUGGESTION "When are you open?"
ADD SUGGESTION TOOL "survey" AS "Quick survey"
TALK "Hello! I am the garden assistant."
TALK "What can I do for you?"
HEAR choice AS "Opening hours", "Talk to us", "Nothing"
SELECT CASE choice
    CASE "Opening hours"
        TALK "We are open Tuesday to Sunday, 9:00 to 18:00."
    CASE "Talk to us"
        TALK "Write your question below."
    CASE ELSE
        TALK "No problem."
END SELECT
"""
BOOK_VISIT = """
PARAM name AS STRING LIKE "Ana" DESCRIPTION "Name of the visitor the booking is for"
PARAM date AS DATE LIKE "2026-05-14" DESCRIPTION "Day of the visit (YYYY-MM-DD)"
PARAM people AS INTEGER LIKE "2" DESCRIPTION "How many people are coming" OPTIONAL
DESCRIPTION "Book a guided visit to the garden for a visitor on a given day."
SAVE "visits", name, date, people
TALK "Booking " + name + " for " + people
RETURN "confirmation GV-" + name + "-" + people
"""
SURVEY = """
TALK "Survey: how did you hear about us?"
HEAR how
TALK "Thanks, noted: " + how
"""
FAQ_TEXT = """# Opening hours

The Riverside Garden is open from Tuesday to Sunday, 9:00 to 18:00.
Last entry is at 17:00. The garden is closed on Mondays and on 25 December.
"""


@pytest.fixture(scope="module")
def garden(deploy_bot, chat_llm):
    return deploy_bot("garden", {
        "garden.gbot/config.csv": bot_config(llm_url=chat_llm.base_url),
        "garden.gbdialog/start.bas": GARDEN_START,
        "garden.gbdialog/book-visit.bas": BOOK_VISIT,
        "garden.gbdialog/survey.bas": SURVEY,
        "garden.gbkb/faq/opening-hours.md": FAQ_TEXT,
    })


@pytest.fixture(scope="module")
def plain(deploy_bot, chat_llm):
    """A bot that greets and hands everything else to the model."""
    return deploy_bot("plain", {
        "plain.gbot/config.csv": bot_config(llm_url=chat_llm.base_url),
        "plain.gbdialog/start.bas": 'TALK "Plain bot ready"\n',
    })


@pytest.fixture(scope="module")
def asker(deploy_bot, chat_llm):
    """A dialog that waits on HEAR twice (the restart test)."""
    return deploy_bot("asker", {
        "asker.gbot/config.csv": bot_config(llm_url=chat_llm.base_url),
        "asker.gbdialog/start.bas": 'TALK "Your name?"\nHEAR name\nTALK "Your city, " + name + "?"\n'
                                    'HEAR city\nTALK "Hello " + name + " from " + city\n',
    })


def visits_rows(schema: str, bot_name: str) -> list[dict]:
    from apps.bots.models import BotTableRow

    return list(BotTableRow.objects.filter(bot__name=bot_name, table="visits").order_by("id")
                .values_list("data", flat=True))


def stored(schema: str, session_id: str) -> list[tuple[int, int, int, str]]:
    """(index, role, message_type, content) of the session's rows, in order."""

    def read():
        from apps.sessions.models import Message

        return list(Message.objects.filter(session_id=session_id).order_by("index")
                    .values_list("index", "role", "message_type", "content"))

    return in_schema(schema, read)


async def test_upstream_client_runs_start_menu_tool_button_and_llm_tool_call(
        chat_client: ChatClient, chat_tenant, garden, llm):
    ids = await chat_client.bootstrap(garden)
    assert ids["status"] == "anonymous" and ids["bot_name"] == garden
    uuid.UUID(ids["session_id"]), uuid.UUID(ids["user_id"])

    async with chat_client.connect(garden, ids) as sock:
        connected = await sock.next()
        assert is_connected(connected)
        assert connected["session_id"] == ids["session_id"] and connected["user_id"] == ids["user_id"]
        assert connected["bot_id"] == ids["bot_id"] and connected["message"] == "Connected to bot server"

        # start.bas runs on connect: its TALKs, then the chips (its own and the HEAR menu's options).
        assert await sock.bot_texts(2) == ["Hello! I am the garden assistant.", "What can I do for you?"]
        chips = (await sock.until(is_suggestions))[-1]["suggestions"]
        texts = [c["text"] for c in chips]
        assert "When are you open?" in texts and "Opening hours" in texts
        tool_chip = next(c for c in chips if c["text"] == "Quick survey")
        action = json.loads(tool_chip["action"])  # a JSON string, as upstream's client expects
        assert action["type"] == "invoke_tool" and action["tool"] == "survey"

        # The menu HEAR takes the answer and its branch replies.
        await sock.send("Opening hours")
        assert await sock.bot_texts(1) == ["We are open Tuesday to Sunday, 9:00 to 18:00."]
        assert (await sock.until(is_suggestions))[-1]["suggestions"]

        # A tool button (message_type 6) runs the tool; its HEAR takes the next message.
        await sock.send(action["tool"], message_type=6)
        assert await sock.bot_texts(1) == ["Survey: how did you hear about us?"]
        await sock.send("A friend told me")
        assert await sock.bot_texts(1) == ["Thanks, noted: A friend told me"]

        # An LLM question: the model calls book-visit, the script runs with the arguments as PARAMs, and the
        # model's second answer (built from the tool's RETURN) streams back.
        before = len(sock.frames)
        await sock.send(f"{BOOK_TRIGGER} a visit for Ana, 3 people on 14 May. Is the garden open on Sundays?")
        tool_talk, answer = await sock.bot_messages(2)
        assert bot_text(tool_talk) == "Booking Ana for 3"
        turn_frames = sock.frames[before:]
        chunks = [f["content"] for f in turn_frames if is_delta(f)]
        final = bot_text(answer)
        assert len(chunks) > 1 and "".join(chunks) == final
        assert "confirmation GV-Ana-3" in final
        assert answer["message_index"] > tool_talk["message_index"]

    rows = in_schema(chat_tenant.schema_name, visits_rows, chat_tenant.schema_name, garden)
    assert len(rows) == 1
    # Positional SAVE values (no table schema names the columns): name, date, people.
    assert rows[0]["c0"] == "Ana" and str(rows[0]["c2"]) == "3" and "2026-05-14" in str(rows[0]["c1"])

    first, second = llm.chat_requests()[-2:]
    tool_names = [t["function"]["name"] for t in first.body.get("tools") or []]
    assert len(tool_names) == 1 and "book" in tool_names[0]
    params = first.body["tools"][0]["function"]["parameters"]
    assert set(BOOK_ARGUMENTS) <= set(params["properties"])
    system = first.body["messages"][0]
    assert system["role"] == "system" and "Tuesday to Sunday" in system["content"]  # the KB passage
    tool_message = next(m for m in second.body["messages"] if m["role"] == "tool")
    assert tool_message["content"] == "confirmation GV-Ana-3"


async def test_restart_while_waiting_on_hear_continues_the_dialog(chat_client, chat_server, asker, llm):
    ids = await chat_client.bootstrap(asker)
    async with chat_client.connect(asker, ids) as sock:
        assert await sock.bot_texts(1) == ["Your name?"]
        await sock.send("Rita")
        assert await sock.bot_texts(1) == ["Your city, Rita?"]

    chat_server.restart()
    client = ChatClient(chat_server.port, chat_client.host)
    async with client.connect(asker, ids) as sock:
        assert is_connected(await sock.next())
        await sock.send("Porto")
        assert await sock.bot_texts(1) == ["Hello Rita from Porto"]
    assert llm.chat_requests() == []  # the dialog answered, not the model
