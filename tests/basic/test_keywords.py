"""World-touching keywords go to the host; tool metadata; sandbox limits; SSRF guard."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from urllib.parse import urlsplit

import pytest

from apps.basic import ssrf
from apps.basic.compiler import compile_source
from apps.basic.host import InMemoryHost
from apps.basic.limits import MAX_HTTP_REDIRECTS, MAX_HTTP_RESPONSE_BYTES
from apps.basic.vm import VM
from tests.basic.conftest import run


def test_suggestions_context_kb_tools_and_memory_reach_the_host() -> None:
    src = '''ADD SUGGESTION "sales" AS "Talk to sales"
ADD SUGGESTION TEXT "hi" AS "Say hi"
ADD SUGGESTION TOOL "checkout" AS "Pay"
SET CONTEXT "sales" AS "You sell pens"
SET CONTEXT "always on"
USE KB "manuals"
ADD TOOL "bot.gbdialog/order.bas"
SET BOT MEMORY "k", 5
SET USER MEMORY "lang", "pt"
TALK GET BOT MEMORY "k"
TALK GET BOT MEMORY("missing") + "|"
TALK GET USER MEMORY("lang")
CLEAR KB'''
    r = run(src)
    h = r.host
    assert [(s["kind"], s["value"], s["text"]) for s in h.suggestions] == [
        ("context", "sales", "Talk to sales"), ("text", "hi", "Say hi"), ("tool", "checkout", "Pay")]
    assert h.contexts == {"sales": "You sell pens", "": "always on"}
    assert h.tools == ["order"] and h.kbs == []
    assert h.messages == ["5", "|", "pt"]


def test_tables_find_save_insert_update_delete() -> None:
    src = '''INSERT "leads", #{ name: "Ann", score: 10 }
SAVE "leads", 7, #{ name: "Bob", score: 3 }
n = UPDATE "leads", "name=Ann", #{ score: 20 }
rows = FIND "leads", "score=20"
TALK n + " " + rows[0].name
DELETE "leads", "name=Bob"
TALK COUNT(FIND "leads")'''
    assert run(src).host.messages == ["1 Ann", "1"]


def test_update_set_where_form() -> None:
    host = InMemoryHost(tables={"accounts": [{"id": 1, "name": "x"}]})
    run('acc = 1\nUPDATE "accounts" SET\n  name = "y",\n  status = "ok"\nWHERE id = acc', host=host)
    assert host.tables["accounts"] == [{"id": 1, "name": "y", "status": "ok"}]


def test_http_goes_through_the_ssrf_guard_before_the_host() -> None:
    host = InMemoryHost(http_responses={"https://93.184.216.34/api": {"status": 200, "data": {"v": 1}}})
    r = run('SET HEADER "X-Key" = "abc"\nr = GET "https://93.184.216.34/api"\nTALK r.v', host=host)
    assert r.host.messages == ["1"]
    assert host.http_log == [("GET", "https://93.184.216.34/api", None, {"X-Key": "abc"})]
    blocked = run('x = GET "http://127.0.0.1:8000/admin"', host=host)
    assert blocked.result.status == "error" and "not a public address" in blocked.result.error["message"]


@pytest.mark.parametrize("url", [
    "http://localhost/", "http://127.0.0.1/", "http://10.0.0.5/", "http://192.168.1.1/", "http://172.16.0.1/",
    "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://0x7f000001/", "http://2130706433/",
    "http://metadata.google.internal/", "file:///etc/passwd", "gopher://x/", "http://[::ffff:127.0.0.1]/",
    # IPv4 inside IPv6 through a gateway: 6to4 (169.254.169.254), NAT64 (127.0.0.1), Teredo (client 10.0.0.1).
    "http://[2002:a9fe:a9fe::]/", "http://[64:ff9b::7f00:1]/", "http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/",
])
def test_ssrf_guard_refuses_internal_addresses(url: str) -> None:
    with pytest.raises(ssrf.SSRFError):
        ssrf.check_url(url)


def test_ssrf_guard_accepts_public_literal_address() -> None:
    assert ssrf.check_url("https://93.184.216.34/x", resolve=False) == "93.184.216.34"
    assert ssrf.check_url("https://[2002:5db8:d822::]/x", resolve=False) == "2002:5db8:d822::"  # 6to4 of a public


def test_mail_file_schedule_task_and_script_call() -> None:
    host = InMemoryHost(scripts={"helper": "from helper"}, files={"a.txt": "hello"})
    src = '''SEND MAIL "a@b.c", "Subj", "Body"
SEND EMAIL "d@e.f", "S2", "B2"
TALK READ "a.txt"
WRITE "x" TO "b.txt"
v = CALL "helper.bas"
TALK v
CREATE TASK "Call back", "ann", "tomorrow"
SET SCHEDULE DATEADD(TODAY(), 1, "day"), "follow.bas"'''
    r = run(src, host=host)
    assert [m["to"] for m in host.mails] == ["a@b.c", "d@e.f"]
    assert r.host.messages == ["hello", "from helper"]
    assert host.files["b.txt"] == "x" and host.tasks == [["Call back", "ann", "tomorrow"]]
    assert host.schedules == [["2024-05-18", "follow.bas"]]


def test_unknown_script_call_is_a_runtime_error() -> None:
    r = run('CALL "nothing.bas"')
    assert r.result.error["message"] == "Undefined procedure/script: nothing.bas"


def test_generic_keyword_not_implemented_by_host_is_a_clean_runtime_error() -> None:
    r = run('PUBLISH EVENT "x"')
    assert r.result.status == "error" and "PUBLISH EVENT is not available" in r.result.error["message"]


def test_tool_metadata_schema_schedules_and_references() -> None:
    src = '''PARAM name AS STRING LIKE "Ann" DESCRIPTION "Customer name"
PARAM age AS INTEGER DESCRIPTION "Age" OPTIONAL
PARAM when AS DATE DESCRIPTION "Day"
PARAM size AS STRING DESCRIPTION "Size" ENUM ["S", "M"]
DESCRIPTION "Registers a customer"
SET SCHEDULE "every day at 9am"
SET SCHEDULE "0 0 */4 * * *"
USE KB "faq"
USE TOOL "x.gbdialog/lookup.bas"
TALK name'''
    meta = compile_source(src, "register").metadata
    fn = meta["tool"]["function"]
    assert fn["name"] == "register" and fn["description"] == "Registers a customer"
    props = fn["parameters"]["properties"]
    assert props["name"] == {"type": "string", "description": "Customer name", "example": "Ann"}
    assert props["age"]["type"] == "integer" and props["when"]["format"] == "date"
    assert props["size"]["enum"] == ["S", "M"]
    assert fn["parameters"]["required"] == ["name", "when", "size"]
    assert [s["cron"] for s in meta["schedules"]] == ["0 9 * * *", "0 */4 * * *"]
    assert meta["kbs"] == ["faq"] and meta["tools"] == ["lookup"]


def test_tool_args_are_preassigned_case_insensitively() -> None:
    assert run('PARAM Name AS STRING\nTALK "hi " + name', args={"NAME": "Zed"}).host.messages == ["hi Zed"]


def test_instruction_budget_stops_an_endless_loop_quickly() -> None:
    program = compile_source('DO\nx = x + 1\nLOOP')
    result = VM(program, InMemoryHost(), max_instructions=100_000).start()
    assert result.status == "error" and "instruction budget" in result.error["message"]
    assert result.error["line"] == 2


def test_budget_is_not_trappable_by_on_error() -> None:
    program = compile_source('ON ERROR RESUME NEXT\nWHILE 1\nWEND\nTALK "escaped"')
    host = InMemoryHost()
    result = VM(program, host, max_instructions=50_000).start()
    assert result.status == "error" and host.messages == []


def test_output_limit_stops_talk_floods() -> None:
    r = run('DO\nTALK "spam"\nLOOP')
    assert r.result.status == "error" and "too much output" in r.result.error["message"]


def test_self_doubling_array_cannot_blow_up_talk_or_state() -> None:
    r = run('a = [1]\nFOR i = 1 TO 60\na = [a, a]\nNEXT\nTALK a')
    assert r.result.status == "error" and "larger than" in r.result.error["message"]
    r2 = run('a = [1]\nFOR i = 1 TO 60\na = [a, a]\nNEXT\nHEAR x')
    assert r2.result.status == "error" and "state too large" in r2.result.error["message"]


def test_integer_overflow_turns_into_float_instead_of_growing() -> None:
    r = run('x = 3\nFOR i = 1 TO 12\nx = x * x\nNEXT')
    assert r.result.status == "error" and "too large" in r.result.error["message"]
    assert run('RETURN 2 ^ 62 * 4').result.value == float(2 ** 64)


def test_enum_params_become_suggestions_when_the_tool_runs() -> None:
    r = run('PARAM size AS STRING ENUM ["S", "M"]\nDESCRIPTION "Pick a size"\nTALK "ok"')
    assert [(s["kind"], s["value"]) for s in r.host.suggestions] == [("text", "S"), ("text", "M")]
    assert r.host.messages == ["ok"]


def test_trailing_comment_after_then_with_apostrophe() -> None:
    assert run("x = 1\nIF x THEN ' it's set\nTALK \"yes\"\nEND IF").host.messages == ["yes"]


def test_get_of_an_empty_value_names_the_problem() -> None:
    r = run('x = GET missing')
    assert r.result.error["message"] == "GET needs a URL, a path or a session field, got an empty value"


def test_get_user_path_reads_the_context() -> None:
    assert run('RETURN GET "user.email"').result.value == "user@example.com"


def test_session_user_paths_read_the_user() -> None:
    # a keyword at the start of an expression takes the whole expression as its argument,
    # so the parts are parenthesised
    r = run('RETURN (GET "session.user_email") + "|" + (GET "session.user_id") + "|" + (GET "session.id")')
    assert r.result.value == "user@example.com|user-1|session-1"


class _Loopback:
    """A real HTTP server on 127.0.0.1 in a thread; `routes` maps a path to (status, headers, body) and every
    request is recorded as (method, path, body)."""

    def __init__(self, routes: dict[str, tuple[int, dict[str, str], bytes]]) -> None:
        self.routes = routes
        self.received: list[tuple[str, str, bytes]] = []
        loopback = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                loopback.received.append((self.command, self.path, self.rfile.read(length) if length else b""))
                status, headers, body = loopback.routes.get(self.path, (404, {}, b"not here"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client stopped at its cap
                    self.wfile.write(body)

            do_GET = do_POST = _answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> _Loopback:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _allow_only(monkeypatch: pytest.MonkeyPatch, *urls: str) -> list[str]:
    """Let the guard pass exactly `urls` (loopback is refused otherwise), and the connection go to their
    host and port; every other URL and connection goes through the real checks. Returns the URLs the guard was
    asked about, in order."""
    real_check, real_resolve, allowed, checked = ssrf.check_url, ssrf.resolve_checked, set(urls), []
    reachable = {(urlsplit(url).hostname, urlsplit(url).port) for url in urls}

    def check_url(url: str, resolve: bool = True) -> str:
        checked.append(url)
        if url in allowed:
            return "127.0.0.1"
        return real_check(url, resolve)

    def resolve_checked(host: str, port: int) -> list:
        if (host, port) in reachable:
            return [(socket.AF_INET, (host, port))]
        return real_resolve(host, port)

    monkeypatch.setattr(ssrf, "check_url", check_url)
    monkeypatch.setattr(ssrf, "resolve_checked", resolve_checked)
    return checked


def test_ssrf_fetch_rechecks_every_redirect(monkeypatch: pytest.MonkeyPatch) -> None:
    with _Loopback({"/secret": (200, {}, b"internal data")}) as internal, \
            _Loopback({}) as public:
        public.routes["/start"] = (302, {"Location": internal.url("/secret")}, b"")
        checked = _allow_only(monkeypatch, public.url("/start"))
        with pytest.raises(ssrf.SSRFError, match="not a public address"):
            ssrf.fetch("GET", public.url("/start"))
    assert checked == [public.url("/start"), internal.url("/secret")]
    assert public.received == [("GET", "/start", b"")]
    assert internal.received == []  # the refused hop was never requested


def test_ssrf_fetch_follows_checked_redirects_up_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    hops = MAX_HTTP_REDIRECTS
    with _Loopback({}) as server:
        for n in range(hops):
            server.routes[f"/hop/{n}"] = (302, {"Location": f"/hop/{n + 1}"}, b"")
        server.routes[f"/hop/{hops}"] = (200, {"Content-Type": "application/json"}, b'{"ok": true}')
        checked = _allow_only(monkeypatch, *(server.url(f"/hop/{n}") for n in range(hops + 1)))
        result = ssrf.fetch("GET", server.url("/hop/0"))
    assert result["status"] == 200 and result["data"] == {"ok": True}
    assert [path for _, path, _ in server.received] == [f"/hop/{n}" for n in range(hops + 1)]
    assert checked == [server.url(f"/hop/{n}") for n in range(hops + 1)]  # every hop went through the guard


def test_ssrf_fetch_refuses_one_redirect_more_than_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    hops = MAX_HTTP_REDIRECTS + 1
    with _Loopback({}) as server:
        for n in range(hops):
            server.routes[f"/hop/{n}"] = (302, {"Location": f"/hop/{n + 1}"}, b"")
        server.routes[f"/hop/{hops}"] = (200, {}, b"reached")
        _allow_only(monkeypatch, *(server.url(f"/hop/{n}") for n in range(hops + 1)))
        with pytest.raises(ssrf.SSRFError, match=f"more than {MAX_HTTP_REDIRECTS} redirects"):
            ssrf.fetch("GET", server.url("/hop/0"))
    assert [path for _, path, _ in server.received] == [f"/hop/{n}" for n in range(hops)]  # last never asked


def test_ssrf_fetch_303_turns_into_a_get_without_body_and_307_keeps_both(monkeypatch: pytest.MonkeyPatch) -> None:
    with _Loopback({}) as server:
        server.routes["/see-other"] = (303, {"Location": "/result"}, b"")
        server.routes["/temporary"] = (307, {"Location": "/result"}, b"")
        server.routes["/result"] = (200, {}, b"done")
        _allow_only(monkeypatch, *(server.url(p) for p in ("/see-other", "/temporary", "/result")))
        assert ssrf.fetch("POST", server.url("/see-other"), {"a": 1})["data"] == "done"
        assert server.received == [("POST", "/see-other", b'{"a": 1}'), ("GET", "/result", b"")]
        server.received.clear()
        assert ssrf.fetch("POST", server.url("/temporary"), {"a": 1})["data"] == "done"
        assert server.received == [("POST", "/temporary", b'{"a": 1}'), ("POST", "/result", b'{"a": 1}')]


def test_ssrf_fetch_caps_the_response_size(monkeypatch: pytest.MonkeyPatch) -> None:
    with _Loopback({}) as server:
        server.routes["/at-cap"] = (200, {}, b"x" * MAX_HTTP_RESPONSE_BYTES)
        server.routes["/over-cap"] = (200, {}, b"x" * (MAX_HTTP_RESPONSE_BYTES + 1))
        _allow_only(monkeypatch, server.url("/at-cap"), server.url("/over-cap"))
        assert len(ssrf.fetch("GET", server.url("/at-cap"))["data"]) == MAX_HTTP_RESPONSE_BYTES
        with pytest.raises(ssrf.SSRFError, match=f"larger than {MAX_HTTP_RESPONSE_BYTES} bytes"):
            ssrf.fetch("GET", server.url("/over-cap"))


def test_switchers_reach_the_host_once_each_and_clear() -> None:
    r = run('''ADD SWITCHER "tables" AS "Tables"
ADD SWITCHER "tables" AS "Tables again"
ADD SWITCHER "Answer in one sentence"
TALK "offered"''')
    assert r.host.switchers == [{"id": "tables", "label": "Tables"},
                                {"id": "Answer in one sentence", "label": "Answer in one sentence"}]
    cleared = run('ADD SWITCHER "list" AS "List"\nCLEAR SWITCHERS\nTALK "none"')
    assert cleared.host.switchers == [] and cleared.host.messages == ["none"]
    empty = run('ADD SWITCHER ""')
    assert empty.result.status == "error" and "needs an id" in empty.result.error["message"]
