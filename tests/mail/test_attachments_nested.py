"""Attachments nested below the top level of a received mail (Apple Mail, Outlook's related parts) are found;
only the top level was searched, so they were lost without a word."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.drive.storage import tenant_drive
from apps.mail.content import message_parse
from apps.mail.models import IncomingMail
from apps.mail.services import bot_drive_root, mailbox_poll
from tests.mail.test_services_incoming import append_raw, mailbox_bot

pytestmark = pytest.mark.django_db

PDF_BASE64 = "JVBERi0xLjQgdGlueQ=="  # b"%PDF-1.4 tiny"


def _mail(message_id: str, body: str) -> bytes:
    head = f"From: Ana <ana@example.test>\r\nTo: bot@shop.test\r\nSubject: Invoice\r\nMessage-ID: {message_id}\r\n"
    return (head + "MIME-Version: 1.0\r\n" + body).encode()


def apple_mail(message_id: str = "<apple@example.test>") -> bytes:
    """What Apple Mail sends for a text with a PDF shown inline: alternative > [plain, mixed > [html, pdf]]."""
    return _mail(message_id, f"""Content-Type: multipart/alternative; boundary="alt"\r
\r
--alt\r
Content-Type: text/plain; charset=utf-8\r
\r
Please see the invoice.\r
--alt\r
Content-Type: multipart/mixed; boundary="mix"\r
\r
--mix\r
Content-Type: text/html; charset=utf-8\r
\r
<p>Please see the invoice.</p>\r
--mix\r
Content-Type: application/pdf; name="invoice.pdf"\r
Content-Disposition: inline; filename="invoice.pdf"\r
Content-Transfer-Encoding: base64\r
\r
{PDF_BASE64}\r
--mix\r
Content-Type: text/html; charset=utf-8\r
\r
<p>Regards</p>\r
--mix--\r
--alt--\r
""")


def related_mail(message_id: str = "<related@example.test>") -> bytes:
    """mixed > [plain, related > [html, logo (inline, named), pdf (attachment)], csv]."""
    return _mail(message_id, f"""Content-Type: multipart/mixed; boundary="mix"\r
\r
--mix\r
Content-Type: text/plain; charset=utf-8\r
\r
The report and the data.\r
--mix\r
Content-Type: multipart/related; boundary="rel"\r
\r
--rel\r
Content-Type: text/html; charset=utf-8\r
\r
<p>The report <img src="cid:logo@x"></p>\r
--rel\r
Content-Type: image/png\r
Content-ID: <logo@x>\r
Content-Disposition: inline; filename="logo.png"\r
Content-Transfer-Encoding: base64\r
\r
iVBORw0K\r
--rel\r
Content-Type: application/pdf\r
Content-Disposition: attachment; filename="report.pdf"\r
Content-Transfer-Encoding: base64\r
\r
{PDF_BASE64}\r
--rel--\r
--mix\r
Content-Type: text/csv; name="data.csv"\r
Content-Disposition: attachment; filename="data.csv"\r
\r
day,total\r
--mix--\r
""")


def test_apple_mails_inline_pdf_inside_the_alternative_is_an_attachment():
    mail = message_parse(apple_mail())
    assert mail.text == "Please see the invoice."
    assert [(a.filename, a.content) for a in mail.attachments] == [("invoice.pdf", b"%PDF-1.4 tiny")]


def test_attachments_inside_a_related_part_are_found_in_document_order():
    mail = message_parse(related_mail())
    assert mail.text == "The report and the data."
    assert [a.filename for a in mail.attachments] == ["logo.png", "report.pdf", "data.csv"]
    assert mail.attachments[1].content == b"%PDF-1.4 tiny"
    assert mail.attachments[2].content == b"day,total"  # no transfer encoding: the text as sent


def test_a_nested_attachment_is_stored_in_the_bots_drive(mail_tenant, committed_db, mail_worker, smtp, dovecot,
                                                         chat_turns):
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        append_raw(dovecot, bot, apple_mail(f"<apple.{bot.name}@example.test>"))
        report = mailbox_poll(bot=bot)
        assert (report.fetched, report.answered, report.error) == (1, 1, "")
        row = IncomingMail.objects.get(bot=bot)
        assert row.attachments == [{"name": "invoice.pdf", "size": 13, "path": f"mail/inbox/{row.pk}/invoice.pdf"}]
        assert tenant_drive().read(bot_drive_root(bot) + f"mail/inbox/{row.pk}/invoice.pdf") == b"%PDF-1.4 tiny"
