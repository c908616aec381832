"""HTML fragments of the HTMX web chat: what the page renders and what the `/ws/<bot>/ui` consumer pushes.

Pure functions (no I/O, no database): the page view and the WebSocket consumer both call them, so a message
looks the same whether it was rendered with the page or arrived over the socket.

Failure mode prevented: text from a visitor, from a script (TALK) or from an LLM becoming live markup in
the page (stored XSS in every other visitor's or operator's browser). Every text goes through one of two
doors: `html.escape` (user text, streamed chunks, labels) or `render_markdown` (bot text), which renders
Markdown with raw HTML switched off and then sanitises the result with an allow-list. The Content-Security-
Policy (no inline script, no eval) is the second wall, `hx-disable` on message bodies the third: htmx
never processes attributes inside a message, even if one slipped through.

Client protocol of `/ws/<bot>/ui?session_id=<uuid>&token=<token>` (HTML over WebSocket, htmx-ext-ws)
--------------------------------------------------------------------------------------------------------
The page (apps.sessions.views_web) renders the history up to some index, then connects. `token` proves that
this page was handed this session id by the server (views_web.chat_ws_token_state); refuse the handshake
when it does not match (close code 4403: the client does not retry on 4xxx codes).

Client -> server, JSON text frames:

* `{"type": "resume", "last_index": N}`: always the first frame after every (re)connect, sent by
  static/chat/chat.js on `htmx:wsOpen`. N is the highest `data-index` present in `#messages`, or -1.
  The server answers, in this order and before any live event of this connection:
  1. `message_fragment(m)` for every shown message of the session with index > N, in index order
     (roles user and bot only: `message_dict(row)` returns None for the others);
  2. if a bot answer is streaming right now: `stream_start_fragment(stream_id, text=<text so far>)`
     (the client drops every streaming bubble when it reconnects, so the stream restarts whole);
  3. `typing_fragment(...)` with the current state and `suggestions_fragment(<current suggestions>)`.
  Then live events follow. A fragment for an index the page already has replaces that message in place
  and never duplicates it (chat.js), so overlapping replay and live delivery are harmless.
* `{"content": "<text>", "message_type": 1, "HEADERS": {...}}`: the message form (htmx sends the form
  fields as JSON; `message_type` is a JSON number from `hx-vals`; ignore `HEADERS`, htmx's request
  headers). A suggestion chip sends `{"content": <text>, "message_type": 1}` or, for a tool suggestion,
  `{"content": "<tool name>", "message_type": 6}` (spec 6.3 step 5). Accept `message_type` as a number
  or a numeric string; an empty or whitespace-only `content` is never sent by the page.

Server -> client, text frames of HTML: one or more top-level elements, each carrying `hx-swap-oob`
(htmx-ext-ws swaps every top-level element out of band; several fragments may be concatenated into one
frame, e.g. the final message + `typing_fragment(False)` + `suggestions_fragment(...)`):

* `message_fragment(m)`: every persisted message, the visitor's own included: the page does not render
  the user's text locally, the server echoes it once saved, with its index.
* `typing_fragment(True)` when a turn starts, `typing_fragment(False)` when it ends.
* `stream_start_fragment(sid)`, then `stream_delta_fragment(sid, chunk)` per chunk (escaped text appended
  to the bubble), then `message_fragment({... "stream_id": sid})` with the saved message: it takes the
  streaming bubble's place (chat.js), so the answer is never shown twice.
* `suggestions_fragment(list)` after each turn (an empty list clears the chips).
* `status_fragment(text)` for errors and limits (`status_fragment("")` clears it).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import nh3
from django.utils.translation import gettext as _
from markdown_it import MarkdownIt

# Tags a bot message may contain after rendering: Markdown's output, nothing that loads or runs anything
# (no img: a remote image is a tracking pixel and CSP would block it anyway; images become links).
ALLOWED_TAGS = frozenset({
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
})
ALLOWED_ATTRIBUTES = {"a": {"href"}, "ol": {"start"}}
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer nofollow"
# Cap on a rendered message: an LLM loop or a script printing megabytes must not freeze every browser
# showing the conversation. Longer text is cut with a visible marker.
RENDER_MAX_CHARS = 100_000
# Spec 3.5.5: the web client shows at most 10 suggestion buttons.
SUGGESTIONS_MAX = 10
# Stream ids end up in element ids and CSS selectors: keep them to a plain alphabet.
STREAM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# Reasoning models wrap their chain of thought in <think>; spec 6.5 says the client never shows it. An
# unterminated block (answer cut off while still thinking) is reasoning to the end.
# The opening tag's attributes stop at the next "<" too: with `[^>]*` every "<think" lacking a ">" scanned to
# the end of the text, quadratic in a TALK of "<think " repeated (seconds per 100 KB, on the event loop).
THINK_RE = re.compile(r"<think\b[^<>]*>.*?(?:</think\s*>|\Z)", re.IGNORECASE | re.DOTALL)
# Message.role values (apps.sessions.models) shown in the chat; system, tool and episodic rows are not.
ROLE_USER, ROLE_ASSISTANT = 1, 2
MESSAGE_TYPE_USER, MESSAGE_TYPE_TOOL_EXEC = 1, 6


def _markdown_renderer() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable(["table", "strikethrough"])

    def image_as_link(self, tokens, idx, options, env) -> str:
        # `![alt](url)` shows as a link named by its alt text; sanitising then vets the URL like any link.
        token = tokens[idx]
        alt = self.renderInlineAsText(token.children or [], options, env) or token.attrGet("src") or ""
        return f'<a href="{html.escape(str(token.attrGet("src") or ""))}">{html.escape(alt)}</a>'

    md.add_render_rule("image", image_as_link)
    return md


def _link_filter(tag: str, attribute: str, value: str) -> str | None:
    if tag == "a" and attribute == "href":
        scheme = value.split(":", 1)[0].lower() if ":" in value else ""
        return value if scheme in LINK_SCHEMES else None
    return value


_MARKDOWN = _markdown_renderer()
_SANITIZER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags={"script", "style"},
    attributes={tag: set(names) for tag, names in ALLOWED_ATTRIBUTES.items()},
    attribute_filter=_link_filter,
    link_rel=LINK_REL,
    url_schemes=set(LINK_SCHEMES),
    url_relative="deny",
    strip_comments=True,
)


def strip_think(text: str) -> str:
    """`text` without `<think>...</think>` reasoning blocks (spec 6.5)."""
    return THINK_RE.sub("", text)


def _bounded(text: str) -> str:
    return text if len(text) <= RENDER_MAX_CHARS else text[:RENDER_MAX_CHARS] + " […]"


def render_markdown(text: str) -> str:
    """Safe HTML for a bot message: Markdown with raw HTML shown as text, then allow-list sanitising.

    HTML in `text` (a TALK of `<script>`, an LLM answer with `<img onerror>`) is escaped by the Markdown
    renderer and so displays as the characters typed; the sanitiser then removes anything outside the
    allow-list that Markdown itself produced (style attributes, images, non-http(s)/mailto links).
    """
    rendered = _MARKDOWN.render(_bounded(strip_think(text or "")))
    return _SANITIZER.clean(rendered).strip()


def render_plain(text: str) -> str:
    """Escaped text (user messages, chunks): shown verbatim; line breaks kept by CSS (pre-wrap)."""
    return html.escape(_bounded(text or ""), quote=True)


def _attr(value: object) -> str:
    return html.escape(str(value), quote=True)


def _stream_id(stream_id: str) -> str:
    if not STREAM_ID_RE.match(stream_id or ""):
        raise ValueError(f"stream id {stream_id!r}: expected 1-64 letters, digits, '-' or '_'")
    return stream_id


def _oob_append(inner: str) -> str:
    # htmx swaps the *children* of an out-of-band element for every swap style but outerHTML, hence the
    # wrapper: its one child (the message) is appended to #messages.
    return f'<div hx-swap-oob="beforeend:#messages">{inner}</div>'


def _citations_html(citations: Iterable[Mapping[str, Any]]) -> str:
    items = []
    for citation in citations:
        source = str(citation.get("source") or "").strip()
        if not source:
            continue
        kb = str(citation.get("kb") or "").strip()
        kb_html = f' <span class="msg-kb">{render_plain(kb)}</span>' if kb else ""
        items.append(f"<li>{render_plain(source)}{kb_html}</li>")
    if not items:
        return ""
    return (f'<div class="msg-citations"><span class="msg-citations-title">{render_plain(_("Sources"))}</span>'
            f'<ul>{"".join(items)}</ul></div>')


def message_html(msg: Mapping[str, Any]) -> str:
    """One message bubble (no swap instruction): `<article id="msg-<index>" data-index=...>`.

    `msg`: {"index": int, "role": "user" | "bot", "content": str, "created_at": ISO str,
    "citations": [{"source", "kb"}] (optional), "tool": tool name (optional), "stream_id": the stream
    this message completes (optional)}.
    """
    index = int(msg["index"])
    role = "user" if msg.get("role") == "user" else "bot"
    if role == "user":
        body = f'<div class="msg-body msg-plain" hx-disable>{render_plain(str(msg.get("content") or ""))}</div>'
    else:
        body = f'<div class="msg-body" hx-disable>{render_markdown(str(msg.get("content") or ""))}</div>'
    stream = ""
    if msg.get("stream_id"):
        stream = f' data-stream="{_attr(_stream_id(str(msg["stream_id"])))}"'
    meta = []
    created_at = str(msg.get("created_at") or "")
    if created_at:
        # The HH:MM of the ISO timestamp as sent; chat.js may localise it.
        clock = created_at[11:16] if len(created_at) >= 16 else created_at
        meta.append(f'<time datetime="{_attr(created_at)}">{render_plain(clock)}</time>')
    if msg.get("tool"):
        meta.append(f'<span class="msg-tool">{render_plain(str(msg["tool"]))}</span>')
    meta_html = f'<footer class="msg-meta">{" ".join(meta)}</footer>' if meta else ""
    return (
        f'<article id="msg-{index}" class="msg msg-{role}" data-index="{index}" data-role="{role}"{stream}>'
        f"{body}{_citations_html(msg.get('citations') or ())}{meta_html}</article>"
    )


def message_fragment(msg: Mapping[str, Any], *, oob: bool = True) -> str:
    """A message for the socket (appended to #messages out of band), or with `oob=False` for the page."""
    return _oob_append(message_html(msg)) if oob else message_html(msg)


def message_dict(row: Any) -> dict[str, Any] | None:
    """The `msg` dict of a Message row (already loaded), or None for rows the chat does not show."""
    if row.role not in (ROLE_USER, ROLE_ASSISTANT):
        return None
    meta = row.meta if isinstance(getattr(row, "meta", None), dict) else {}
    created_at = row.created_at.isoformat() if getattr(row, "created_at", None) else ""
    msg: dict[str, Any] = {
        "index": row.index,
        "role": "user" if row.role == ROLE_USER else "bot",
        "content": row.content or "",
        "created_at": created_at,
    }
    citations = meta.get("citations")
    if isinstance(citations, list):
        msg["citations"] = [c for c in citations if isinstance(c, dict)]
    tool_calls = meta.get("tool_calls")
    if isinstance(meta.get("tool"), str):
        msg["tool"] = meta["tool"]
    elif isinstance(tool_calls, list) and tool_calls and isinstance(tool_calls[0], dict):
        msg["tool"] = ", ".join(str(call.get("name") or "") for call in tool_calls if isinstance(call, dict))
    return msg


def stream_start_fragment(stream_id: str, text: str = "") -> str:
    """An empty streaming bubble (or one holding `text`, the answer so far, for a client that reconnects
    mid-stream), appended to #messages; sent again it replaces itself (chat.js)."""
    sid = _stream_id(stream_id)
    return _oob_append(
        f'<article id="stream-{sid}" class="msg msg-bot msg-streaming" data-role="bot" aria-busy="true">'
        f'<div class="msg-body msg-plain" hx-disable><span id="stream-{sid}-text">{render_plain(text)}</span>'
        f"</div></article>"
    )


def stream_delta_fragment(stream_id: str, text: str) -> str:
    """A chunk of the streaming answer, appended as text to its bubble."""
    sid = _stream_id(stream_id)
    return f'<div hx-swap-oob="beforeend:#stream-{sid}-text">{render_plain(text)}</div>'


def typing_fragment(on: bool) -> str:
    """The typing indicator, shown or hidden."""
    hidden = "" if on else " hidden"
    return (
        f'<div id="typing" class="typing" role="status" hx-swap-oob="true"{hidden}>'
        f'<span class="typing-dot"></span><span class="typing-dot"></span><span class="typing-dot"></span>'
        f'<span class="visually-hidden">{render_plain(_("The bot is typing…"))}</span></div>'
    )


def _suggestion_action(suggestion: Mapping[str, Any]) -> dict[str, Any]:
    action = suggestion.get("action")
    if isinstance(action, str):  # upstream frames carry the action as a JSON string (spec 6.4)
        try:
            action = json.loads(action)
        except ValueError:
            action = None
    return action if isinstance(action, dict) else {}


def suggestion_label(suggestion: Mapping[str, Any]) -> str:
    return str(suggestion.get("text") or suggestion.get("label") or "")


def suggestion_payload(suggestion: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a chip sends (spec 6.5 "Suggestion click"), or None for a chip with nothing to send.

    Accepts the upstream frame shape (spec 6.4: `text`, `action` as a JSON string or dict, `context`,
    `tool`) and the BASIC host's shape (`kind` "text" | "context" | "tool", `value`, `label`).
    """
    label = suggestion_label(suggestion)
    if suggestion.get("kind") in ("text", "context", "tool") and "action" not in suggestion:
        value = str(suggestion.get("value") or label)
        if suggestion["kind"] == "tool":
            return {"content": value, "message_type": MESSAGE_TYPE_TOOL_EXEC} if value.strip() else None
        return {"content": value, "message_type": MESSAGE_TYPE_USER} if value.strip() else None
    action = _suggestion_action(suggestion)
    kind = action.get("type") or suggestion.get("type")
    if kind == "invoke_tool":
        tool = str(action.get("tool") or suggestion.get("tool") or "")
        return {"content": tool, "message_type": MESSAGE_TYPE_TOOL_EXEC} if tool else None
    if kind == "send_message" and action.get("message"):
        content = str(action["message"])
    elif kind == "select_context" and (action.get("context") or suggestion.get("context")):
        content = str(action.get("context") or suggestion.get("context"))
    else:
        content = label
    return {"content": content, "message_type": MESSAGE_TYPE_USER} if content.strip() else None


def suggestions_html(suggestions: Iterable[Mapping[str, Any]], *, oob: bool = False) -> str:
    """The #suggestions container with one button per suggestion (at most SUGGESTIONS_MAX).

    Each chip is a `ws-send` button whose `hx-vals` holds the JSON it sends; htmx reads hx-vals as JSON
    (no eval) and the chips sit inside the ws-connect element, so htmx wires them when they are swapped in.
    """
    chips = []
    for suggestion in suggestions:
        payload = suggestion_payload(suggestion)
        if payload is None:
            continue
        label = suggestion_label(suggestion) or payload["content"]
        kind = "tool" if payload["message_type"] == MESSAGE_TYPE_TOOL_EXEC else "text"
        chips.append(
            f'<button type="button" class="chip chip-{kind}" ws-send hx-vals="{_attr(json.dumps(payload))}">'
            f"{render_plain(label)}</button>"
        )
        if len(chips) == SUGGESTIONS_MAX:
            break
    swap = ' hx-swap-oob="true"' if oob else ""
    return f'<div id="suggestions" class="suggestions"{swap}>{"".join(chips)}</div>'


def suggestions_fragment(suggestions: Iterable[Mapping[str, Any]]) -> str:
    """The chips for the socket: replaces #suggestions (an empty list clears it)."""
    return suggestions_html(suggestions, oob=True)


def switchers_html(switchers: Iterable[Mapping[str, Any]], active: Iterable[str] = (), *, oob: bool = False) -> str:
    """The #switchers toggles (spec 3.5.5): chat.js sends the checked ids with every message."""
    active = set(active)
    boxes = []
    for switcher in switchers:
        switcher_id = str(switcher.get("id") or "")
        if not switcher_id:
            continue
        label = str(switcher.get("label") or switcher_id)
        checked = " checked" if switcher_id in active else ""
        boxes.append(f'<label class="switcher"><input type="checkbox" value="{_attr(switcher_id)}"{checked}>'
                     f"{render_plain(label)}</label>")
    swap = ' hx-swap-oob="true"' if oob else ""
    hidden = "" if boxes else " hidden"
    return (f'<div id="switchers" class="switchers" role="group" aria-label="{_attr(_("Answer format"))}"'
            f'{swap}{hidden}>{"".join(boxes)}</div>')


def switchers_fragment(switchers: Iterable[Mapping[str, Any]], active: Iterable[str] = ()) -> str:
    """The toggles for the socket: replaces #switchers (an empty list hides it)."""
    return switchers_html(switchers, active, oob=True)


def status_fragment(text: str, *, level: str = "error") -> str:
    """A notice above the input (errors, limits); an empty text hides it."""
    level = level if level in ("error", "info") else "error"
    hidden = "" if text else " hidden"
    role = "alert" if level == "error" else "status"
    return (f'<div id="chat-notice" class="notice notice-{level}" role="{role}" hx-swap-oob="true"{hidden}>'
            f"{render_plain(text)}</div>")
