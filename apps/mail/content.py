"""Mail content, both ways: composing a MIME message to send, and reading a received one (pure functions).

Failure modes this module prevents:

* Header injection: a subject or address from a script cannot add headers (CR/LF are folded to spaces,
  addresses are checked one by one).
* A mail that only HTML readers can read: every message has a text part; when only HTML is given the
  text is derived from it, and both go out as multipart/alternative.
* Memory and drive exhaustion by received mail: attachments are counted and size-limited by the caller's
  limits; the text handed to the bot is capped.
* Mail loops between auto-responders: `reply_refusal` names messages that must not be answered
  (auto-submitted, bulk/list, bounces, the bot's own address), per RFC 3834.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
import mimetypes
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from html.parser import HTMLParser

from celery.exceptions import SoftTimeLimitExceeded

# The text a bot receives from one mail: a chat turn, not a document. Longer bodies are cut with a note.
BODY_TEXT_MAX_CHARS = 20_000
# RFC 5322 caps a header line at 998 characters.
SUBJECT_MAX_CHARS = 998
# Message-IDs are stored and matched (IncomingMail.message_id, chat thread keys) up to this length; a longer one
# by a digest of it (message_id_key). Mail we send names the ids whole: one id fits on an In-Reply-To line of
# 998 characters; References keeps the thread's first id and the newest ones, within REFERENCES_MAX_CHARS.
MESSAGE_ID_KEY_MAX_CHARS = 255
THREAD_ID_MAX_CHARS = SUBJECT_MAX_CHARS - len("In-Reply-To: ")
REFERENCES_MAX_CHARS = 8000
# The thread headers of a composed mail fold only past that limit, at the spaces between ids: folded at 78,
# an id longer than the line (Outlook's run near 90 characters) was RFC 2047-encoded in In-Reply-To and
# References, no longer a msg-id, and the reply left the thread.
UNFOLDED_HEADERS = frozenset({"in-reply-to", "references"})
_THREAD_HEADER_POLICY = email.policy.SMTP.clone(max_line_length=SUBJECT_MAX_CHARS)
# Every other header is folded as under policy.SMTP, at this length: at 998 a long non-ASCII Subject or From
# name became one encoded-word of hundreds of characters, past RFC 2047's 75 (clients show it raw); and the
# standard folder fills a continuation line (" " + encoded-word) up to the line length, so at 78 a word
# could be 77.
HEADER_MAX_LINE = 76


class _ComposePolicy(email.policy.EmailPolicy):
    """policy.SMTP folding at HEADER_MAX_LINE, except UNFOLDED_HEADERS: only past RFC 5322's 998 characters."""

    def fold(self, name, value):
        if name.lower() in UNFOLDED_HEADERS:
            return _THREAD_HEADER_POLICY.fold(name, value)
        return super().fold(name, value)

    def fold_binary(self, name, value):
        if name.lower() in UNFOLDED_HEADERS:
            return _THREAD_HEADER_POLICY.fold_binary(name, value)
        return super().fold_binary(name, value)


# What a composed mail is built and written with (as_bytes() and smtplib's send_message use the message's
# own). Bodies are encoded at compose time (base64 and quoted-printable lines of 76, as RFC 2045 requires).
HEADER_POLICY = _ComposePolicy(linesep="\r\n", max_line_length=HEADER_MAX_LINE)
REPLY_PREFIX = "Re: "

_HTML_SKIPPED = frozenset({"script", "style", "head", "title", "noscript", "template"})
_HTML_BLOCKS = frozenset({"p", "div", "section", "article", "header", "footer", "blockquote", "pre", "table",
                          "tr", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "form", "dl", "dt", "dd"})
_REPLY_PREFIX_RE = re.compile(r"^\s*(re|aw|sv|res)\s*:\s*", re.IGNORECASE)
_FILENAME_UNSAFE_RE = re.compile(r"[^A-Za-z0-9._ -]+")
_HEADER_FOLD_RE = re.compile(r"[\r\n]+[ \t]*")
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")
# Senders that are mail systems, not people (bounces): never answered.
_SYSTEM_SENDERS = ("mailer-daemon@", "postmaster@")
# The structure of a received mail, checked by a cheap scan before the standard parser reads it: that parser's
# time grows with lines x nesting depth and with the number of parts (a 25 MB mail nested 900 levels deep, or
# split into 700,000 empty parts, holds a worker for many minutes). Real mail nests a handful of levels
# (mixed > related > alternative, a forwarded message or two) and has tens of parts at most.
MIME_MAX_DEPTH = 15
MIME_MAX_PARTS = 500
# Header sizes, checked by a cheap scan before the standard parser reads a mail (message_headers_check). Its
# header parser (policy.default) slices the rest of a value at every token, so its time grows with tokens x
# length, and each part's Content-Type is parsed several times: one `Content-Type: multipart/mixed;
# boundary=b;;;...` of 16 KB held a worker 13 s (64 KB: minutes), a From of 64 KB of commas 57 s, and a part
# with a 4 KB filename of quotes 2 s, each time the mail was polled. Refused, recorded with the reason:
# * any header of the top-level block over HEADER_MAX_BYTES (the header values read from it are bounded again:
#   ids by a linear regex, From from its first ADDRESS_HEADER_MAX_CHARS, Subject from its first
#   SUBJECT_READ_MAX_CHARS);
# * a Content-Type / Content-Disposition / Content-Transfer-Encoding header, anywhere in the mail (parts and
#   forwarded messages; text that merely looks like one counts too), over MIME_HEADER_MAX_BYTES, or with
#   more than MIME_HEADER_MAX_SEPARATORS separators (the characters that make tokens: `;` `"` `(` `)` `\` `,`
#   `<` `>` `@` `:` `[` `]` `?` `=` and runs of white space), or more than MIME_HEADERS_MAX_SEPARATORS in all.
# Real mail stays far below: a part's headers have about fifteen separators, a 250-character non-ASCII file
# name split by RFC 2231 about 150 in 3 KB. Within these limits the worst mail measured parses in 1.5 s.
HEADER_MAX_BYTES = 64 * 1024
MIME_HEADER_MAX_BYTES = 8 * 1024
MIME_HEADER_MAX_SEPARATORS = 256
MIME_HEADERS_MAX_SEPARATORS = 12_000
ADDRESS_HEADER_MAX_CHARS = 2048
SUBJECT_READ_MAX_CHARS = 8 * 1024
_MIME_HEADER_RE = re.compile(
    rb"(?:\A|[\r\n])(?P<name>content-(?:type|disposition|transfer-encoding)):"
    rb"(?P<value>[^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*)",
    re.IGNORECASE)
_SEPARATOR_RE = re.compile(rb'[;"()\\,<>@:\[\]?=]|\s+')
# One header of the top-level block with its folded lines, as the standard parser splits them (a lone CR
# breaks lines too); the block ends at the first line that is neither a header nor a continuation.
_TOP_HEADER_RE = re.compile(
    rb"(?P<name>[\x21-\x39\x3b-\x7e]+):(?P<value>[^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*)(?:\r\n|\r|\n|\Z)")
# Lines the parser passes over inside the block: an mbox "From " line, and continuation lines before the first
# header.
_SKIPPED_LINE_RE = re.compile(rb"(?:From |[ \t])[^\r\n]*(?:\r\n|\r|\n|\Z)")
# What the scan looks at, at the start of any line (the parser also breaks lines at a lone CR): boundary
# lines (`--...`), and Content-Type headers of containers (multipart/*, message/*) with their folded lines.
_MIME_EVENT_RE = re.compile(
    rb"(?:\A|(?<=[\r\n]))(?:--(?P<delimiter>[^\r\n]*)"
    rb"|content-type:[ \t]*(?:(?:\r\n|\r|\n)[ \t]+)?(?P<container>(?:multipart|message)/[^\r\n]*"
    rb"(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*))",
    re.IGNORECASE)


class _HtmlText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.line: list[str] = []
        self.skip = 0
        self.href: str | None = None

    def _break(self) -> None:
        text = " ".join("".join(self.line).split())
        if text:
            self.lines.append(text)
        self.line = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HTML_SKIPPED:
            self.skip += 1
        elif self.skip:
            return
        elif tag == "br":
            self._break()
        elif tag == "li":
            self._break()
            self.line.append("- ")
        elif tag == "a":
            self.href = dict(attrs).get("href")
        elif tag in _HTML_BLOCKS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag in _HTML_SKIPPED:
            self.skip = max(0, self.skip - 1)
        elif self.skip:
            return
        elif tag == "a":
            if self.href and self.href.startswith(("http://", "https://", "mailto:")):
                self.line.append(f" ({self.href})")
            self.href = None
        elif tag in _HTML_BLOCKS or tag in {"li", "td", "th"}:
            if tag in {"td", "th"}:
                self.line.append(" ")
            else:
                self._break()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.line.append(data)

    def text(self) -> str:
        self.close()
        self._break()
        return "\n".join(self.lines).strip()


def html_to_text(html: str) -> str:
    """Readable plain text of an HTML body: paragraphs and line breaks kept, links shown after their text."""
    parser = _HtmlText()
    parser.feed(html)
    return parser.text()


def header_clean(value: str, limit: int = SUBJECT_MAX_CHARS) -> str:
    """One header line: CR, LF and other control characters become spaces, runs of spaces one."""
    return " ".join(re.sub(r"[\x00-\x1f\x7f]", " ", str(value)).split())[:limit]


def reply_subject(subject: str) -> str:
    """`Re: <subject>`, without stacking prefixes (`Re: Re: x` stays `Re: x`)."""
    base = header_clean(subject)
    while _REPLY_PREFIX_RE.match(base):
        base = _REPLY_PREFIX_RE.sub("", base, count=1)
    return header_clean(REPLY_PREFIX + (base or "(no subject)"))


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"


def message_compose(*, sender: str, sender_name: str, to: list[str], subject: str, body_text: str,
                    body_html: str, message_id: str, in_reply_to: str = "", references: str = "",
                    attachments: list[Attachment] | tuple[Attachment, ...] = (),
                    auto_submitted: str = "", reply_to: str = "") -> EmailMessage:
    message = EmailMessage(policy=HEADER_POLICY)
    message["From"] = email.utils.formataddr((header_clean(sender_name), sender)) if sender_name else sender
    if reply_to:
        message["Reply-To"] = reply_to
    message["To"] = ", ".join(to)
    message["Subject"] = header_clean(subject)
    message["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
    if references:
        message["References"] = references
    if auto_submitted:
        message["Auto-Submitted"] = auto_submitted  # RFC 3834: other responders must not answer it
    text = body_text if body_text.strip() or not body_html else html_to_text(body_html)
    message.set_content(text)
    if body_html:
        message.add_alternative(body_html, subtype="html")
    for item in attachments:
        maintype, _, subtype = item.content_type.partition("/")
        message.add_attachment(item.content, maintype=maintype or "application",
                               subtype=subtype or "octet-stream", filename=item.filename)
    return message


def attachment_content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def message_id_list(value: str | None) -> list[str]:
    """The `<...>` ids of a References / In-Reply-To header, in order."""
    return re.findall(r"<[^<>\s]+>", value or "")


def message_id_key(message_id: str) -> str:
    """How a Message-ID is stored and matched (IncomingMail.message_id, thread keys): the id itself, or for one
    longer than MESSAGE_ID_KEY_MAX_CHARS (the column) an id made from its digest, the same every time. A cut
    (the id's first 255 characters, without its `>`) made two ids that differ after that one, and answered
    the second as a duplicate of the first."""
    if len(message_id) <= MESSAGE_ID_KEY_MAX_CHARS:
        return message_id
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"<sha256-{digest}@long-message-id>"


def thread_ids(value: str | Iterable[str] | None) -> list[str]:
    """The msg-ids of a thread header's text (or of a list of ids), NUL and other control characters removed,
    each whole; an id too long for a header line (THREAD_ID_MAX_CHARS) is left out, never cut."""
    text = value if isinstance(value, str) else " ".join(value or ())
    ids = message_id_list(_CONTROL_CHARS_RE.sub("", text))
    return [one for one in ids if len(one) <= THREAD_ID_MAX_CHARS]


def references_value(ids: list[str], limit: int = REFERENCES_MAX_CHARS) -> str:
    """A References header for a mail that continues the thread `ids` (oldest first): the thread's first id and
    as many of the newest as fit in `limit` characters, each whole. The first keeps the thread together (it is
    the chat session's key here and the root in most clients); the newest are what a reader threads by. A cut
    from the end (`[:8000]`) dropped exactly the newest, and could split an id."""
    if not ids:
        return ""
    first, newest = ids[0], []
    used = len(first)
    for one in reversed(ids[1:]):
        if used + 1 + len(one) > limit:
            break
        newest.append(one)
        used += 1 + len(one)
    return " ".join([first, *reversed(newest)])


# --- received mail ---------------------------------------------------------------------------------------


@dataclass
class ReceivedAttachment:
    filename: str
    content: bytes


@dataclass
class ReceivedMail:
    # How the mail is stored and matched: its Message-ID, or message_id_key's digest id for one over 255 chars.
    message_id: str
    from_address: str
    subject: str
    text: str
    in_reply_to: str
    references: list[str]
    thread_key: str
    headers: dict[str, str]
    attachments: list[ReceivedAttachment] = field(default_factory=list)
    # The Message-ID as the mail gave it (or the made-up one of a mail without): what an answer's In-Reply-To
    # and References name, so the sender's client threads it. `in_reply_to` and `references` are as given too.
    message_id_header: str = ""


def filename_safe(name: str, fallback: str) -> str:
    """A file name for the drive: no folders, no control or shell characters, bounded length."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = _FILENAME_UNSAFE_RE.sub("_", base).strip(" .")
    return (base or fallback)[:120]


class MessageUnreadable(ValueError):
    """A received mail whose structure the parser cannot read (it is recorded as skipped, with this reason)."""


class MessageTooComplex(MessageUnreadable):
    """A received mail nested deeper than MIME_MAX_DEPTH or split into more than MIME_MAX_PARTS parts."""


def _container_boundary(value: bytes) -> bytes | None:
    """The boundary of a multipart Content-Type value (RFC 2231 forms too), None when it names none."""
    holder = email.message.Message()
    holder["Content-Type"] = _HEADER_FOLD_RE.sub(" ", value.decode("latin-1"))
    boundary = holder.get_boundary()
    return boundary.encode("latin-1", errors="replace") if boundary else None


def message_structure_check(raw: bytes) -> None:
    """MessageTooComplex when `raw` nests containers deeper than MIME_MAX_DEPTH or has more than
    MIME_MAX_PARTS parts. A scan of boundary lines and container headers only, linear in the size: it follows
    the parser's rules (an enclosing boundary line ends every part nested in it) closely enough that mail it
    accepts parses in bounded time; text that merely looks like structure can only make it count more."""
    stack: list[bytes | None] = []  # the open containers, outermost first: a boundary, None for message/*
    open_at: dict[bytes, int] = {}  # boundary -> its innermost position in the stack
    parts = containers = 0
    for match in _MIME_EVENT_RE.finditer(raw):
        container = match.group("container")
        if container is not None:
            containers += 1
            if containers > MIME_MAX_PARTS:
                raise MessageTooComplex(f"the message has more than {MIME_MAX_PARTS} MIME parts")
            boundary = _container_boundary(container) if container[:9].lower() == b"multipart" else None
            if boundary is not None:
                open_at[boundary] = len(stack)
            stack.append(boundary)
            if len(stack) > MIME_MAX_DEPTH:
                raise MessageTooComplex(f"the message nests MIME parts more than {MIME_MAX_DEPTH} levels deep")
            continue
        line = match.group("delimiter").rstrip(b" \t")
        closing = line.endswith(b"--") and line[:-2] in open_at
        index = open_at.get(line[:-2] if closing else line)
        if index is None:
            continue
        del stack[index + (0 if closing else 1):]  # the parts this boundary line ends (and its own, closing)
        open_at = {b: i for i, b in enumerate(stack) if b is not None}  # at most MIME_MAX_PARTS times
        if not closing:
            parts += 1
            if parts > MIME_MAX_PARTS:
                raise MessageTooComplex(f"the message has more than {MIME_MAX_PARTS} MIME parts")


def message_headers_check(raw: bytes) -> None:
    """MessageTooComplex when a header of `raw` is past the limits above (HEADER_MAX_BYTES for the top-level
    block; MIME_HEADER_MAX_BYTES and the separator counts for MIME headers anywhere). A scan linear in the
    size; run before message_structure_check, whose boundary reading is itself slow on such a header."""
    for name, value in _top_header_fields(raw):
        if len(name) + 1 + len(value) > HEADER_MAX_BYTES:
            raise MessageTooComplex(f"the message has a {_header_name(name)} header longer than "
                                    f"{HEADER_MAX_BYTES // 1024} KiB")
    total = 0
    for match in _MIME_HEADER_RE.finditer(raw):
        value, name = match.group("value"), _header_name(match.group("name"))
        if len(value) > MIME_HEADER_MAX_BYTES:
            raise MessageTooComplex(f"the message has a {name} header longer than "
                                    f"{MIME_HEADER_MAX_BYTES // 1024} KiB")
        separators = sum(1 for _ in _SEPARATOR_RE.finditer(value))
        if separators > MIME_HEADER_MAX_SEPARATORS:
            raise MessageTooComplex(f"the message has a {name} header with more than {MIME_HEADER_MAX_SEPARATORS} "
                                    "separators (parameters, quotes, comments)")
        total += separators
        if total > MIME_HEADERS_MAX_SEPARATORS:
            raise MessageTooComplex(f"the MIME headers of the message have more than {MIME_HEADERS_MAX_SEPARATORS} "
                                    "separators in all")


def _header_name(name: bytes) -> str:
    return name[:76].decode("ascii", "replace").title()


def _top_header_fields(raw: bytes) -> Iterator[tuple[bytes, bytes]]:
    """(name, value with its folded lines) of each header of the top-level block, in order: the standard
    parser's split, read in time linear in the block's size, without its header parser."""
    position = 0
    while position < len(raw):
        match = _TOP_HEADER_RE.match(raw, position)
        if match is not None:
            yield match.group("name"), match.group("value")
        else:
            match = _SKIPPED_LINE_RE.match(raw, position)
            if match is None:
                return  # an empty line (the body follows), or a line that is no header: the block ends there
        position = match.end()


def _top_headers(raw: bytes) -> dict[str, str]:
    """The first value of each header of the top-level block: lower-case name -> value unfolded, as text
    (undecodable bytes as U+FFFD, NUL removed), encoded words left as they are."""
    found: dict[str, str] = {}
    for name, value in _top_header_fields(raw):
        key = name.decode("ascii", "replace").lower()
        if key not in found:
            found[key] = _text_clean(_HEADER_FOLD_RE.sub(" ", value.decode("utf-8", "replace")).strip())
    return found


def message_fallback_id(raw: bytes) -> str:
    """The id of a mail without a usable Message-ID: its content identifies it, so polling it twice is one."""
    return f"<sha256-{hashlib.sha256(raw).hexdigest()[:40]}@no-message-id>"


def _text_clean(value: str) -> str:
    """Text the database can store: NUL removed (PostgreSQL refuses it in text, and a mail with one in its
    Message-ID failed its claim on every poll, before its attempt was counted), undecodable bytes as U+FFFD."""
    value = value.replace("\x00", "")
    if any("\udc80" <= char <= "\udcff" for char in value):  # raw bytes the parser kept as surrogates
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return value


def message_parse(raw: bytes, *, headers_only: bool = False) -> ReceivedMail:
    """The parts of a received mail the bot needs. Malformed headers read as their raw text; a mail the
    parser cannot read at all raises MessageUnreadable (never another exception: the poller records it and
    goes on, instead of stopping at it on every poll), MessageTooComplex when its structure is past the
    limits. `headers_only`: ids, sender and subject only (no body, no attachments, no structure check).
    Celery's SoftTimeLimitExceeded passes through: the task ran out of time, the mail is not unreadable."""
    if not headers_only:
        message_headers_check(raw)
        message_structure_check(raw)
    try:
        return _message_parse(raw, headers_only=headers_only)
    except SoftTimeLimitExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure on hostile input is this one error
        raise MessageUnreadable(f"the message cannot be read ({type(exc).__name__})") from exc


def _message_parse(raw: bytes, *, headers_only: bool) -> ReceivedMail:
    # The top-level headers are read by _top_headers, never by the standard parser (which parses the top-level
    # Content-Type even for a headers-only reading): so the headers-only reading, which identifies a mail before
    # its attempt is claimed and serves mail refused for its size or its headers, takes time linear in the size,
    # and gives the same ids as the full reading. Ids by a regex, the sender from the first
    # ADDRESS_HEADER_MAX_CHARS, the subject from the first SUBJECT_READ_MAX_CHARS.
    top = _top_headers(raw)
    message_id = (message_id_list(top.get("message-id")) or [""])[0]
    if not message_id:
        # No Message-ID (allowed, if rare): the content identifies it, so polling it twice is still one.
        message_id = message_fallback_id(raw)
    from_address = _sender_address(top.get("from", ""))
    in_reply_to = (message_id_list(top.get("in-reply-to")) or [""])[0]
    references = message_id_list(top.get("references"))
    thread_key = message_id_key(references[0] if references else (in_reply_to or message_id))
    subject = _subject(top.get("subject", ""))
    if headers_only:
        return ReceivedMail(message_id=message_id_key(message_id), from_address=from_address, subject=subject,
                            text="", in_reply_to=in_reply_to, references=references, thread_key=thread_key,
                            headers={}, message_id_header=message_id)
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",)) if text_part is None else None
    text = ""
    if text_part is not None:
        text = _part_text(text_part)
    elif html_part is not None:
        text = html_to_text(_part_text(html_part))
    text = _text_clean(text).strip()
    if len(text) > BODY_TEXT_MAX_CHARS:
        text = text[:BODY_TEXT_MAX_CHARS] + "\n[message truncated]"
    attachments = []
    for index, (part, filename) in enumerate(_attachment_parts(message, body={id(text_part), id(html_part)}),
                                             start=1):
        payload = part.get_payload(decode=True) or b""
        attachments.append(ReceivedAttachment(filename_safe(filename, f"attachment-{index}"), payload))
    wanted = ("auto-submitted", "precedence", "list-id", "x-autoreply", "return-path")
    headers = {key: top[key] for key in wanted if key in top}
    return ReceivedMail(message_id=message_id_key(message_id), from_address=from_address, subject=subject,
                        text=text, in_reply_to=in_reply_to, references=references, thread_key=thread_key,
                        headers=headers, attachments=attachments, message_id_header=message_id)


def _sender_address(value: str) -> str:
    """The address of a From header's value, lower-cased; "" when there is none (such a mail is not answered),
    also for a From longer than ADDRESS_HEADER_MAX_CHARS (a person's is a line at most) or one the address
    parser gives up on (nested comments past its recursion)."""
    if len(value) > ADDRESS_HEADER_MAX_CHARS:
        return ""
    try:
        address = email.utils.parseaddr(value)[1]
    except SoftTimeLimitExceeded:
        raise
    except Exception:  # noqa: BLE001 - RecursionError on `((((...`, and whatever else junk makes it raise
        return ""
    return address.strip().lower()[:320]


def _subject(value: str) -> str:
    """The decoded Subject (RFC 2047 encoded words), on one line, from the first SUBJECT_READ_MAX_CHARS."""
    try:
        decoded = str(email.policy.default.header_factory("subject", value[:SUBJECT_READ_MAX_CHARS]))
    except SoftTimeLimitExceeded:
        raise
    except Exception:  # noqa: BLE001 - the header parser raises on junk: the raw text then
        decoded = value
    return header_clean(_text_clean(decoded))


def _attachment_parts(message: EmailMessage, *, body: set[int]) -> list[tuple[EmailMessage, str]]:
    """The attachments of a mail, wherever they are nested, in document order, with their file names ("" when
    none can be read): every leaf part that is not the body and has a file name or `Content-Disposition:
    attachment`, and what the standard `iter_attachments` finds at the top level. The top level alone lost
    common layouts: Apple Mail's alternative > [plain, mixed > [html, pdf]], and mixed > [plain, related > [html,
    pdf]]. A forwarded message (message/*) is one attachment, not searched inside. The nesting and the number
    of parts are bounded by message_structure_check."""
    top_level = {id(part) for part in message.iter_attachments()}
    found = []
    for part in _leaf_parts(message):
        if id(part) in body:
            continue
        try:
            filename = part.get_filename() or ""
            attached = part.get_content_disposition() == "attachment"
        except SoftTimeLimitExceeded:
            raise
        except Exception:  # noqa: BLE001 - a malformed Content-Disposition: the attachment keeps a made-up name
            filename, attached = "", True
        if filename or attached or id(part) in top_level:
            found.append((part, filename))
    return found


def _leaf_parts(part: EmailMessage) -> Iterator[EmailMessage]:
    if part.get_content_maintype() != "multipart":
        yield part
        return
    for child in part.iter_parts():
        yield from _leaf_parts(child)


def _part_text(part: EmailMessage) -> str:
    try:
        return str(part.get_content())
    except (LookupError, UnicodeDecodeError):  # unknown or lying charset: keep what decodes
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", errors="replace")


def reply_refusal(mail: ReceivedMail, *, own_addresses: set[str]) -> str:
    """Why this mail must not be answered automatically, or "" when it may be (RFC 3834 section 2)."""
    if not mail.from_address:
        return "no sender address"
    if mail.from_address in own_addresses:
        return "sent by the bot itself"
    if mail.from_address.startswith(_SYSTEM_SENDERS):
        return "a delivery report from a mail system"
    auto = mail.headers.get("auto-submitted", "no").strip().lower()
    if auto and auto != "no":
        return f"auto-submitted ({auto})"
    if mail.headers.get("precedence", "").strip().lower() in {"bulk", "junk", "list"}:
        return "bulk or list mail"
    if "list-id" in mail.headers or "x-autoreply" in mail.headers:
        return "mailing list or auto-reply"
    if mail.headers.get("return-path", "").strip() == "<>":
        return "a delivery report (empty return path)"
    return ""
