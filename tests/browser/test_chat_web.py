"""The HTMX web chat in Chromium against a live daphne: page, XSS, suggestion chips, reload, reconnect.

Each test drives the real page (templates/chat, static/chat/chat.js, htmx + ws extension) over the real
`/ws/<bot>/ui` consumer; the LLM is the fake OpenAI server of tests/support/llm_fake.py, named by the
bots' config.csv. Every page records console errors, CSP violations and dialogs (tests/browser/conftest).
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.browser.conftest import UI_TIMEOUT_MS, orm_call

pytestmark = [pytest.mark.django_db, pytest.mark.asyncio(loop_scope="session")]

# htmx-ext-ws retries with full-jitter back-off (up to 1, 2, 4, 8 s...): a restart of a few seconds is
# bridged within this.
RECONNECT_TIMEOUT_MS = 40_000

# The same payloads go through TALK, the user's input and the LLM's answer. TALK's copies avoid double
# quotes (the BASIC string delimiter); the others add quote-breaking variants.
TALK_PAYLOADS = [
    "<img src=x onerror=alert(101)>",
    "<script>alert(102)</script>",
    "<svg onload=alert(103)>",
    "[click me](javascript:alert(104))",
    "<iframe src=javascript:alert(105)></iframe>",
    "<a href=javascript:alert(106)>link</a>",
]
INPUT_PAYLOADS = TALK_PAYLOADS + [
    '"><img src=x onerror=alert(107)>',
    "'><svg/onload=alert(108)>",
    '<div hx-get="/" hx-trigger="load" hx-on:htmx:load="alert(109)">htmx</div>',
    '<button ws-send hx-vals=\'{"content":"pwned"}\'>send</button>',
]
# Elements or attributes that would mean injected markup became live in the page.
INJECTED_SELECTOR = (
    "#messages script, #messages img, #messages svg, #messages iframe, #messages button, "
    "#messages [onerror], #messages [onload], #messages [hx-get], #messages [ws-send], "
    "#messages a[href^='javascript' i], #messages [style]"
)


def bot_files(name: str, *, start: str, extra: dict[str, str] | None = None, config: str = "") -> dict[str, str]:
    # The LLM is the platform default (the fake, see conftest.chat_server); no cache, so every question
    # reaches it.
    return {
        f"{name}.gbot/config.csv": f"name,value\nllm-cache,false\n{config}",
        f"{name}.gbdialog/start.bas": start,
        **(extra or {}),
    }


def basic_talk(text: str) -> str:
    return f'TALK "{text}"\n'


@pytest.fixture(scope="module")
def bots(deploy_bot, framing_site):
    return {
        "xss": deploy_bot("xss", bot_files("xss", start="".join(map(basic_talk, TALK_PAYLOADS))
                                           + basic_talk("TALK-END"))),
        "chips": deploy_bot("chips", bot_files(
            "chips",
            start='ADD SUGGESTION "pricing" AS "Show prices"\nADD SUGGESTION TOOL "hello-tool" AS "Run tool"\n'
                  'TALK "Welcome to chips"\n',
            extra={"chips.gbdialog/hello-tool.bas": 'TALK "The tool ran"\n'},
        )),
        "formats": deploy_bot("formats", bot_files(
            "formats", start='ADD SWITCHER "list" AS "As a list"\nTALK "Formats ready"\n')),
        "plain": deploy_bot("plain", bot_files(
            "plain", start='TALK "Plain bot ready"\n',
            config="welcome-message,Hello **visitor**\ntheme-color1,#2f6f4e\n"
                   f"web-embed-origins,{framing_site.origin(ALLOWED_FRAMER)}\n",
        )),
    }


async def open_chat(watched, server, host, bot: str, path: str = "/"):
    page = watched.page
    response = await page.goto(server.url(host, f"/{bot}{path}"))
    await page.wait_for_selector("#connection[data-state='online']")
    return response


async def send(page, text: str) -> None:
    await page.fill("#messageInput", text)
    await page.press("#messageInput", "Enter")


async def message_indexes(page) -> list[int]:
    return await page.eval_on_selector_all("#messages [data-index]", "els => els.map(e => +e.dataset.index)")


async def wait_for_text(page, text: str) -> None:
    await page.wait_for_function(
        "t => document.getElementById('messages').innerText.includes(t)", arg=text, timeout=UI_TIMEOUT_MS
    )


def session_id_of(ws_connect: str) -> str:
    return re.search(r"session_id=([0-9a-f-]+)", ws_connect).group(1)


async def stored_indexes(schema: str, session_id: str) -> list[int]:
    """Indexes of the session's messages the chat shows (user and bot rows), read from the database."""

    def read() -> list[int]:
        from django_tenants.utils import schema_context

        from apps.sessions.models import Message

        with schema_context(schema):
            return list(Message.objects.filter(session_id=session_id, role__in=(1, 2))
                        .order_by("index").values_list("index", flat=True))

    return await asyncio.to_thread(orm_call, read)


async def test_page_loads_connected_without_csp_violations_or_script_errors(
        watched_page, chat_server, browser_tenant, bots):
    response = await open_chat(watched_page, chat_server, browser_tenant.host, bots["plain"])
    page = watched_page.page
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    # Welcome message rendered as Markdown, theme colour applied through CSSOM (no style attribute).
    assert await page.inner_html(".msg-welcome .msg-body") == "<p>Hello <strong>visitor</strong></p>"
    color = await page.evaluate(
        "getComputedStyle(document.getElementById('chat')).getPropertyValue('--chat-color1').trim()")
    assert color == "#2f6f4e"
    assert await page.evaluate("htmx.config.allowEval") is False
    from apps.sessions.turns import chat_message_max_chars

    assert int(await page.get_attribute("#messageInput", "maxlength")) == chat_message_max_chars()
    assert await page.evaluate("document.querySelectorAll('style, [style]:not(#chat)').length") == 0
    await watched_page.assert_clean()


async def test_unknown_bot_is_a_404(watched_page, chat_server, browser_tenant, bots):
    response = await watched_page.page.goto(chat_server.url(browser_tenant.host, "/no-such-bot/"))
    assert response.status == 404


ALLOWED_FRAMER = "outer.localhost"
OTHER_FRAMER = "elsewhere.localhost"


async def frame_from(page, site, host: str, framed_url: str):
    """Open the page of another site (`host` on the framing site) that frames `framed_url`."""
    await page.goto(site.page_url(host, framed_url))
    return page.frame_locator("#f")


async def test_embed_page_is_framed_only_by_the_origins_the_bot_allows(
        watched_page, chat_server, browser_tenant, bots, framing_site):
    page = watched_page.page
    response = await open_chat(watched_page, chat_server, browser_tenant.host, bots["plain"], "/embed")
    csp = response.headers["content-security-policy"]
    assert f"frame-ancestors 'self' {framing_site.origin(ALLOWED_FRAMER)};" in csp + ";"
    assert "x-frame-options" not in response.headers
    assert await page.evaluate("document.body.classList.contains('chat-embed')")
    embed_url = chat_server.url(browser_tenant.host, f"/{bots['plain']}/embed")

    allowed = await frame_from(page, framing_site, ALLOWED_FRAMER, embed_url)
    await allowed.locator("#connection[data-state='online']").wait_for()

    refused = await frame_from(page, framing_site, OTHER_FRAMER, embed_url)
    await page.wait_for_timeout(1500)
    assert await refused.locator("#chat").count() == 0
    # Chromium reports the refusal on the console: that is the behaviour under test, not a page error.
    watched_page.console_errors[:] = [e for e in watched_page.console_errors if "frame-ancestors" not in e]
    await watched_page.assert_clean()


async def test_full_page_refuses_to_be_framed(watched_page, chat_server, browser_tenant, bots, framing_site):
    page = watched_page.page
    page_url = chat_server.url(browser_tenant.host, f"/{bots['plain']}/")
    refused = await frame_from(page, framing_site, ALLOWED_FRAMER, page_url)
    await page.wait_for_timeout(1500)
    assert await refused.locator("#chat").count() == 0
    watched_page.console_errors[:] = [
        e for e in watched_page.console_errors if "frame-ancestors" not in e and "X-Frame-Options" not in e]
    await watched_page.assert_clean()


async def test_xss_payloads_from_talk_user_and_llm_render_as_text(
        watched_page, chat_server, browser_tenant, bots, fake_llm):
    from tests.support.llm_fake import Reply

    page = watched_page.page
    llm_answer = "\n\n".join(INPUT_PAYLOADS) + "\n\nLLM-END"
    fake_llm.script(Reply(text=llm_answer, chunk_chars=7))
    await open_chat(watched_page, chat_server, browser_tenant.host, bots["xss"])
    user_text = "\n".join(INPUT_PAYLOADS) + "\nUSER-END"
    await send(page, user_text)
    await wait_for_text(page, "TALK-END")
    await wait_for_text(page, "LLM-END")
    await page.wait_for_timeout(300)  # let any late fragment land before inspecting

    shown = await page.inner_text("#messages")
    for payload in TALK_PAYLOADS + INPUT_PAYLOADS:
        # Markdown link syntax is shown as its text; everything else exactly as typed.
        if not payload.startswith("[click me]"):
            assert payload in shown, f"{payload!r} not shown as text"
    user_bubble = page.locator(".msg-user").last
    assert await user_bubble.locator(".msg-body").inner_text() == user_text
    assert await page.locator(INJECTED_SELECTOR).count() == 0
    assert await page.evaluate("document.querySelectorAll('script:not([src])').length") == 0
    # Tall enough for the whole conversation in one picture (the message list scrolls inside the page).
    await page.set_viewport_size({"width": 1100, "height": 2400})
    await watched_page.screenshot("xss-payloads")
    await watched_page.assert_clean()


async def test_suggestion_chips_run_the_tool_and_send_text(
        watched_page, chat_server, browser_tenant, bots, fake_llm):
    from tests.support.llm_fake import Reply

    page = watched_page.page
    await open_chat(watched_page, chat_server, browser_tenant.host, bots["chips"])
    await send(page, "hi")
    await wait_for_text(page, "Welcome to chips")
    await page.wait_for_selector("#suggestions .chip-tool")
    assert await page.inner_text("#suggestions .chip-tool") == "Run tool"

    await page.click("#suggestions .chip-tool")
    await wait_for_text(page, "The tool ran")

    fake_llm.script(Reply(text="Prices start at 10"))
    await page.click("#suggestions .chip-text")
    await wait_for_text(page, "Prices start at 10")
    user_texts = await page.eval_on_selector_all(".msg-user .msg-body", "els => els.map(e => e.innerText)")
    assert "pricing" in user_texts  # the context chip sent its context name
    await watched_page.assert_clean()


async def test_a_switched_on_format_goes_with_the_next_messages_until_switched_off(
        watched_page, chat_server, browser_tenant, bots, fake_llm):
    from apps.sessions.switchers import BUILT_IN_PROMPTS
    from tests.support.llm_fake import Reply

    page = watched_page.page
    await open_chat(watched_page, chat_server, browser_tenant.host, bots["formats"])
    await wait_for_text(page, "Formats ready")
    toggle = "#switchers input[value='list']"
    await page.wait_for_selector(toggle)
    assert (await page.inner_text("#switchers label")).strip() == "As a list"
    await page.check(toggle)
    fake_llm.script(Reply(text="- Tuesday to Sunday"), Reply(text="Every day but Monday"))
    await send(page, "When are you open?")
    await wait_for_text(page, "Tuesday to Sunday")
    assert await page.is_checked(toggle)  # the chips re-rendered after the turn keep it on
    await page.uncheck(toggle)
    await send(page, "And in winter?")
    await wait_for_text(page, "Every day but Monday")
    on, off = (r.body["messages"][0]["content"] for r in fake_llm.chat_requests()[-2:])
    assert BUILT_IN_PROMPTS["list"] in on and BUILT_IN_PROMPTS["list"] not in off
    await watched_page.assert_clean()


async def test_reload_keeps_the_history_in_order_without_duplicates(
        watched_page, chat_server, browser_tenant, bots, fake_llm):
    from tests.support.llm_fake import Reply

    page = watched_page.page
    await open_chat(watched_page, chat_server, browser_tenant.host, bots["plain"])
    fake_llm.script(Reply(text="First *answer*"))
    await send(page, "first question")
    await wait_for_text(page, "First answer")
    await page.wait_for_timeout(300)
    before = await message_indexes(page)
    texts_before = await page.eval_on_selector_all("#messages [data-index]", "els => els.map(e => e.innerText)")

    await page.reload()
    await page.wait_for_selector("#connection[data-state='online']")
    await page.wait_for_timeout(500)  # the resume reply would add anything missing (or duplicate)
    assert await message_indexes(page) == before
    assert await page.eval_on_selector_all("#messages [data-index]", "els => els.map(e => e.innerText)") == texts_before
    assert "First <em>answer</em>" in await page.inner_html(f"#msg-{before[-1]} .msg-body")

    cookie = next(c for c in await page.context.cookies() if c["name"] == f"gbchat_{bots['plain']}")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert cookie["domain"] == browser_tenant.host  # host-only: no leading dot, no parent domain
    # Signed: the session id followed by its signature.
    assert cookie["value"].split(":")[0] == session_id_of(await page.get_attribute("#chat", "ws-connect"))
    await watched_page.assert_clean()


async def test_socket_closed_mid_stream_reconnects_and_shows_everything_once(
        watched_page, chat_server, browser_tenant, bots, fake_llm):
    from tests.support.llm_fake import Reply

    page = watched_page.page
    await open_chat(watched_page, chat_server, browser_tenant.host, bots["plain"])
    session_id = session_id_of(await page.get_attribute("#chat", "ws-connect"))
    sent = await page.evaluate("() => { window.__resumes = []; const s = WebSocket.prototype.send;"
                               " WebSocket.prototype.send = function (d) { if (String(d).includes('resume'))"
                               " window.__resumes.push(JSON.parse(d)); return s.call(this, d); }; return true; }")
    assert sent
    answer = " ".join(f"word{i}" for i in range(40)) + " STREAM-END"
    fake_llm.script(Reply(text=answer, chunk_chars=12, chunk_delay_s=0.08))
    await send(page, "tell me a long story")
    await page.wait_for_selector(".msg-streaming", timeout=UI_TIMEOUT_MS)
    await page.evaluate("document.getElementById('chat')['htmx-internal-data'].webSocket.socket.close()")
    await wait_for_text(page, "STREAM-END")
    await page.wait_for_timeout(500)

    shown = await message_indexes(page)
    assert shown == sorted(set(shown)), f"duplicate or unordered messages: {shown}"
    assert shown == await stored_indexes(browser_tenant.schema_name, session_id)
    assert shown == list(range(shown[0], shown[-1] + 1))
    assert (await page.inner_text("#messages")).count("STREAM-END") == 1
    assert await page.locator(".msg-streaming").count() == 0
    resumes = await page.evaluate("window.__resumes")
    assert len(resumes) >= 1 and resumes[-1]["last_index"] >= 0  # the reconnect announced what it had
    await watched_page.assert_clean()


PROBE_SOCKET_JS = """
async (url) => new Promise((resolve) => {
  const received = [];
  const socket = new WebSocket(url);
  socket.onopen = () => socket.send(JSON.stringify({type: 'resume', last_index: -1}));
  socket.onmessage = (event) => received.push(String(event.data));
  socket.onclose = (event) => resolve({closed: true, code: event.code, received});
  setTimeout(() => resolve({closed: false, code: null, received}), 1500);
})
"""


async def test_socket_gives_a_session_only_to_the_page_that_was_handed_it(
        watched_page, chat_server, browser_tenant, bots):
    page = watched_page.page
    await open_chat(watched_page, chat_server, browser_tenant.host, bots["plain"])
    await send(page, "my secret question")
    await wait_for_text(page, "my secret question")
    ws_path = await page.get_attribute("#chat", "ws-connect")
    base = chat_server.url(browser_tenant.host, "").replace("http://", "ws://").rstrip("/")

    own = await page.evaluate(PROBE_SOCKET_JS, base + ws_path)
    assert any("my secret question" in frame for frame in own["received"])  # the probe itself works

    forged = re.sub(r"token=[^&]+", "token=forged", ws_path)
    other_session = re.sub(r"session_id=[0-9a-f-]+", "session_id=00000000-0000-4000-8000-000000000000", ws_path)
    for path in (forged, other_session, re.sub(r"&token=[^&]+", "", ws_path)):
        result = await page.evaluate(PROBE_SOCKET_JS, base + path)
        assert result["closed"], f"{path}: socket left open"
        assert not any("secret" in frame for frame in result["received"]), f"{path}: {result['received']}"
    # A refused handshake is logged by Chromium; that is the behaviour under test.
    watched_page.console_errors[:] = [e for e in watched_page.console_errors if "WebSocket connection" not in e]
    await watched_page.assert_clean()


async def test_a_refused_socket_disables_the_composer_instead_of_swallowing_messages(
        watched_page, chat_server, browser_tenant, bots):
    """After a refusal (4xxx) nothing reconnects: a message typed then was cleared from the input and queued by
    htmx-ext-ws for ever. The composer is disabled instead, and the text kept."""
    page = watched_page.page
    sockets = []

    def relay(ws) -> None:  # the page's socket goes to the server as usual; the test closes it as a refusal would
        ws.connect_to_server()
        sockets.append(ws)

    await page.route_web_socket(re.compile(r".*/ws/.*"), relay)
    await open_chat(watched_page, chat_server, browser_tenant.host, bots["plain"])
    assert not await page.is_disabled("#messageInput")
    await sockets[-1].close(code=4429, reason="too many connections")
    await page.wait_for_selector("#connection[data-state='closed']", timeout=UI_TIMEOUT_MS)
    assert await page.is_disabled("#messageInput") and await page.is_disabled("#sendBtn")
    kept = await page.evaluate("""() => {
      const input = document.getElementById('messageInput');
      input.value = 'typed after the refusal';
      document.getElementById('chatForm').requestSubmit();
      return input.value;
    }""")
    assert kept == "typed after the refusal"
    await page.wait_for_timeout(500)
    assert await page.get_attribute("#connection", "data-state") == "closed"  # and no reconnect
    await watched_page.assert_clean()


async def test_a_long_conversation_keeps_the_page_to_its_latest_messages(
        watched_page, chat_server, browser_tenant, deploy_bot):
    """A tab left open for days kept every message it received: memory and the per-message index scans grew
    without end. The page keeps the latest MESSAGES_KEPT (300) and still resumes from the newest."""
    bot = deploy_bot("chatty", bot_files("chatty", start='FOR i = 1 TO 320\n  TALK "line " + i\nNEXT\n'
                                                        'TALK "all said"\n'))
    page = watched_page.page
    await open_chat(watched_page, chat_server, browser_tenant.host, bot)
    await wait_for_text(page, "all said")
    shown = await message_indexes(page)
    assert len(shown) == 300 and shown == list(range(shown[0], shown[-1] + 1))
    first = await page.eval_on_selector("#messages [data-index]", "e => e.innerText")
    assert "line 22" in first.split("\n")  # the oldest 21 left the page
    await watched_page.assert_clean()


async def test_answer_finished_while_offline_is_replayed_once_on_reconnect(
        watched_page, chat_server, browser_tenant, bots, fake_llm):
    from tests.support.llm_fake import Reply

    page = watched_page.page
    await open_chat(watched_page, chat_server, browser_tenant.host, bots["plain"])
    session_id = session_id_of(await page.get_attribute("#chat", "ws-connect"))
    stored_before = await stored_indexes(browser_tenant.schema_name, session_id)
    # Hold the page's next connection until the answer is saved: the page is offline for the whole turn.
    gate = asyncio.Event()

    async def held(route) -> None:
        await gate.wait()
        route.connect_to_server()

    await page.route_web_socket(re.compile(r"/ws/"), held)
    answer = " ".join(f"away{i}" for i in range(30)) + " OFFLINE-END"
    fake_llm.script(Reply(text=answer, chunk_chars=12, chunk_delay_s=0.05))
    await send(page, "question before the drop")
    await page.wait_for_selector(".msg-streaming", timeout=UI_TIMEOUT_MS)
    await page.evaluate("document.getElementById('chat')['htmx-internal-data'].webSocket.socket.close()")
    for _ in range(100):  # the turn goes on without the socket; wait for its answer in the database
        if len(await stored_indexes(browser_tenant.schema_name, session_id)) >= len(stored_before) + 2:
            break
        await asyncio.sleep(0.1)
    assert "OFFLINE-END" not in await page.inner_text("#messages")
    gate.set()
    await wait_for_text(page, "OFFLINE-END")
    await page.wait_for_timeout(300)

    shown = await message_indexes(page)
    assert shown == await stored_indexes(browser_tenant.schema_name, session_id)
    assert shown == list(range(shown[0], shown[-1] + 1))
    assert (await page.inner_text("#messages")).count("OFFLINE-END") == 1
    assert await page.locator(".msg-streaming").count() == 0
    await watched_page.assert_clean()


async def test_page_reconnects_by_itself_after_a_server_restart_and_continues(
        watched_page, chat_server, browser_tenant, bots, fake_llm):
    from tests.support.llm_fake import Reply

    page = watched_page.page
    await open_chat(watched_page, chat_server, browser_tenant.host, bots["plain"])
    fake_llm.script(Reply(text="before restart"), Reply(text="after restart"))
    await send(page, "one")
    await wait_for_text(page, "before restart")

    await asyncio.to_thread(chat_server.restart)
    await page.wait_for_selector("#connection[data-state='online']", timeout=RECONNECT_TIMEOUT_MS)
    await send(page, "two")
    await wait_for_text(page, "after restart")
    await page.wait_for_timeout(300)

    shown = await message_indexes(page)
    session_id = session_id_of(await page.get_attribute("#chat", "ws-connect"))
    assert shown == await stored_indexes(browser_tenant.schema_name, session_id)
    assert shown == list(range(shown[0], shown[-1] + 1))
    # While the server was down the browser and htmx-ext-ws (its htmx:wsError event, logged as
    # "[object Event]") reported the failed reconnects; nothing else may have failed.
    watched_page.console_errors[:] = [
        e for e in watched_page.console_errors
        if "WebSocket connection" not in e and not (e.startswith("[object Event]") and "htmx.min.js" in e)]
    await watched_page.assert_clean()
