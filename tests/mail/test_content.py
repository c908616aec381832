"""Composing and reading mail: MIME structure, headers, HTML to text, threads, loop protection."""

from __future__ import annotations

import email
import email.parser
import email.policy
import re
import signal
from email.message import EmailMessage

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from apps.mail.content import (
    BODY_TEXT_MAX_CHARS,
    MIME_MAX_DEPTH,
    MIME_MAX_PARTS,
    Attachment,
    MessageTooComplex,
    header_clean,
    html_to_text,
    message_compose,
    message_parse,
    reply_refusal,
    reply_subject,
)


def _compose(**overrides) -> EmailMessage:
    args = {"sender": "bot@example.test", "sender_name": "Shop Bot", "to": ["ana@example.test"],
            "subject": "Report", "body_text": "", "body_html": "", "message_id": "<m1@example.test>"}
    args.update(overrides)
    message = message_compose(**args)
    return email.message_from_bytes(message.as_bytes(), policy=email.policy.default)


def test_html_only_body_goes_out_as_alternative_with_a_derived_text_part():
    parsed = _compose(body_html="<html><head><style>p{}</style></head><body><h1>Sales</h1><p>Total: <b>42</b>"
                                "</p><ul><li>one</li><li>two</li></ul><p>See <a href='https://x.test/r'>report"
                                "</a></p></body></html>")
    assert parsed.get_content_type() == "multipart/alternative"
    text = parsed.get_body(preferencelist=("plain",)).get_content()
    html = parsed.get_body(preferencelist=("html",)).get_content()
    assert "<b>42</b>" in html
    assert "Sales" in text and "Total: 42" in text and "- one" in text and "- two" in text
    assert "report (https://x.test/r)" in text
    assert "<" not in text and "p{}" not in text


def test_text_and_html_are_both_kept_and_attachments_follow():
    parsed = _compose(body_text="plain words", body_html="<p>rich words</p>",
                      attachments=[Attachment("report.csv", b"a,b\n1,2\n", "text/csv")])
    assert parsed.get_content_type() == "multipart/mixed"
    assert parsed.get_body(preferencelist=("plain",)).get_content().strip() == "plain words"
    assert "rich words" in parsed.get_body(preferencelist=("html",)).get_content()
    (attachment,) = list(parsed.iter_attachments())
    assert attachment.get_filename() == "report.csv" and attachment.get_content() == "a,b\n1,2\n"


def test_a_subject_cannot_inject_headers():
    parsed = _compose(body_text="x", subject="Hello\r\nBcc: victim@example.test")
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == "Hello Bcc: victim@example.test"


def test_reply_to_is_set_only_when_given():
    assert _compose(reply_to="shop@example.test")["Reply-To"] == "shop@example.test"
    assert _compose()["Reply-To"] is None


def test_thread_headers_and_automation_marker_are_set():
    parsed = _compose(body_text="x", in_reply_to="<a@x>", references="<root@x> <a@x>", auto_submitted="auto-replied")
    assert parsed["In-Reply-To"] == "<a@x>"
    assert parsed["References"] == "<root@x> <a@x>"
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["Message-ID"] == "<m1@example.test>"
    assert "Shop Bot" in parsed["From"] and "bot@example.test" in parsed["From"]


def test_reply_subject_does_not_stack_prefixes():
    assert reply_subject("Order 7") == "Re: Order 7"
    assert reply_subject("RE: Re: Order 7") == "Re: Order 7"
    assert reply_subject("") == "Re: (no subject)"


def _raw(headers: dict[str, str], body: str = "hello", html: str | None = None) -> bytes:
    message = EmailMessage()
    for key, value in headers.items():
        message[key] = value
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message.as_bytes()


def test_parse_takes_the_thread_root_from_references():
    raw = _raw({"From": "Ana <Ana@Example.test>", "Subject": "Re: Order", "Message-ID": "<c@x>",
                "In-Reply-To": "<b@x>", "References": "<a@x> <b@x>"})
    mail = message_parse(raw)
    assert mail.from_address == "ana@example.test"
    assert mail.message_id == "<c@x>"
    assert mail.thread_key == "<a@x>"
    assert mail.references == ["<a@x>", "<b@x>"]
    assert mail.text == "hello"


def test_parse_of_html_only_mail_gives_text():
    message = EmailMessage()
    message["From"], message["Message-ID"] = "a@x.test", "<h@x>"
    message.set_content("<p>Hi <i>there</i></p><p>second</p>", subtype="html")
    mail = message_parse(message.as_bytes())
    assert mail.text == "Hi there\nsecond"
    assert mail.thread_key == "<h@x>"


def test_a_mail_without_message_id_gets_a_stable_one_from_its_content():
    raw = _raw({"From": "a@x.test", "Subject": "no id"})
    assert message_parse(raw).message_id == message_parse(raw).message_id
    assert message_parse(raw).message_id != message_parse(_raw({"From": "a@x.test", "Subject": "other"})).message_id


def test_malformed_headers_read_as_their_raw_text_instead_of_failing_the_mail():
    """The standard parser raises IndexError on these header values; the mail must still be read (one such mail
    used to stop the bot's mailbox at it on every poll)."""
    for headers, sender in (({"Message-ID": "<", "From": "ana@x.test"}, "ana@x.test"),
                            ({"Message-ID": "<x@[", "From": '"'}, ""),
                            ({"From": "=?utf-8?q?a=40b.c?= <", "Subject": "still here"}, "")):
        raw = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\nthe body\r\n"
        mail = message_parse(raw)
        assert mail.text == "the body"
        assert mail.message_id.endswith("@no-message-id>")  # none of them has a usable id
        assert mail.subject == headers.get("Subject", "")
        assert mail.from_address == sender  # no address in the broken ones: such a mail is not answered


def test_long_bodies_are_cut_for_the_bot():
    mail = message_parse(_raw({"From": "a@x.test", "Message-ID": "<l@x>"}, body="x" * (BODY_TEXT_MAX_CHARS + 50)))
    assert len(mail.text) < BODY_TEXT_MAX_CHARS + 50 and mail.text.endswith("[message truncated]")


def test_attachment_names_cannot_leave_their_folder():
    message = EmailMessage()
    message["From"], message["Message-ID"] = "a@x.test", "<att@x>"
    message.set_content("see attached")
    message.add_attachment(b"data", maintype="application", subtype="octet-stream", filename="../../etc/passwd")
    message.add_attachment(b"more", maintype="application", subtype="octet-stream", filename="..")
    mail = message_parse(message.as_bytes())
    assert [a.filename for a in mail.attachments] == ["passwd", "attachment-2"]
    assert mail.attachments[0].content == b"data"


def test_automated_mail_is_not_answered():
    def refusal(headers: dict[str, str]) -> str:
        return reply_refusal(message_parse(_raw({"Message-ID": "<r@x>", **headers})), own_addresses={"bot@x.test"})

    assert refusal({"From": "ana@x.test"}) == ""
    assert "auto-submitted" in refusal({"From": "ana@x.test", "Auto-Submitted": "auto-replied"})
    assert refusal({"From": "ana@x.test", "Auto-Submitted": "no"}) == ""
    assert "bulk" in refusal({"From": "ana@x.test", "Precedence": "bulk"})
    assert "list" in refusal({"From": "ana@x.test", "List-Id": "<news.x.test>"})
    assert "itself" in refusal({"From": "Bot <BOT@x.test>"})
    assert "delivery report" in refusal({"From": "MAILER-DAEMON@x.test"})


def test_html_to_text_drops_scripts_and_keeps_line_breaks():
    assert html_to_text("<script>alert(1)</script>a<br>b<div>c</div>") == "a\nb\nc"


def nested_raw(depth: int, *, lines: int = 3, newline: bytes = b"\r\n") -> bytes:
    """A mail whose text part sits inside `depth` nested multiparts."""
    out = [b"From: ana@x.test", b"Message-ID: <deep@x>", b"Subject: deep"]
    for level in range(depth):
        out += [b'Content-Type: multipart/mixed; boundary="b%d"' % level, b"", b"--b%d" % level]
    out += [b"Content-Type: text/plain", b"", *[b"line"] * lines]
    return newline.join(out) + newline


def parts_raw(parts: int) -> bytes:
    return (b'From: ana@x.test\r\nMessage-ID: <flat@x>\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            + b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" * parts + b"--b--\r\n")


def test_mail_nested_too_deep_or_split_into_too_many_parts_is_refused_before_parsing(monkeypatch):
    """The standard parser's time grows with lines x depth and with parts: a 25 MB mail nested hundreds of levels
    (or cut into hundreds of thousands of parts) held the poller for minutes."""
    parsed: list[int] = []
    parsebytes = email.parser.BytesParser.parsebytes

    def counted_parsebytes(parser, raw, *args, **kwargs):
        parsed.append(len(raw))
        return parsebytes(parser, raw, *args, **kwargs)

    monkeypatch.setattr(email.parser.BytesParser, "parsebytes", counted_parsebytes)
    assert message_parse(nested_raw(MIME_MAX_DEPTH)).text.split() == ["line"] * 3
    assert len(message_parse(parts_raw(MIME_MAX_PARTS)).attachments) == MIME_MAX_PARTS - 1
    for raw in (nested_raw(MIME_MAX_DEPTH + 1), nested_raw(MIME_MAX_DEPTH + 1, newline=b"\r")):
        with pytest.raises(MessageTooComplex, match=f"more than {MIME_MAX_DEPTH} levels deep"):
            message_parse(raw)
    with pytest.raises(MessageTooComplex, match=f"more than {MIME_MAX_PARTS} MIME parts"):
        message_parse(parts_raw(MIME_MAX_PARTS + 1))
    assert len(parsed) == 2  # the two mails within the limits; the refused ones never reached the parser
    with pytest.raises(MessageTooComplex, match=f"more than {MIME_MAX_DEPTH} levels deep"):
        message_parse(nested_raw(900, lines=300_000))  # about 25 s for the parser
    assert len(parsed) == 2
    # A part closed by its parent's boundary line ends every part nested in it: siblings are not deeper.
    siblings = [b'Content-Type: multipart/mixed; boundary="top"', b""]
    for n in range(MIME_MAX_DEPTH + 5):
        siblings += [b"--top", b'Content-Type: multipart/alternative; boundary="in%d"' % n, b"", b"--in%d" % n,
                     b"Content-Type: text/plain", b"", b"text %d" % n]
    siblings += [b"--top--", b""]
    assert message_parse(b"From: a@x.test\r\n" + b"\r\n".join(siblings)).text == "text 0"
    # Only the headers are read of such a mail, to record who sent it.
    head = message_parse(nested_raw(MIME_MAX_DEPTH + 1), headers_only=True)
    assert (head.message_id, head.from_address, head.subject) == ("<deep@x>", "ana@x.test", "deep")


def test_the_tasks_time_limit_passes_through_the_parser():
    """Celery's SoftTimeLimitExceeded (an Exception) was turned into "unreadable": the mail was recorded as
    skipped and flagged read, never answered, because the poll ran out of time while reading it."""
    raw = nested_raw(MIME_MAX_DEPTH, lines=600_000)  # a few seconds of parsing: legal, only slow

    def time_up(signum, frame):
        raise SoftTimeLimitExceeded("soft time limit exceeded")  # as billiard's handler does

    previous = signal.signal(signal.SIGALRM, time_up)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(SoftTimeLimitExceeded):
            message_parse(raw)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_long_message_ids_stay_plain_msg_ids_in_the_thread_headers():
    """Folded at 78 characters, an Outlook Message-ID (~90 characters) was RFC 2047-encoded in In-Reply-To and
    References: no longer a msg-id, so the receiver's client could not thread the bot's reply."""
    outlook = "<PH0PR11MB5176A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6E@PH0PR11MB5176.namprd11.prod.outlook.com>"
    assert len(outlook) == 88
    references = " ".join(["<root@x.test>"] + [outlook.replace("<PH", f"<{n}PH") for n in range(15)] + [outlook])
    message = message_compose(sender="bot@example.test", sender_name="Shop Bot", to=["ana@example.test"],
                              subject="Re: order", body_text="x" * 200 + "\n" + "é" * 100, body_html="",
                              message_id="<m1@example.test>", in_reply_to=outlook, references=references,
                              attachments=[Attachment("scan.bin", bytes(range(256)) * 4)])
    raw = message.as_bytes()  # what smtplib's send_message writes (the message's own policy)
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert "=?" not in head and f"In-Reply-To: {outlook}\r\n" in head
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    bodies = raw.split(b"\r\n\r\n", 1)[1]
    assert all(len(line) <= 76 for line in bodies.split(b"\r\n"))  # base64 stays at RFC 2045's 76
    parsed = message_parse(raw)
    assert parsed.in_reply_to == outlook and parsed.references == references.split()
    assert parsed.thread_key == "<root@x.test>" and parsed.text.startswith("x" * 200)
    assert [a.content for a in parsed.attachments] == [bytes(range(256)) * 4]


def test_long_non_ascii_headers_fold_into_short_encoded_words_while_thread_ids_stay_verbatim():
    """Written at max_line_length=998 for the thread headers' sake, a long non-ASCII Subject or From name was one
    encoded-word of hundreds of characters (RFC 2047 allows 75), which clients show as it is."""
    outlook = "<PH0PR11MB5176A1B2C3D4E5F6A7B8C9D0E1F2A3B4C5D6E@PH0PR11MB5176.namprd11.prod.outlook.com>"
    assert len(outlook) == 88
    references = " ".join(["<root@x.test>", outlook.replace("<PH", "<2PH"), outlook])
    subject = "Pedido de informação sobre a encomenda número 12345 — atenção, é urgente 日本語 🙂 " * 4
    name = "Loja Ação Çãé Atendimento ao Cliente — São Paulo 日本語 " * 3
    message = message_compose(sender="bot@example.test", sender_name=name, to=["ana@example.test"],
                              subject=subject, body_text="olá", body_html="", message_id="<m1@example.test>",
                              in_reply_to=outlook, references=references,
                              attachments=[Attachment("relatório de encomendas — março.pdf", b"%PDF")])
    raw = message.as_bytes()
    text = raw.decode("utf-8")
    words = re.findall(r"=\?[^?]+\?[bBqQ]\?[^?]*\?=", text)
    assert len(words) > 4 and max(len(word) for word in words) <= 75
    head = text.split("\r\n\r\n", 1)[0]
    assert f"In-Reply-To: {outlook}\r\n" in head and f"References: {references}\r\n" in head
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    # Compared without spaces: the standard folder drops a space between a plain and an encoded word (as it did
    # at 78 before), a cosmetic loss; the characters all arrive.
    assert "".join(parsed["Subject"].split()) == "".join(header_clean(subject).split())
    assert "".join(parsed["From"].addresses[0].display_name.split()) == "".join(name.split())
    assert message_parse(raw).references == references.split()
