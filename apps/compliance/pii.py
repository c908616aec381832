"""Personal data kept out of the logs: e-mail addresses, phone numbers and card numbers are masked.

Failure modes prevented:
- A log line quoting a visitor's address, phone or card (an error about "ana@example.com", a debug print of
  a received mail) copied into log storage that outlives every retention and erasure: the filter rewrites
  the record before any handler writes it (installed on the console handler in settings.LOGGING).
- A masked message that can no longer be formatted: the message is rendered once (msg % args) and, when
  something was masked, the rendered text replaces msg and args; records with nothing to mask are untouched.
- Masking the wrong things: card numbers must pass the Luhn check (so timestamps and ids stay readable);
  phone numbers need the shape of one (8 to 15 digits in groups), so dates, times and IP addresses stay.

- A traceback quoting an address (an SMTP refusal naming the recipient): the exception is formatted here
  and, when something was masked, kept only as masked text (`exc_text`; `exc_info` cleared, which both the
  standard and the JSON formatter then print instead).
- `extra={...}` fields: string values are masked as well (other types are left as they are).
"""

from __future__ import annotations

import logging
import re

MASK_EMAIL = "[email]"
MASK_PHONE = "[phone]"
MASK_CARD = "[card]"

EMAIL_RE = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
# 13 to 19 digits (ISO/IEC 7812 card numbers), optionally grouped by spaces or dashes.
CARD_RE = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
# An optional country code, an optional area code in brackets, then groups: +55 (11) 98765-4321,
# 555-123-4567, 11987654321. Not preceded or followed by a word character or a dash (ids, UUIDs).
PHONE_RE = re.compile(
    r"(?<![\w+-])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?)?\d{2,5}(?:[\s.-]?\d{3,5})?[\s.-]?\d{4}(?![\w-])"
)
# E.164 allows at most 15 digits; fewer than 8 is an extension or a short code, not a number to hide.
PHONE_DIGITS_MIN, PHONE_DIGITS_MAX = 8, 15


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group())
    return MASK_CARD if _luhn_valid(digits) else match.group()


def _phone(match: re.Match) -> str:
    count = sum(char.isdigit() for char in match.group())
    return MASK_PHONE if PHONE_DIGITS_MIN <= count <= PHONE_DIGITS_MAX else match.group()


def pii_mask(text: str) -> str:
    """`text` with e-mail addresses, card numbers (Luhn-valid) and phone numbers replaced by markers."""
    text = EMAIL_RE.sub(MASK_EMAIL, text)
    text = CARD_RE.sub(_card, text)
    return PHONE_RE.sub(_phone, text)


class PiiMaskingFilter(logging.Filter):
    """Logging filter: mask personal data in the record's message and arguments (never drops a record).

    The record is changed in place, so handlers called after the one carrying this filter see the masked
    text too; install it on every handler that writes somewhere (settings.LOGGING does, on `console`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logging's own error to report
            return True
        masked = pii_mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[0] is not None:
            text = record.exc_text or _FORMATTER.formatException(record.exc_info)
            masked = pii_mask(text)
            if masked != text:
                record.exc_info, record.exc_text = None, masked
        elif record.exc_text:
            record.exc_text = pii_mask(record.exc_text)
        for name, value in list(record.__dict__.items()):
            if name not in _RECORD_ATTRIBUTES and isinstance(value, str):
                setattr(record, name, pii_mask(value))
        return True


_FORMATTER = logging.Formatter()
# Attributes every LogRecord has (plus those formatters add): anything else came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "request_id", "tenant"}
