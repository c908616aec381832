"""The chat's REST API over HTTP against the live daphne (apps/sessions/api.py): sessions, messages with a
HEAR flow, history pages, server-sent events, the OpenAPI document, the public bot config and the errors;
then two behaviours of the turn seen through it: the offline answer quoting the knowledge base when no model
is configured, and the provider breaker with its fallback (acceptance: "provider down").
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.sessions.conftest import bot_config
from tests.support.llm_fake import FakeLLMServer, Reply, ToolCall

pytestmark = [pytest.mark.django_db, pytest.mark.asyncio(loop_scope="session")]

REST_START = """
TALK "Welcome to the REST bot"
TALK "What is your name?"
HEAR name
TALK "Nice to meet you, " + name
"""
VISITS_TEXT = """Guided visits

Guided visits last about one hour and start at 10:00 and 15:00.
Groups of up to 12 people can book a visit through the chat.
"""
HOURS_TEXT = """Opening hours

The garden is open from Tuesday to Sunday, 9:00 to 18:00. It is closed on Mondays.
"""


@pytest.fixture(scope="module")
def rest_bot(deploy_bot, chat_llm):
    return deploy_bot("rest", {
        "rest.gbot/config.csv": bot_config(llm_url=chat_llm.base_url, extra=(
            "theme-title,REST garden\ntheme-color1,#2f6f4e\ncrm-endpoint,vault:gbo/tenants/chat#crm\n"
            "webhook-secret,s3cr3t-value\n")),
        "rest.gbdialog/start.bas": REST_START,
    })


@pytest.fixture
async def http(chat_client):
    async with chat_client.http() as client:
        yield client


async def create_session(http, bot: str) -> dict:
    response = await http.post("/api/sessions", json={"bot_name": bot})
    assert response.status_code == 201, response.text
    return response.json()


async def post_message(http, session_id: str, content: str, **extra) -> dict:
    response = await http.post(f"/api/sessions/{session_id}/messages", json={"content": content, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def contents(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages]


async def test_a_session_runs_start_then_messages_answer_the_hear_then_the_model(http, rest_bot, llm):
    created = await create_session(http, rest_bot)
    uuid.UUID(created["session_id"])
    assert created["bot_name"] == rest_bot and created["channel"] == "api"
    assert contents(created["messages"]) == ["Welcome to the REST bot", "What is your name?"]
    sid = created["session_id"]

    reply = await post_message(http, sid, "Ana")
    assert contents(reply["messages"]) == ["Nice to meet you, Ana"]
    assert reply["messages"][0]["index"] == 3  # 0, 1: start.bas; 2: the user's answer
    reply = await post_message(http, sid, "what is new?")
    assert contents(reply["messages"]) == ["echo: what is new?"]
    assert len(llm.chat_requests()) == 1  # the HEAR answer never reached the model

    everything = (await http.get(f"/api/sessions/{sid}/messages")).json()["messages"]
    assert [(m["index"], m["role"]) for m in everything] == [(0, 2), (1, 2), (2, 1), (3, 2), (4, 1), (5, 2)]
    page = (await http.get(f"/api/sessions/{sid}/messages", params={"after": 1, "limit": 2})).json()
    assert [m["index"] for m in page["messages"]] == [2, 3] and page["next_after"] == 3
    assert contents(page["messages"]) == ["Ana", "Nice to meet you, Ana"]
    rest = (await http.get(f"/api/sessions/{sid}/history", params={"after": page["next_after"]})).json()
    assert [m["index"] for m in rest["messages"]] == [4, 5]


async def test_a_retried_message_with_the_same_idempotency_key_runs_one_turn(http, rest_bot, llm):
    """A client retrying a POST after a timeout sends the same Idempotency-Key (or client_message_id): one user
    message, one model call, the same messages in both answers; another key is another message."""
    sid = (await create_session(http, rest_bot))["session_id"]
    await post_message(http, sid, "Ana")  # the start dialog's question
    url = f"/api/sessions/{sid}/messages"
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = await http.post(url, json={"content": "what is new?"}, headers=key)
    again = await http.post(url, json={"content": "what is new?"}, headers=key)
    assert first.status_code == again.status_code == 200
    assert first.json()["messages"] == again.json()["messages"]
    assert contents(first.json()["messages"]) == ["echo: what is new?"]
    body_id = str(uuid.uuid4())
    by_body = [await post_message(http, sid, "and later?", client_message_id=body_id) for _ in range(2)]
    assert by_body[0]["messages"] == by_body[1]["messages"] and contents(by_body[0]["messages"]) == [
        "echo: and later?"]
    assert len(llm.chat_requests()) == 2
    other = await http.post(url, json={"content": "what is new?"}, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert contents(other.json()["messages"]) == ["echo: what is new?"] and len(llm.chat_requests()) == 3
    users = [m["content"] for m in (await http.get(url)).json()["messages"] if m["role"] == 1]
    assert users == ["Ana", "what is new?", "and later?", "what is new?"]
    for bad in ("", "x" * 201, "a b", "é"):
        response = await http.post(url, json={"content": "hi", "client_message_id": bad})
        assert response.status_code == 400 and "Idempotency-Key" in response.json()["error"], bad


def parse_sse(raw: str) -> list[tuple[str, dict]]:
    events = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_stream_sends_the_turn_as_server_sent_events_ending_with_done(http, rest_bot, llm):
    sid = (await create_session(http, rest_bot))["session_id"]
    await post_message(http, sid, "Bea")
    answer = "Streaming over server-sent events, piece by piece. END"
    llm.script(Reply(text=answer, chunk_chars=7, chunk_delay_s=0.1))
    loop = asyncio.get_running_loop()
    received: list[tuple[float, str]] = []
    async with http.stream("POST", f"/api/sessions/{sid}/stream", json={"content": "stream it"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_text():
            received.append((loop.time(), chunk))
    events = parse_sse("".join(chunk for _, chunk in received))
    # Streamed as it happens, not buffered to the end: the first piece arrived well before the last.
    first_delta_at = next(t for t, chunk in received if "event: delta" in chunk)
    assert received[-1][0] - first_delta_at > 0.4
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "done" and kinds.count("done") == 1
    assert kinds[0] == "thinking" and events[0][1]["on"] is True
    messages = [data["message"] for kind, data in events if kind == "message"]
    assert [(m["role"], m["content"]) for m in messages] == [(1, "stream it"), (2, answer)]
    last_message = len(kinds) - 1 - kinds[::-1].index("message")
    assert kinds.index("message") < kinds.index("stream_start") < kinds.index("delta") < last_message
    deltas = [data for kind, data in events if kind == "delta"]
    assert len(deltas) > 2 and "".join(d["text"] for d in deltas) == answer
    assert [d["offset"] for d in deltas] == [sum(len(x["text"]) for x in deltas[:i]) for i in range(len(deltas))]
    assert messages[1]["stream"] == deltas[0]["stream"]
    history = (await http.get(f"/api/sessions/{sid}/history")).json()["messages"]
    assert contents(history)[-2:] == ["stream it", answer]


NOTE_TOOL = """
PARAM name AS STRING LIKE "Ana" DESCRIPTION "Who"
DESCRIPTION "Note a visitor"
TALK "Noted " + name
RETURN "noted-" + name
"""


async def test_an_answer_ending_at_its_last_tool_reports_its_tool_calls_and_closes_every_stream(
        http, deploy_bot, chat_llm, llm):
    """Nothing but whitespace after the last tool: the part streamed before it is the answer's last message.
    The REST answer carries its tool calls (as the history does), and over server-sent events the whitespace
    round's bubble is closed by the update of that message."""
    bot = deploy_bot("resttool", {"resttool.gbot/config.csv": bot_config(llm_url=chat_llm.base_url),
                                  "resttool.gbdialog/start.bas": 'ADD TOOL "note"',
                                  "resttool.gbdialog/note.bas": NOTE_TOOL})
    sid = (await create_session(http, bot))["session_id"]
    for ending in ("", "\n\n"):  # the last round says nothing, or streams only whitespace
        llm.script(Reply(text="Let me note that. ", tool_calls=[ToolCall("note", {"name": "Ines"})]),
                   Reply(text=ending))
        reply = await post_message(http, sid, f"note Ines{ending}")
        assert contents(reply["messages"]) == ["Let me note that. ", "Noted Ines"]
        history = (await http.get(f"/api/sessions/{sid}/messages")).json()["messages"]
        assert reply["messages"][0] == history[-2]
        assert reply["messages"][0]["meta"]["tool_calls"] == [{"name": "note"}]

    llm.script(Reply(text="Let me note that. ", tool_calls=[ToolCall("note", {"name": "Rui"})]),
               Reply(text="\n\n"))
    response = await http.post(f"/api/sessions/{sid}/stream", json={"content": "note Rui"})
    events = parse_sse(response.text)
    started = [data["stream"] for kind, data in events if kind == "stream_start"]
    closing = [data["message"].get("stream") for kind, data in events if kind in ("message", "message_update")]
    assert len(started) == 2 and all(stream in closing for stream in started)  # no bubble left open
    updates = [data["message"] for kind, data in events if kind == "message_update"]
    assert [(m["content"], m["meta"]["tool_calls"], m["stream"]) for m in updates] == [
        ("Let me note that. ", [{"name": "note"}], started[1])]
    # A client appending each `message` event shows every message once: the change has its own event name.
    indexes = [data["message"]["index"] for kind, data in events if kind == "message"]
    assert len(indexes) == len(set(indexes))


async def test_openapi_document_describes_the_chat_api(http):
    response = await http.get("/api/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.1") and schema["info"]["title"]
    paths = schema["paths"]
    for path, method in [("/api/auth", "get"), ("/api/bot/config", "get"), ("/api/sessions", "post"),
                         ("/api/sessions/{session_id}/messages", "post"),
                         ("/api/sessions/{session_id}/messages", "get"),
                         ("/api/sessions/{session_id}/history", "get"),
                         ("/api/sessions/{session_id}/stream", "post")]:
        operation = paths[path][method]
        assert operation["responses"], (path, method)
        if "{session_id}" in path:
            assert any(p["name"] == "session_id" and p["in"] == "path" for p in operation["parameters"])
    refs = set()

    def collect(node):
        if isinstance(node, dict):
            refs.update(v for k, v in node.items() if k == "$ref")
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(schema)
    assert refs and all(r.removeprefix("#/components/schemas/") in schema["components"]["schemas"] for r in refs)


async def test_bot_config_serves_the_look_but_no_credentials(http, rest_bot):
    response = await http.get("/api/bot/config", params={"bot_name": rest_bot})
    assert response.status_code == 200
    config = response.json()
    assert config["theme-title"] == "REST garden" and config["theme-color1"] == "#2f6f4e"
    assert "llm-key" not in config and "webhook-secret" not in config and "crm-endpoint" not in config
    assert "test-key" not in response.text and "s3cr3t" not in response.text and "vault:" not in response.text
    assert (await http.get("/api/bot/config", params={"bot_name": "no-such-bot"})).status_code == 404


async def test_bad_requests_get_a_specific_error_and_store_nothing(http, rest_bot, llm):
    unknown = uuid.uuid4()
    for method, path in [("POST", f"/api/sessions/{unknown}/messages"), ("GET", f"/api/sessions/{unknown}/messages"),
                         ("GET", f"/api/sessions/{unknown}/history"), ("POST", f"/api/sessions/{unknown}/stream")]:
        response = await http.request(method, path, json={"content": "hi"} if method == "POST" else None)
        assert response.status_code == 404 and response.json()["error"] == "no such session", path
    response = await http.post("/api/sessions", json={"bot_name": "no-such-bot"})
    assert response.status_code == 404 and "no-such-bot" in response.json()["error"]
    for name in ("a\u0000", "\u0000", "rest\u0000"):  # the database refuses NUL in text: unknown, not a 500
        response = await http.post("/api/sessions", json={"bot_name": name})
        assert response.status_code == 404 and response.json()["error"].startswith("no bot named"), name
        response = await http.get("/api/auth", params={"bot_name": name})
        assert response.status_code in (400, 404), name  # a NUL in a query string is refused before the view

    sid = (await create_session(http, rest_bot))["session_id"]
    url = f"/api/sessions/{sid}/messages"
    response = await http.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"]
    response = await http.post(url, json={"content": "x" * 8001})
    assert response.status_code == 400
    assert response.json()["error"] == "message too long: 8001 characters, the limit is 8000"
    response = await http.post(f"/api/sessions/{sid}/stream", json={"content": "x" * 8001})
    assert response.status_code == 400 and "the limit is 8000" in response.json()["error"]
    response = await http.post(url, json={"content": "  "})
    assert response.status_code == 400 and response.json()["error"] == "empty message"
    for path in (url, f"/api/sessions/{sid}/stream"):
        response = await http.post(path, json={"content": "hi", "message_type": 42})
        assert response.status_code == 400 and "message_type" in response.json()["error"]
        # Not text: never written down as "['hi']" or "True".
        for content in (["hi"], True, 7, {"text": "hi"}, None):
            response = await http.post(path, json={"content": content})
            assert response.status_code == 400 and response.json()["error"] == "content must be text", content
        # Valid upstream types outside the documented ones (2 is the bot's, 0 and 3 internal), and no numbers.
        # A digit string must be ASCII digits: "²" passes str.isdigit but not int(), "٦" is no "6", and int()
        # refuses a string of more than 4300 digits (each was a 500, or a turn).
        for message_type in (0, 2, 3, 5, True, 1.0, "one", None, "²", "٦", "1" * 5000, "06 6"):
            response = await http.post(path, json={"content": "hi", "message_type": message_type})
            assert response.status_code == 400, message_type
            assert response.json()["error"] == "message_type must be one of 1, 4, 6, 7, 8", message_type
    response = await http.get(url, params={"after": "x"})
    assert response.status_code == 400
    history = (await http.get(url)).json()["messages"]
    assert [m["role"] for m in history] == [2, 2]  # only start.bas's messages: nothing refused was stored
    assert llm.chat_requests() == []


async def test_without_a_model_the_answer_quotes_the_best_passage_with_its_source(http, deploy_bot, llm):
    bot = deploy_bot("library", {
        "library.gbot/config.csv": bot_config(llm_url=None),
        "library.gbdialog/start.bas": 'USE KB "docs"\n',
        "library.gbkb/docs/visits.txt": VISITS_TEXT,
        "library.gbkb/docs/hours.md": HOURS_TEXT,
    })
    sid = (await create_session(http, bot))["session_id"]
    (answer,) = (await post_message(http, sid, "How long do the guided visits last?"))["messages"]
    text = answer["content"]
    assert text.startswith("No language model is configured for this bot")
    first_quote = text.split("1. ", 1)[1]
    assert "Guided visits last about one hour" in first_quote.split("Source:")[0]  # the best passage first
    assert "Source: library.gbai/library.gbkb/docs/visits.txt" in first_quote.split("\n\n")[0]
    assert answer["meta"]["offline"] is True
    assert answer["meta"]["citations"][0]["source"].endswith("docs/visits.txt")
    assert llm.chat_requests() == []


async def test_provider_down_opens_the_breaker_the_fallback_answers_and_it_closes_again(http, deploy_bot):
    primary = FakeLLMServer(default=lambda r: Reply(status=503, headers={"Retry-After": "0"})).start()
    fallback = FakeLLMServer(default=lambda r: Reply(text=f"fallback: {r.last_user_text}")).start()
    try:
        bot = deploy_bot("breaker", {
            "breaker.gbot/config.csv": bot_config(llm_url=primary.base_url, extra=(
                f"llm-fallback-url,{fallback.base_url}\nllm-fallback-model,fallback-model\n"
                "llm-fallback-key,fallback-key\ncircuit-breaker-threshold,2\ncircuit-breaker-timeout,1\n")),
            "breaker.gbdialog/start.bas": 'TALK "ready"\n',
        })
        sid = (await create_session(http, bot))["session_id"]

        async def ask(text: str) -> tuple[str, int]:
            before = len(primary.chat_requests())
            (message,) = (await post_message(http, sid, text))["messages"]
            return message["content"], len(primary.chat_requests()) - before

        # Below the threshold every call tries the primary (with its retries) before the fallback answers.
        for question in ("q1", "q2"):
            content, primary_calls = await ask(question)
            assert content == f"fallback: {question}" and primary_calls >= 1
        # Open: the primary is not even asked.
        assert await ask("q3") == ("fallback: q3", 0)
        # The provider recovers; after the breaker's timeout one probe goes through, and it closes again.
        primary.default = lambda r: Reply(text=f"primary: {r.last_user_text}")
        await asyncio.sleep(1.2)
        assert await ask("q4") == ("primary: q4", 1)
        assert await ask("q5") == ("primary: q5", 1)
        assert [r.last_user_text for r in fallback.chat_requests()] == ["q1", "q2", "q3"]
    finally:
        primary.stop()
        fallback.stop()
