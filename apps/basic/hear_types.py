"""Typed HEAR validation and normalisation (spec §3.5.1 "HEAR types", §3.7).

This module owns the answer to one question: "the script is waiting on ``HEAR var AS KIND``
and the user sent this text — is it acceptable, and what value goes into ``var``?".
It knows nothing about sessions, channels or retries: the dialog layer calls
:func:`hear_validate`, stores ``result.value`` on success, or sends ``result.error`` and
keeps waiting (up to :data:`HEAR_MAX_ATTEMPTS` answers, then continues with an empty value).

Kinds and aliases come from the spec table; ``HEAR_KINDS`` holds every accepted name
(aliases included, plus ``MENU``) so the compiler can reject unknown kinds before running.

Choices made where the spec leaves room (list them in apps/basic/README.md)
--------------------------------------------------------------------------
* Values are typed JSON values, not upstream's strings: INTEGER -> ``int``, FLOAT and MONEY ->
  ``float`` (MONEY rounded to cents), BOOLEAN -> ``bool`` (so ``IF answer THEN`` works; the
  upstream text ``"false"`` would be truthy), MOBILE -> its digits (``"5511987654321"``,
  ready for ``TALK TO "whatsapp:+" + phone``). DATE is ``"YYYY-MM-DD"``, HOUR ``"HH:MM"``,
  CPF/CNPJ/ZIPCODE/COLOR/CREDITCARD the formatted text of the spec table.
* STRING (aliases TEXT, ANY; TEXT is what most templates write) accepts anything, trimmed,
  including the empty text. Every other kind rejects an empty answer.
* MONEY reads a single ``.`` or ``,`` followed by exactly three digits as a thousands separator
  (``$1,234`` -> 1234.0, ``R$ 1.234`` -> 1234.0); otherwise the last separator is the decimal one
  (``1,234.56``, ``1.234,56``, ``12,50``, ``1.5``).
* INTEGER treats ``.``/``,`` as thousands separators only in groups of three
  (``1.234`` -> 1234); ``1.5`` is rejected instead of becoming 15 as upstream would.
* FLOAT accepts both ``1.234,56`` and ``1,234.56`` like MONEY, and negatives; NaN/infinity
  are rejected.
* DATE reads ``dd/mm/yyyy`` before ``mm/dd/yyyy`` (Brazilian/European bots); the US order is
  used only when the first reading is impossible (``12/25/2024``). today/hoje,
  tomorrow/amanhã, yesterday/ontem use the context clock (the tenant's time zone).
* ZIPCODE: 8 digits is a Brazilian CEP (``01310-100``), 5 or 9 digits a US ZIP
  (``12345``/``12345-6789``), otherwise a UK postcode normalised to ``SW1A 1AA``.
* CPF and CNPJ made of one repeated digit are rejected (they pass the checksum but are
  never issued).
* PASSWORD (>= 8 characters) returns the password itself so the script can use it; it is
  listed in :data:`SECRET_HEAR_KINDS` so the dialog layer never echoes or stores it in the
  chat history (upstream replaced it with "[PASSWORD SET]", which made it unusable).
* MENU matches, in order: exact text, case-insensitive text, 1-based number (``2``, ``2.``,
  ``2)``), a unique case-insensitive prefix, then a unique case-insensitive substring
  (upstream code). The value is the option as given to ``HEAR ... AS``.
* Kinds that need outside services are validated locally as far as possible and the
  service call is left to the dialog layer: IMAGE/QRCODE/AUDIO/VIDEO/FILE/DOCUMENT expect
  the channel to deliver an attachment as its ``http(s)://`` URL; the value is that URL.
  When the URL path has a file extension it must fit the kind (an IMAGE cannot be
  ``.pdf``). QR decoding, transcription and video description happen after
  validation.
* LOGIN accepts no answer: nothing performs the OAuth flow of the spec, and text the user types is
  not an identity. It re-asks with :data:`LOGIN_UNAVAILABLE`; after the usual tries the script
  continues with an empty value (the signed-in user, when there is one, is ``USER``).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from urllib.parse import urlsplit

from apps.basic.builtins import BuiltinContext, value_to_text

# The spec (§3.5.1): after three invalid answers the dialog continues with an empty value,
# so a user who cannot or will not answer is never stuck in a loop.
HEAR_MAX_ATTEMPTS = 3
# No valid typed answer (email, date, CPF...) is anywhere near this long; refusing pasted
# documents early keeps regular expressions and date parsing cheap.
MAX_TYPED_INPUT_CHARS = 1_000
# Attachment references are URLs (presigned drive URLs run to a couple of kilobytes) and a
# LOGIN answer is the user object; 8 KB is above both and what most HTTP servers accept.
MAX_REFERENCE_INPUT_CHARS = 8_192
# RFC 5321 limits a forward path to 254 characters.
MAX_EMAIL_CHARS = 254
# Upstream range for NAME: a single letter is not a name, 100 characters is plenty.
MIN_NAME_CHARS, MAX_NAME_CHARS = 2, 100
# Upstream stores INTEGER answers in a signed 64-bit integer; larger numbers are typos.
MAX_INTEGER = 2**63 - 1
# Phone numbers (E.164) have at most 15 digits; fewer than 10 cannot reach a mobile.
MIN_PHONE_DIGITS, MAX_PHONE_DIGITS = 10, 15
# Payment card numbers (ISO/IEC 7812) are 13 to 19 digits long.
MIN_CARD_DIGITS, MAX_CARD_DIGITS = 13, 19
# A float has at most 309 integer digits; with 2 decimals 400 digits of precision never fail.
_CENTS_CONTEXT = Context(prec=400)
# Upstream minimum password length.
MIN_PASSWORD_CHARS = 8


@dataclass(frozen=True)
class HearResult:
    """Outcome of validating one answer: the value to store, or the message to re-ask with."""

    ok: bool
    value: object
    error: str


# Canonical kind -> aliases accepted in scripts (spec table, upstream hearing/types.rs).
_ALIASES: dict[str, tuple[str, ...]] = {
    "STRING": ("TEXT", "ANY"),
    "EMAIL": (),
    "NAME": (),
    "INTEGER": ("INT", "NUMBER"),
    "FLOAT": ("DECIMAL", "DOUBLE"),
    "BOOLEAN": ("BOOL",),
    "DATE": (),
    "HOUR": ("TIME",),
    "MONEY": ("CURRENCY", "AMOUNT"),
    "MOBILE": ("PHONE", "TELEPHONE"),
    "ZIPCODE": ("ZIP", "CEP", "POSTALCODE"),
    "LANGUAGE": ("LANG",),
    "CPF": (),
    "CNPJ": (),
    "URL": ("LINK",),
    "UUID": ("GUID",),
    "COLOR": ("COLOUR",),
    "CREDITCARD": ("CARD",),
    "PASSWORD": ("PASS", "SECRET"),
    "IMAGE": ("PHOTO", "PICTURE"),
    "QRCODE": ("QR",),
    "AUDIO": ("VOICE", "SOUND"),
    "VIDEO": (),
    "FILE": (),
    "DOCUMENT": ("DOC", "PDF"),
    "LOGIN": ("AUTH",),
    "MENU": (),
}
_CANONICAL: dict[str, str] = {
    name: canonical for canonical, aliases in _ALIASES.items() for name in (canonical, *aliases)
}

HEAR_KINDS: frozenset[str] = frozenset(_CANONICAL)
# Kinds whose answers must never be echoed, logged or kept in the chat history.
SECRET_HEAR_KINDS: frozenset[str] = frozenset(
    name for name, canonical in _CANONICAL.items() if canonical in ("PASSWORD", "CREDITCARD")
)

# Re-ask messages (upstream wording where it exists).
_ERRORS: dict[str, str] = {
    "EMAIL": "Please enter a valid email address (e.g., user@example.com)",
    "NAME": "Please enter a valid name (letters and spaces only)",
    "INTEGER": "Please enter a valid whole number",
    "FLOAT": "Please enter a valid number",
    "BOOLEAN": "Please answer yes or no",
    "DATE": "Please enter a valid date (e.g., 25/12/2024 or 2024-12-25)",
    "HOUR": "Please enter a valid time (e.g., 14:30 or 2:30 PM)",
    "MONEY": "Please enter a valid amount (e.g., 100.00 or R$ 100,00)",
    "MOBILE": "Please enter a valid mobile number with area code (e.g., +55 11 98765-4321)",
    "ZIPCODE": "Please enter a valid ZIP/postal code",
    "LANGUAGE": "Please enter a valid language code (e.g., en, pt, es)",
    "CPF": "Please enter a valid CPF (11 digits, e.g., 123.456.789-09)",
    "CNPJ": "Please enter a valid CNPJ (14 digits, e.g., 12.345.678/0001-95)",
    "URL": "Please enter a valid URL (e.g., https://example.com)",
    "UUID": "Please enter a valid UUID",
    "COLOR": "Please enter a valid color (e.g., #FF0000 or red)",
    "CREDITCARD": "Please enter a valid credit card number",
    "PASSWORD": "Please enter a password (minimum 8 characters)",
    "IMAGE": "Please send an image",
    "QRCODE": "Please send an image containing a QR code",
    "AUDIO": "Please send an audio file or voice message",
    "VIDEO": "Please send a video",
    "FILE": "Please upload a file",
    "DOCUMENT": "Please send a document (PDF, Word, etc.)",
    "LOGIN": "Please complete the authentication process",
}


def hear_kind_canonical(kind: str) -> str:
    """The canonical kind for a name or alias (``"PHONE"`` -> ``"MOBILE"``); ValueError if unknown."""
    canonical = _CANONICAL.get(kind.strip().upper())
    if canonical is None:
        raise ValueError(f"unknown HEAR kind {kind!r}; expected one of {', '.join(sorted(HEAR_KINDS))}")
    return canonical


def hear_validate(
    kind: str, text: str, *, ctx: BuiltinContext, options: list | None = None
) -> HearResult:
    """Validate and normalise one user answer for ``HEAR var AS kind``.

    Raises ValueError for an unknown kind or a MENU without options (programming errors the
    compiler prevents); never raises for any user text.
    """
    canonical = hear_kind_canonical(kind)
    if canonical == "MENU":
        if not options:
            raise ValueError("HEAR AS MENU needs at least one option")
        return _menu(text, options)
    if canonical == "STRING":
        return _ok(text.strip())
    if canonical == "PASSWORD":
        # Not trimmed: spaces can be part of a password.
        if len(text) < MIN_PASSWORD_CHARS:
            return _fail("Password must be at least 8 characters")
        return _ok(text)
    answer = text.strip()
    limit = MAX_REFERENCE_INPUT_CHARS if canonical in _REFERENCE_KINDS else MAX_TYPED_INPUT_CHARS
    if not answer or len(answer) > limit:
        return _fail(_ERRORS[canonical])
    return _VALIDATORS[canonical](answer, ctx)


def _ok(value: object) -> HearResult:
    return HearResult(True, value, "")


def _fail(message: str) -> HearResult:
    return HearResult(False, None, message)


# Kinds whose answer is a reference delivered by the channel (URL or JSON), not typed text.
_REFERENCE_KINDS = frozenset({"IMAGE", "QRCODE", "AUDIO", "VIDEO", "FILE", "DOCUMENT", "LOGIN"})


# ---------------------------------------------------------------------------------------
# Text kinds
# ---------------------------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


def _email(answer: str, ctx: BuiltinContext) -> HearResult:
    # A top-level domain is required: "user@localhost" is never a reachable user address.
    if len(answer) > MAX_EMAIL_CHARS or not _EMAIL_RE.fullmatch(answer) or ".." in answer:
        return _fail(_ERRORS["EMAIL"])
    return _ok(answer.lower())


# Letters of any script ([^\W\d_]), spaces, hyphens and apostrophes (O'Brien, Ana-Luísa).
_NAME_RE = re.compile(r"[^\W\d_]+(?:[ \-'’][^\W\d_]+)*[.]?")


def _name(answer: str, ctx: BuiltinContext) -> HearResult:
    collapsed = " ".join(answer.split())
    if len(collapsed) < MIN_NAME_CHARS:
        return _fail("Name must be at least 2 characters")
    if len(collapsed) > MAX_NAME_CHARS:
        return _fail("Name is too long (maximum 100 characters)")
    if not _NAME_RE.fullmatch(collapsed):
        return _fail(_ERRORS["NAME"])
    return _ok(" ".join(word[:1].upper() + word[1:] for word in collapsed.split(" ")))


_LANGUAGES: dict[str, tuple[str, ...]] = {
    "en": ("english", "inglês", "ingles"),
    "pt": ("portuguese", "português", "portugues"),
    "es": ("spanish", "espanhol", "español", "espanol"),
    "fr": ("french", "francês", "frances"),
    "de": ("german", "alemão", "alemao"),
    "it": ("italian", "italiano"),
    "ja": ("japanese", "japonês", "japones"),
    "zh": ("chinese", "chinês", "chines"),
    "ko": ("korean", "coreano"),
    "ru": ("russian", "russo"),
    "ar": ("arabic", "árabe", "arabe"),
    "hi": ("hindi",),
    "nl": ("dutch", "holandês", "holandes"),
    "pl": ("polish", "polonês", "polones"),
    "tr": ("turkish", "turco"),
}
_LANGUAGE_BY_NAME = {name: code for code, names in _LANGUAGES.items() for name in names}


def _language(answer: str, ctx: BuiltinContext) -> HearResult:
    lower = answer.lower()
    if lower in _LANGUAGE_BY_NAME:
        return _ok(_LANGUAGE_BY_NAME[lower])
    # Locale tags such as "pt-BR" or "en_US" reduce to their language.
    match = re.fullmatch(r"([a-z]{2})(?:[-_][a-z]{2})?", lower)
    if match:
        return _ok(match.group(1))
    return _fail(_ERRORS["LANGUAGE"])


def _url(answer: str, ctx: BuiltinContext) -> HearResult:
    candidate = answer if re.match(r"(?i)https?://", answer) else "https://" + answer
    if not _is_web_url(candidate):
        return _fail(_ERRORS["URL"])
    return _ok(candidate)


_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+")


def _is_web_url(candidate: str) -> bool:
    if any(ch.isspace() for ch in candidate):
        return False
    try:
        parts = urlsplit(candidate)
        hostname, _port = parts.hostname, parts.port  # .port raises for a bad port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(hostname) and bool(_HOST_RE.fullmatch(hostname))


def _uuid(answer: str, ctx: BuiltinContext) -> HearResult:
    try:
        return _ok(str(uuid.UUID(answer)))
    except ValueError:
        return _fail(_ERRORS["UUID"])


_NAMED_COLORS = {
    "red": "#FF0000", "green": "#00FF00", "blue": "#0000FF", "white": "#FFFFFF", "black": "#000000",
    "yellow": "#FFFF00", "orange": "#FFA500", "purple": "#800080", "pink": "#FFC0CB", "gray": "#808080",
    "grey": "#808080", "brown": "#A52A2A", "cyan": "#00FFFF", "magenta": "#FF00FF",
}


def _color(answer: str, ctx: BuiltinContext) -> HearResult:
    lower = answer.lower()
    if lower in _NAMED_COLORS:
        return _ok(_NAMED_COLORS[lower])
    hex_match = re.fullmatch(r"#?([0-9a-f]{6}|[0-9a-f]{3})", lower)
    if hex_match:
        digits = hex_match.group(1)
        if len(digits) == 3:
            digits = "".join(ch * 2 for ch in digits)
        return _ok("#" + digits.upper())
    rgb = re.fullmatch(r"rgb\s*\(\s*([0-9]{1,3})\s*,\s*([0-9]{1,3})\s*,\s*([0-9]{1,3})\s*\)", lower)
    if rgb:
        channels = [int(part) for part in rgb.groups()]
        if all(0 <= channel <= 255 for channel in channels):
            return _ok("#" + "".join(f"{channel:02X}" for channel in channels))
    return _fail(_ERRORS["COLOR"])


# ---------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------


def _integer(answer: str, ctx: BuiltinContext) -> HearResult:
    compact = answer.replace(" ", "")
    # Thousands separators only in groups of three: "1.234" and "1,234,567" are integers,
    # "1.5" is not a whole number (upstream stripped the dot and read 15).
    if not re.fullmatch(r"[+-]?(?:[0-9]+|[0-9]{1,3}(?:\.[0-9]{3})+|[0-9]{1,3}(?:,[0-9]{3})+)", compact):
        return _fail(_ERRORS["INTEGER"])
    number = int(re.sub(r"[.,]", "", compact))
    if abs(number) > MAX_INTEGER:
        return _fail(_ERRORS["INTEGER"])
    return _ok(number)


def _decimal_text(text: str) -> float | None:
    """Read "1.234,56", "1,234.56", "1234,5" or "1234.5"; None when it is not a number."""
    compact = text.replace(" ", "").replace("\u00a0", "")
    if not re.fullmatch(r"[+-]?(?:[0-9][0-9.,]*|[.,][0-9]+)", compact):
        return None
    if "," in compact and "." in compact:
        if compact.rfind(",") > compact.rfind("."):
            compact = compact.replace(".", "").replace(",", ".")
        else:
            compact = compact.replace(",", "")
    elif compact.count(",") == 1:
        compact = compact.replace(",", ".")
    elif compact.count(",") > 1:
        compact = compact.replace(",", "")  # "1,234,567": only thousands separators
    elif compact.count(".") > 1:
        compact = compact.replace(".", "")  # "1.234.567"
    try:
        return float(compact)
    except ValueError:
        return None


def _float(answer: str, ctx: BuiltinContext) -> HearResult:
    number = _decimal_text(answer)
    if number is None or number in (float("inf"), float("-inf")):
        return _fail(_ERRORS["FLOAT"])
    return _ok(number)


_CURRENCY_RE = re.compile(r"R\$|US\$|[$€£¥]|\b(?:BRL|USD|EUR|GBP|JPY)\b", re.IGNORECASE)


# An amount with one separator followed by exactly three digits, after one to three digits that are a
# whole first group: "$1,234", "R$ 1.234", "€1.500". Prices with three decimals do not exist, so the
# separator groups thousands (reading them as 1.23 / 1.5 under-charged by a factor of 1000).
_ONE_THOUSANDS_GROUP_RE = re.compile(r"([+-]?[1-9][0-9]{0,2})[.,]([0-9]{3})")


def _money(answer: str, ctx: BuiltinContext) -> HearResult:
    text = _CURRENCY_RE.sub("", answer).replace(" ", "").replace("\u00a0", "")
    grouped = _ONE_THOUSANDS_GROUP_RE.fullmatch(text)
    number = _decimal_text(grouped.group(1) + grouped.group(2) if grouped else text)
    if number is None or number < 0 or number == float("inf"):
        return _fail(_ERRORS["MONEY"])
    # Half-up on the decimal text (2.675 -> 2.68); float round() would give 2.67.
    cents = Decimal(repr(number)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP, context=_CENTS_CONTEXT)
    return _ok(float(cents) + 0.0)  # + 0.0 turns "-0" into 0.0


_TRUE_WORDS = frozenset(
    {"yes", "y", "true", "1", "sim", "s", "si", "oui", "ja", "da", "ok", "okay", "yeah", "yep", "sure",
     "confirm", "confirmed", "accept", "agreed", "agree"}
)
_FALSE_WORDS = frozenset(
    {"no", "n", "false", "0", "não", "nao", "non", "nein", "net", "nope", "cancel", "deny", "denied", "reject",
     "declined", "disagree"}
)


def _boolean(answer: str, ctx: BuiltinContext) -> HearResult:
    # "Sim!" and "yes." are common; trailing punctuation is not part of the answer.
    word = answer.lower().rstrip(".!?;, ")
    if word in _TRUE_WORDS:
        return _ok(True)
    if word in _FALSE_WORDS:
        return _ok(False)
    return _fail(_ERRORS["BOOLEAN"])


# ---------------------------------------------------------------------------------------
# Dates and times
# ---------------------------------------------------------------------------------------

_DATE_FORMATS = ("%d/%m/%Y", "%d-%m-%Y", "%Y-%m-%d", "%Y/%m/%d", "%d.%m.%Y", "%m/%d/%Y", "%d %b %Y", "%d %B %Y")
_RELATIVE_DAYS = {
    "today": 0, "hoje": 0, "hoy": 0,
    "tomorrow": 1, "amanhã": 1, "amanha": 1, "mañana": 1,
    "yesterday": -1, "ontem": -1, "ayer": -1,
}


def _date(answer: str, ctx: BuiltinContext) -> HearResult:
    for fmt in _DATE_FORMATS:
        try:
            return _ok(dt.datetime.strptime(answer, fmt).date().isoformat())
        except ValueError:
            continue
    offset = _RELATIVE_DAYS.get(answer.lower().rstrip("."))
    if offset is not None:
        return _ok((ctx.now().date() + dt.timedelta(days=offset)).isoformat())
    return _fail(_ERRORS["DATE"])


def _hour(answer: str, ctx: BuiltinContext) -> HearResult:
    text = answer.lower().replace(".", "")
    match24 = re.fullmatch(r"([01]?[0-9]|2[0-3])(?::|h)([0-5][0-9])", text)
    if match24:
        return _ok(f"{int(match24.group(1)):02d}:{match24.group(2)}")
    match12 = re.fullmatch(r"(1[0-2]|0?[1-9])(?::([0-5][0-9]))?\s*(am|pm)", text)
    if match12:
        hour = int(match12.group(1)) % 12 + (12 if match12.group(3) == "pm" else 0)
        return _ok(f"{hour:02d}:{match12.group(2) or '00'}")
    return _fail(_ERRORS["HOUR"])


# ---------------------------------------------------------------------------------------
# Documents and codes
# ---------------------------------------------------------------------------------------


def _digits_only(answer: str, allowed_punctuation: str) -> str | None:
    """The digits of an answer made only of digits and the given punctuation, else None."""
    if any(not (ch.isascii() and ch.isdigit()) and ch not in allowed_punctuation for ch in answer):
        return None
    return "".join(ch for ch in answer if ch.isascii() and ch.isdigit())


def _mobile(answer: str, ctx: BuiltinContext) -> HearResult:
    digits = _digits_only(answer, "+-(). ")
    if digits is None or not MIN_PHONE_DIGITS <= len(digits) <= MAX_PHONE_DIGITS:
        return _fail(_ERRORS["MOBILE"])
    return _ok(digits)


_UK_POSTCODE_RE = re.compile(r"([A-Z]{1,2}[0-9][A-Z0-9]?)\s*([0-9][A-Z]{2})")


def _zipcode(answer: str, ctx: BuiltinContext) -> HearResult:
    digits = _digits_only(answer, "-. ")
    if digits is not None and len(digits) == 8:
        return _ok(f"{digits[:5]}-{digits[5:]}")
    if digits is not None and len(digits) == 5:
        return _ok(digits)
    if digits is not None and len(digits) == 9:
        return _ok(f"{digits[:5]}-{digits[5:]}")
    uk = _UK_POSTCODE_RE.fullmatch(answer.upper())
    if uk:
        return _ok(f"{uk.group(1)} {uk.group(2)}")
    return _fail(_ERRORS["ZIPCODE"])


def _check_digit(digits: list[int], weights: list[int]) -> int:
    remainder = sum(d * w for d, w in zip(digits, weights, strict=True)) % 11
    return 0 if remainder < 2 else 11 - remainder


def _cpf(answer: str, ctx: BuiltinContext) -> HearResult:
    digits = _digits_only(answer, ".- ")
    if digits is None or len(digits) != 11:
        return _fail(_ERRORS["CPF"])
    numbers = [int(ch) for ch in digits]
    first = _check_digit(numbers[:9], list(range(10, 1, -1)))
    second = _check_digit(numbers[:10], list(range(11, 1, -1)))
    if len(set(digits)) == 1 or numbers[9] != first or numbers[10] != second:
        return _fail("That CPF is not valid, please check the digits (e.g., 123.456.789-09)")
    return _ok(f"{digits[:3]}.{digits[3:6]}.{digits[6:9]}-{digits[9:]}")


def _cnpj(answer: str, ctx: BuiltinContext) -> HearResult:
    digits = _digits_only(answer, "./- ")
    if digits is None or len(digits) != 14:
        return _fail(_ERRORS["CNPJ"])
    numbers = [int(ch) for ch in digits]
    first = _check_digit(numbers[:12], [5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    second = _check_digit(numbers[:13], [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2])
    if len(set(digits)) == 1 or numbers[12] != first or numbers[13] != second:
        return _fail("That CNPJ is not valid, please check the digits (e.g., 12.345.678/0001-95)")
    return _ok(f"{digits[:2]}.{digits[2:5]}.{digits[5:8]}/{digits[8:12]}-{digits[12:]}")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, ch in enumerate(reversed(digits)):
        value = int(ch)
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _credit_card(answer: str, ctx: BuiltinContext) -> HearResult:
    digits = _digits_only(answer, "- ")
    if digits is None or not MIN_CARD_DIGITS <= len(digits) <= MAX_CARD_DIGITS:
        return _fail(_ERRORS["CREDITCARD"])
    if not _luhn_ok(digits):
        return _fail("That card number is not valid, please check the digits")
    return _ok(f"{digits[:4]} **** **** {digits[-4:]}")


# ---------------------------------------------------------------------------------------
# Attachments and login (outside services run after this local check)
# ---------------------------------------------------------------------------------------

_EXTENSIONS: dict[str, frozenset[str]] = {
    "IMAGE": frozenset(["jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff", "heic", "heif", "svg"]),
    "AUDIO": frozenset(["mp3", "ogg", "oga", "opus", "wav", "m4a", "aac", "flac", "amr", "weba", "webm"]),
    "VIDEO": frozenset(["mp4", "mov", "avi", "mkv", "webm", "3gp", "m4v", "mpeg", "mpg"]),
    "DOCUMENT": frozenset(
        ["pdf", "doc", "docx", "odt", "rtf", "txt", "md", "xls", "xlsx", "ods", "csv", "ppt", "pptx", "odp"]
    ),
}
_EXTENSIONS["QRCODE"] = _EXTENSIONS["IMAGE"]


def _attachment(kind: str) -> Callable[[str, BuiltinContext], HearResult]:
    def validate(answer: str, ctx: BuiltinContext) -> HearResult:
        if not _is_web_url(answer):
            return _fail(_ERRORS[kind])
        path = urlsplit(answer).path
        last_segment = path.rsplit("/", 1)[-1]
        extension = last_segment.rsplit(".", 1)[-1].lower() if "." in last_segment else ""
        allowed = _EXTENSIONS.get(kind)
        # Channel media URLs often have no extension; only a contradicting one is refused.
        if allowed is not None and extension and extension not in allowed:
            return _fail(_ERRORS[kind])
        return _ok(answer)

    return validate


# Said to a user whose script waits on HEAR AS LOGIN: nothing in this platform performs the OAuth flow
# the spec describes, and an identity typed into the chat proves nothing.
LOGIN_UNAVAILABLE = ("Sign-in is not available in this chat: it needs a sign-in flow, and an identity "
                     "cannot be typed as a message")


def _login(answer: str, ctx: BuiltinContext) -> HearResult:
    """Never accepts the answer. Spec §3.5.1: LOGIN "waits for OAuth completion → user object"; the answer
    here is text the user typed, so accepting `{"id": "admin"}` made anyone any user. A verified
    sign-in must hand the identity to the script through the host (USER), never through the answer."""
    return _fail(LOGIN_UNAVAILABLE)


# ---------------------------------------------------------------------------------------
# Menu
# ---------------------------------------------------------------------------------------


def _menu(text: str, options: list) -> HearResult:
    labels = [value_to_text(option).strip() for option in options]
    answer = text.strip()
    lowered = answer.casefold()
    message = "Please select one of: " + ", ".join(labels)
    if not answer:
        return _fail(message)
    for index, label in enumerate(labels):
        if label == answer:
            return _ok(options[index])
    for index, label in enumerate(labels):
        if label.casefold() == lowered:
            return _ok(options[index])
    number = re.fullmatch(r"([0-9]{1,4})\s*[.)]?", answer)
    if number and 1 <= int(number.group(1)) <= len(options):
        return _ok(options[int(number.group(1)) - 1])
    for matches in (
        [i for i, label in enumerate(labels) if label.casefold().startswith(lowered)],
        [i for i, label in enumerate(labels) if lowered in label.casefold()],
    ):
        if len(matches) == 1:
            return _ok(options[matches[0]])
    return _fail(message)


_VALIDATORS: dict[str, Callable[[str, BuiltinContext], HearResult]] = {
    "EMAIL": _email,
    "NAME": _name,
    "INTEGER": _integer,
    "FLOAT": _float,
    "BOOLEAN": _boolean,
    "DATE": _date,
    "HOUR": _hour,
    "MONEY": _money,
    "MOBILE": _mobile,
    "ZIPCODE": _zipcode,
    "LANGUAGE": _language,
    "CPF": _cpf,
    "CNPJ": _cnpj,
    "URL": _url,
    "UUID": _uuid,
    "COLOR": _color,
    "CREDITCARD": _credit_card,
    "IMAGE": _attachment("IMAGE"),
    "QRCODE": _attachment("QRCODE"),
    "AUDIO": _attachment("AUDIO"),
    "VIDEO": _attachment("VIDEO"),
    "FILE": _attachment("FILE"),
    "DOCUMENT": _attachment("DOCUMENT"),
    "LOGIN": _login,
}
