"""One observable effect per keyword on the in-memory host (spec 3.5)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from apps.basic.host import InMemoryHost
from tests.basic.conftest import run

Check = Callable[[InMemoryHost, object], bool]


def _host() -> InMemoryHost:
    return InMemoryHost(
        tables={"items": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]},
        files={"docs/a.txt": "A", "docs/b.txt": "B"},
        http_responses={"https://93.184.216.34/x": {"status": 200, "headers": {}, "data": {"ok": 1}}},
        llm_reply="LLM says hi",
        config={"api-key": "k1"},
    )


CASES: list[tuple[str, str, Check]] = [
    ("TALK", 'TALK "a" + 1', lambda h, v: h.messages == ["a1"]),
    ("TALK TO", 'TALK TO "whatsapp:+5511", "hello"', lambda h, v: h.direct == [("whatsapp:+5511", "hello")]),
    ("PRINT", 'PRINT "debug", 2', lambda h, v: h.logs == ["debug 2"] and h.messages == []),
    ("LLM", 'RETURN LLM "summarise"', lambda h, v: v == "LLM says hi"),
    ("SET CONTEXT", 'SET CONTEXT "a" AS "b"', lambda h, v: h.contexts == {"a": "b"}),
    ("USE KB / CLEAR KB", 'USE KB "x"\nUSE KB "y"\nCLEAR KB "x"', lambda h, v: h.kbs == ["y"]),
    ("CLEAR KB ALL", 'USE KB "x"\nCLEAR KB ALL', lambda h, v: h.kbs == []),
    ("THINK KB", 'r = THINK KB "q"\nRETURN r.total_results', lambda h, v: v == 0),
    ("USE WEBSITE", 'USE WEBSITE "https://a.example" REFRESH "1d"\nCLEAR WEBSITES\nUSE WEBSITE "u2"',
     lambda h, v: h.websites == ["u2"]),
    ("USE TOOL / CLEAR TOOLS", 'USE TOOL "t1.bas"\nCLEAR TOOLS\nUSE_TOOL("t2")', lambda h, v: h.tools == ["t2"]),
    ("CLEAR SUGGESTIONS", 'ADD SUGGESTION "a"\nCLEAR SUGGESTIONS\nADD SUGGESTION "b"',
     lambda h, v: [s["text"] for s in h.suggestions] == ["b"]),
    ("REMEMBER / RECALL", 'REMEMBER "k", 5, "30 days"\nRETURN RECALL "k"', lambda h, v: v == 5),
    ("REMEMBER =", 'REMEMBER "k" = "v"\nRETURN RECALL("k")', lambda h, v: v == "v"),
    ("GET BOT MEMORY absent", 'RETURN GET BOT MEMORY "nope"', lambda h, v: v == ""),
    ("SET_BOT_MEMORY call form", 'SET_BOT_MEMORY("a", "b")\nRETURN GET_BOT_MEMORY("a")', lambda h, v: v == "b"),
    ("FIND all rows", 'RETURN COUNT(FIND "items")', lambda h, v: v == 2),
    ("FIND WHERE", 'x = 2\nr = FIND "items" WHERE id = x\nRETURN r.name', lambda h, v: v == "b"),
    ("SET table", 'SET "items", "id=1", "name=z"\nRETURN (FIND "items", "id=1").name', lambda h, v: v == "z"),
    ("INSERT INTO VALUES", 'INSERT INTO "t" VALUES #{ a: 1 }', lambda h, v: h.tables["t"] == [{"a": 1, "id": 1}]),
    ("DELETE FROM WHERE", 'DELETE FROM "items" WHERE id = 1', lambda h, v: [r["id"] for r in h.tables["items"]] == [2]),
    ("MERGE", 'r = MERGE "items", [#{ id: 2, name: "B" }, #{ id: 3, name: "c" }], "id"\nRETURN r',
     lambda h, v: v == {"inserted": 1, "updated": 1}),
    ("FILTER", 'r = FILTER [#{ s: 80 }, #{ s: 10 }], "s>=70"\nRETURN r', lambda h, v: v == [{"s": 80}]),
    ("GET url", 'r = GET "https://93.184.216.34/x"\nRETURN r.ok', lambda h, v: v == 1),
    ("POST", 'r = POST "https://93.184.216.34/x", #{ a: 1 }\nRETURN r.ok + r.status',
     lambda h, v: v == 201 and h.http_log[0][:3] == ("POST", "https://93.184.216.34/x", {"a": 1})),
    ("PUT/PATCH/DELETE HTTP", 'PUT "https://93.184.216.34/x", #{ a: 1 }\nPATCH "https://93.184.216.34/x", #{}\n'
     'DELETE HTTP "https://93.184.216.34/x"', lambda h, v: [m for m, *_ in h.http_log] == ["PUT", "PATCH", "DELETE"]),
    ("GRAPHQL", 'GRAPHQL "https://93.184.216.34/x", "{ q }", #{ v: 1 }',
     lambda h, v: h.http_log[0][2] == {"query": "{ q }", "variables": {"v": 1}}),
    ("CLEAR HEADERS", 'SET HEADER "A", "1"\nCLEAR HEADERS\nGET "https://93.184.216.34/x"',
     lambda h, v: h.http_log[0][3] == {}),
    ("GET config", 'RETURN GET "config", "api-key"', lambda h, v: v == "k1"),
    ("GET session path", 'RETURN GET "session.id"', lambda h, v: v == "session-1"),
    ("USER pseudo-variable", 'RETURN USER.email + "|" + BOT.name', lambda h, v: v == "user@example.com|testbot"),
    ("READ/WRITE APPEND", 'WRITE "x" TO "f.txt"\nWRITE "y" TO "f.txt" APPEND\nRETURN READ "f.txt"',
     lambda h, v: v == "xy"),
    ("LIST", 'RETURN COUNT(LIST "docs/")', lambda h, v: v == 2),
    ("COPY/MOVE/DELETE FILE", 'COPY "docs/a.txt" TO "c.txt"\nMOVE "docs/b.txt" TO "d.txt"\nDELETE FILE "c.txt"',
     lambda h, v: sorted(h.files) == ["d.txt", "docs/a.txt"]),
    ("SEND FILE", 'SEND FILE "docs/a.txt", "caption"',
     lambda h, v: h.keywords == [("SEND FILE", [None, "docs/a.txt", "caption"], {})]),
    ("SEND MAIL 2-arg", 'SEND EMAIL "a@b.c", "note"',
     lambda h, v: h.mails[0]["subject"] == h.mails[0]["body"] == "note"),
    ("SEND EMAIL TO SUBJECT BODY", 'SEND EMAIL TO "a@b.c" SUBJECT "s" BODY "b"',
     lambda h, v: (h.mails[0]["to"], h.mails[0]["subject"], h.mails[0]["body"]) == ("a@b.c", "s", "b")),
    ("BOOK", 'r = BOOK "Meet", "desc", "2024-05-20 10:00", 30, "room"\nRETURN r',
     lambda h, v: v == {"status": "booked"}),
    ("TRANSFER TO HUMAN", 'TRANSFER TO HUMAN "angry"',
     lambda h, v: h.keywords == [("TRANSFER TO HUMAN", ["angry"], {})]),
    ("NEW OBJECT", 'o = NEW OBJECT\no.a = 1\nRETURN o', lambda h, v: v == {"a": 1}),
    ("JSON PARSE", 'RETURN (JSON PARSE "{""a"": [1]}").a[0]', lambda h, v: v == 1),
    ("nested member assignment creates maps", 'cfg.db.host = "x"\nRETURN cfg', lambda h, v: v == {"db": {"host": "x"}}),
    ("array append by index", 'a = [1]\na[UBOUND(a) + 1] = 2\nRETURN a', lambda h, v: v == [1, 2]),
    ("method-call push", 'a = []\na.PUSH(3)\nRETURN a', lambda h, v: v == [3]),
    ("ternary and coalesce", 'RETURN (1 > 0 ? "y" : "n") + (missing ?? "d")', lambda h, v: v == "yd"),
    ("CONTAINS / STARTS WITH / LIKE", 'RETURN ("abc" CONTAINS "b") AND ("abc" STARTS WITH "a") AND ("Abc" LIKE "a%")',
     lambda h, v: v is True),
    ("RETURN WITH", 'RETURN WITH error AS "nope"', lambda h, v: v == {"error": "nope"}),
]


@pytest.mark.parametrize(("script", "check"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_keyword_effect(script: str, check: Check) -> None:
    host = _host()
    r = run(script, host=host)
    assert r.result.status == "done", r.result.error
    assert check(host, r.result.value)
