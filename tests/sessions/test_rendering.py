"""apps.sessions.rendering: what the web chat shows is never live markup from a visitor, a script or an LLM.

The output is parsed like a browser would (html.parser) and checked structurally: only allow-listed tags,
only allowed attributes, links only to http(s)/mailto; and the payload's characters are still there as text.
"""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from apps.sessions.rendering import (
    ALLOWED_TAGS,
    SUGGESTIONS_MAX,
    message_dict,
    message_fragment,
    render_markdown,
    status_fragment,
    stream_delta_fragment,
    stream_start_fragment,
    strip_think,
    suggestions_fragment,
    typing_fragment,
)

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=/static/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    '"><img src=x onerror=alert(1)>',
    "'><script>alert(1)</script>",
    '<a href="javascript:alert(1)">click</a>',
    "[click](javascript:alert(1))",
    "[click](JAVASCRIPT:alert(1))",
    "[click](  javascript:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[click](vbscript:msgbox(1))",
    '[click](https://example.com/"onmouseover="alert(1))',
    "![x](javascript:alert(1))",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<div hx-get="/x" hx-trigger="load">htmx</div>',
    '<form ws-send hx-vals=\'{"content":"pwn"}\'><button>go</button></form>',
    '<div hx-swap-oob="beforeend:#messages">forged</div>',
    "<style>body{display:none}</style>",
    '<p style="background:url(javascript:alert(1))">styled</p>',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;img src=x onerror=alert(1)&#62;",
    "<!--<img src=x onerror=alert(1)>-->",
    "<think><script>alert(1)</script></think>visible",
    "```html\n<script>alert(1)</script>\n```",
    "<details open ontoggle=alert(1)>",
    "<body onload=alert(1)>",
]

# Attributes anything rendered may carry: the fragments' own structure plus the sanitiser's allow-list.
STRUCTURAL_ATTRIBUTES = {"id", "class", "data-index", "data-role", "data-stream", "hx-swap-oob", "hx-disable",
                         "datetime", "role", "hidden", "aria-busy", "type", "ws-send", "hx-vals"}
STRUCTURAL_TAGS = {"div", "article", "footer", "time", "span", "ul", "li", "button"}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(markup: str) -> _Collector:
    collector = _Collector()
    collector.feed(markup)
    collector.close()
    return collector


def _assert_inert(markup: str, *, allowed_tags=ALLOWED_TAGS) -> _Collector:
    parsed = _parse(markup)
    for tag, attrs in parsed.tags:
        assert tag in allowed_tags, f"tag <{tag}> in {markup!r}"
        for name, value in attrs.items():
            assert not name.startswith("on"), f"event handler {name} in {markup!r}"
            assert name not in {"style", "src", "srcdoc", "formaction", "action"}, f"{name} in {markup!r}"
            if name == "href":
                assert value and value.split(":", 1)[0].lower() in {"http", "https", "mailto"}, markup
                assert not any(c in value for c in "\"'<> "), f"href breaks out: {value!r}"
            if tag in ALLOWED_TAGS and tag not in STRUCTURAL_TAGS:
                assert name in {"href", "rel", "start"}, f"attribute {name} on <{tag}> in {markup!r}"
    return parsed


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_bot_text_never_becomes_live_markup(payload):
    _assert_inert(render_markdown(payload))


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
@pytest.mark.parametrize("role", ["user", "bot"])
def test_message_fragment_is_inert_for_both_roles(payload, role):
    fragment = message_fragment({"index": 3, "role": role, "content": payload, "created_at": "2026-11-21T08:00:00Z",
                                 "citations": [{"source": payload, "kb": payload}], "tool": payload})
    parsed = _assert_inert(fragment, allowed_tags=ALLOWED_TAGS | STRUCTURAL_TAGS)
    # Only our own swap instruction: one wrapper appending to #messages, and the message's own id.
    oob = [attrs["hx-swap-oob"] for _, attrs in parsed.tags if "hx-swap-oob" in attrs]
    assert oob == ["beforeend:#messages"]
    ids = [attrs["id"] for _, attrs in parsed.tags if "id" in attrs]
    assert ids == ["msg-3"]
    assert not any("ws-send" in attrs or "hx-vals" in attrs for _, attrs in parsed.tags)


RAW_HTML_PAYLOADS = [p for p in XSS_PAYLOADS if p.startswith("<") and not p.startswith(("<think", "<!--"))]


@pytest.mark.parametrize("payload", RAW_HTML_PAYLOADS)
def test_raw_html_in_bot_text_shows_as_the_characters_typed(payload):
    text = "".join(_parse(render_markdown(payload)).text)
    assert payload.split(">")[0] in text  # e.g. "<img src=x onerror=alert(1)" visible, not executed


def test_user_text_is_escaped_verbatim_with_line_breaks():
    content = "line one\n<b>bold?</b> & **not markdown**\n  indented"
    fragment = message_fragment({"index": 0, "role": "user", "content": content, "created_at": ""}, oob=False)
    parsed = _parse(fragment)
    assert [tag for tag, _ in parsed.tags] == ["article", "div"]
    assert "".join(parsed.text) == content
    assert 'class="msg-body msg-plain"' in fragment  # white-space: pre-wrap keeps the line breaks


def test_entities_are_text_not_markup():
    html = render_markdown("&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp;")
    assert "<script" not in html
    assert "".join(_parse(html).text) == "<script>alert(1)</script> &amp;"


def test_think_stripping_of_many_unclosed_think_tags_is_linear():
    """A TALK of "<think " repeated (a fetched page, pasted answers) rendered on the consumer's event loop: each
    "<think" without ">" scanned to the end of the text (about 6 s for these 210 KB, minutes for a megabyte).
    An opening tag now ends before the next "<": a "<think" that is no tag stays text, and the look for its ">"
    stops at the next "<", so the text is scanned once, not once per "<think"."""
    assert strip_think("keep <think a <b>bold</b> <think>plan</think>answer") == "keep <think a <b>bold</b> answer"
    payload = "<think " * 30_000
    assert strip_think(payload) == payload


def test_think_blocks_are_removed_even_unterminated():
    assert render_markdown("<think>plan: say hi</think>Hello") == "<p>Hello</p>"
    assert render_markdown("<THINK a='1'>x\ny</THINK>\n\nHi <think>more</think>there") == "<p>Hi there</p>"
    assert render_markdown("Answer first. <think>still reasoning when the stream stopped") == "<p>Answer first.</p>"


def test_markdown_features_are_kept():
    html = render_markdown(
        "### Title\n\nSome **bold**, *em*, `code` and [a link](https://example.com/x?a=1&b=2).\n\n"
        "- one\n- two\n\n3. three\n4. four\n\n> quoted\n\n```\nx < y\n```\n\n| a | b |\n|---|--:|\n| 1 | 2 |\n\n"
        "mail [me](mailto:me@example.com)"
    )
    tags = [tag for tag, _ in _parse(html).tags]
    for tag in ["h3", "strong", "em", "code", "a", "ul", "li", "ol", "blockquote", "pre", "table", "th", "td"]:
        assert tag in tags, tag
    assert '<a href="https://example.com/x?a=1&amp;b=2" rel="noopener noreferrer nofollow">a link</a>' in html
    assert '<ol start="3">' in html
    assert "x &lt; y" in html
    assert 'href="mailto:me@example.com"' in html
    assert "style=" not in html  # table alignment would need a style attribute, which CSP blocks


def test_links_other_than_http_https_mailto_lose_their_target():
    html = render_markdown("[rel](/admin/) [ftp](ftp://example.com/f) [ok](http://example.com/)")
    hrefs = [attrs.get("href") for tag, attrs in _parse(html).tags if tag == "a"]
    assert hrefs == [None, None, "http://example.com/"]
    assert "target=" not in render_markdown("[x](https://example.com)")


def test_images_become_links_named_by_their_alt_text():
    html = render_markdown("![the chart](https://example.com/c.png)")
    assert html == '<p><a href="https://example.com/c.png" rel="noopener noreferrer nofollow">the chart</a></p>'


def test_citations_and_tool_are_listed_as_text():
    fragment = message_fragment({
        "index": 7, "role": "bot", "content": "Answer", "created_at": "2026-11-21T08:05:09+00:00",
        "citations": [{"source": "policy.pdf", "kb": "hr"}, {"source": ""}], "tool": "book-visit",
    })
    parsed = _parse(fragment)
    text = "".join(parsed.text)
    assert "policy.pdf" in text and "hr" in text and "book-visit" in text and "08:05" in text
    assert sum(1 for tag, attrs in parsed.tags if tag == "li") == 1
    assert ('article', {"id": "msg-7", "class": "msg msg-bot", "data-index": "7", "data-role": "bot"}) in parsed.tags


def test_stream_fragments_target_one_bubble_and_escape_chunks():
    start = stream_start_fragment("s-1", text="so <far>")
    assert 'id="stream-s-1"' in start and 'hx-swap-oob="beforeend:#messages"' in start
    assert "so &lt;far&gt;" in start
    delta = stream_delta_fragment("s-1", " <img src=x onerror=alert(1)>\nmore")
    assert delta.startswith('<div hx-swap-oob="beforeend:#stream-s-1-text">')
    assert "".join(_parse(delta).text) == " <img src=x onerror=alert(1)>\nmore"
    assert [tag for tag, _ in _parse(delta).tags] == ["div"]
    final = message_fragment({"index": 4, "role": "bot", "content": "done", "created_at": "", "stream_id": "s-1"})
    assert 'data-stream="s-1"' in final and 'id="msg-4"' in final


@pytest.mark.parametrize("bad", ["", "a b", 'x"y', "#id", "a" * 65])
def test_stream_ids_outside_the_safe_alphabet_are_refused(bad):
    with pytest.raises(ValueError, match="stream id"):
        stream_delta_fragment(bad, "x")


def test_typing_and_status_fragments_toggle_visibility():
    def root_attrs(markup):
        return _parse(markup).tags[0][1]

    assert "hidden" not in root_attrs(typing_fragment(True)) and "hidden" in root_attrs(typing_fragment(False))
    assert 'id="typing"' in typing_fragment(True) and 'hx-swap-oob="true"' in typing_fragment(True)
    notice = status_fragment("Too many messages <slow down>")
    assert 'id="chat-notice"' in notice and "&lt;slow down&gt;" in notice and "hidden" not in root_attrs(notice)
    assert "hidden" in root_attrs(status_fragment(""))


class _ChipParser(HTMLParser):
    """(label, JSON the chip sends) for each button."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chips: list[tuple[str, dict]] = []
        self._current: dict | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "button":
            self._current = dict(attrs)

    def handle_data(self, data):
        if self._current is not None:
            self.chips.append((data, json.loads(self._current["hx-vals"])))
            self._current = None


def _chips(markup: str) -> list[tuple[str, dict]]:
    parser = _ChipParser()
    parser.feed(markup)
    return parser.chips


def test_suggestion_chips_send_text_context_message_or_tool():
    markup = suggestions_fragment([
        {"text": "Check price", "context": "price",
         "action": json.dumps({"type": "select_context", "context": "price"})},
        {"text": "Say hi", "action": {"type": "send_message", "message": "hello"}},
        {"text": "Book a visit", "type": "invoke_tool", "tool": "book-visit",
         "action": {"type": "invoke_tool", "tool": "book-visit", "params": None, "prompt_for_params": False}},
        {"text": 'Quote " <b>'},
        {"text": ""},
    ])
    assert markup.startswith('<div id="suggestions" class="suggestions" hx-swap-oob="true">')
    assert _chips(markup) == [
        ("Check price", {"content": "price", "message_type": 1}),
        ("Say hi", {"content": "hello", "message_type": 1}),
        ("Book a visit", {"content": "book-visit", "message_type": 6}),
        ('Quote " <b>', {"content": 'Quote " <b>', "message_type": 1}),
    ]
    assert markup.count("ws-send") == 4


def test_suggestion_chips_accept_the_basic_host_shape():
    markup = suggestions_fragment([
        {"kind": "context", "value": "pricing", "label": "Show prices"},
        {"kind": "tool", "value": "hello-tool", "label": "Run tool"},
        {"kind": "text", "value": "yes", "label": "yes"},
    ])
    assert _chips(markup) == [
        ("Show prices", {"content": "pricing", "message_type": 1}),
        ("Run tool", {"content": "hello-tool", "message_type": 6}),
        ("yes", {"content": "yes", "message_type": 1}),
    ]


def test_suggestions_are_capped_and_an_empty_list_clears_them():
    many = suggestions_fragment([{"text": f"s{i}"} for i in range(SUGGESTIONS_MAX + 5)])
    assert many.count("<button") == SUGGESTIONS_MAX
    assert suggestions_fragment([]) == '<div id="suggestions" class="suggestions" hx-swap-oob="true"></div>'


class _Row:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def test_message_dict_maps_roles_and_hides_system_tool_and_episodic_rows():
    from datetime import UTC, datetime

    when = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
    user = _Row(index=0, role=1, content="hi", created_at=when, meta={})
    bot = _Row(index=1, role=2, content="yo", created_at=when,
               meta={"citations": [{"source": "a.pdf", "kb": "docs"}, "junk"], "tool": "t"})
    assert message_dict(user) == {"index": 0, "role": "user", "content": "hi", "created_at": when.isoformat()}
    assert message_dict(bot)["citations"] == [{"source": "a.pdf", "kb": "docs"}]
    assert message_dict(bot)["tool"] == "t"
    for role in (3, 4, 9):
        assert message_dict(_Row(index=2, role=role, content="x", created_at=when, meta={})) is None


def test_switchers_render_as_escaped_toggles_with_the_active_ones_checked():
    from apps.sessions.rendering import switchers_fragment

    html = switchers_fragment([{"id": "tables", "label": "Tables <b>"}, {"id": 'x" onclick="y', "label": "X"}],
                              ["tables"])
    assert 'id="switchers"' in html and 'hx-swap-oob="true"' in html and " hidden" not in html
    assert 'value="tables" checked>Tables &lt;b&gt;' in html
    assert 'value="x&quot; onclick=&quot;y">' in html and "<b>" not in html
    assert " hidden" in switchers_fragment([])
