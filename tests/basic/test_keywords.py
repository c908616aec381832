"""World-touching keywords go to the host; tool metadata; sandbox limits; SSRF guard."""

from __future__ import annotations

import pytest

from apps.basic import ssrf
from apps.basic.compiler import compile_source
from apps.basic.host import InMemoryHost
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


def test_ssrf_fetch_rechecks_every_redirect(monkeypatch: pytest.MonkeyPatch) -> None:
    import email.message
    import urllib.error
    import urllib.request

    opened: list[str] = []

    class RedirectingOpener:
        def open(self, req: urllib.request.Request, timeout: float = 0) -> object:
            opened.append(req.full_url)
            headers = email.message.Message()
            headers["Location"] = "http://169.254.169.254/latest/meta-data"
            raise urllib.error.HTTPError(req.full_url, 302, "Found", headers, None)

    monkeypatch.setattr(urllib.request, "build_opener", lambda *a: RedirectingOpener())
    with pytest.raises(ssrf.SSRFError, match="not a public address"):
        ssrf.fetch("GET", "http://93.184.216.34/start")
    assert opened == ["http://93.184.216.34/start"]  # the metadata address was never requested


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
