"""PII masking in logs: through the real LOGGING configuration (the console handler's filter), e-mail
addresses, phone numbers and card numbers never reach a log line; ordinary numbers stay readable."""

import io
import json
import logging

import pytest

from apps.compliance.pii import PiiMaskingFilter, pii_mask


def _console_handler() -> logging.Handler:
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)
                 and any(isinstance(f, PiiMaskingFilter) for f in h.filters)]
    return handler


def test_console_handler_of_the_real_config_masks_message_and_args(caplog):
    handler = _console_handler()
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        with caplog.at_level(logging.WARNING, logger="apps.mail"):
            logging.getLogger("apps.mail").warning(
                "mail from %s (phone %s, card %s) failed after %d attempts at 2026-11-21 08:42:43 from 127.0.0.1",
                "Ana.Souza@example.com", "+55 11 98765-4321", "4111 1111 1111 1111", 3)
    finally:
        handler.setStream(previous)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    expected = ("mail from [email] (phone [phone], card [card]) failed after 3 attempts at 2026-11-21 08:42:43 "
                "from 127.0.0.1")
    assert line["message"] == expected
    # The record is masked in place: handlers after the console one (here pytest's capture) see no PII either.
    assert caplog.records[-1].getMessage() == expected
    assert "example.com" not in caplog.text and "98765" not in caplog.text and "4111" not in caplog.text


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("to bob_1+tag@mail.example.org.", "to [email]."),
        ("call (11) 98765-4321 or 555-123-4567", "call [phone] or [phone]"),
        ("whatsapp 5511987654321", "whatsapp [phone]"),
        ("card 5500-0000-0000-0004", "card [card]"),
        # Not cards (Luhn fails) nor phones: ids, versions, dates, times, ports and UUIDs stay as they are.
        ("order 1234567890123456", "order 1234567890123456"),
        ("took 1234 ms, v1.2.3, port 54329", "took 1234 ms, v1.2.3, port 54329"),
        ("at 2026-11-21T08:42:43+00:00", "at 2026-11-21T08:42:43+00:00"),
        ("session 3f2a1b4c-1234-4678-9abc-123456789012", "session 3f2a1b4c-1234-4678-9abc-123456789012"),
    ],
)
def test_masking_rules(text, masked):
    assert pii_mask(text) == masked


def test_a_record_with_a_broken_format_is_passed_on_untouched():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "%d items for %s", ("many",), None)
    assert PiiMaskingFilter().filter(record) is True
    assert record.args == ("many",)


def test_tracebacks_and_extra_fields_are_masked_too():
    handler = _console_handler()
    stream = io.StringIO()
    previous = handler.setStream(stream)
    try:
        try:
            raise ValueError("550 recipient ana@example.com rejected")
        except ValueError:
            logging.getLogger("apps.mail").exception("send failed", extra={"to": "ana@example.com", "attempt": 2})
    finally:
        handler.setStream(previous)
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert "ana@example.com" not in stream.getvalue()
    assert "550 recipient [email] rejected" in line["exc_info"] and "Traceback" in line["exc_info"]
    assert line["to"] == "[email]" and line["attempt"] == 2
