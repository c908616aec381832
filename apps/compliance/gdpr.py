"""Data-subject rights: export (GDPR Art. 15/20, LGPD Art. 18 II/V) and erasure (Art. 17, LGPD Art. 18 VI).

A subject is a chat user (a `ChatUser` id) or a contact known by e-mail address or phone number. What the
tenant holds about one, found by `subject_data`:

- chat users: by id; by `email` or `external_id` equal to the address (case-insensitive); by an `external_id`
  holding the phone number in any spelling (not an address that merely contains its digits). A chat user's
  own `email`/`external_id` widen the search.
- their sessions and messages (every message of their sessions, the bot's answers included), their user
  memory (`ChatUser.memory`);
- bot memory entries (`BotMemory`) whose key names an identifier, or whose value (decrypted) mentions one;
- mail received from or sent to their addresses, and the attachments stored for received mail
  (`<bot>.gbai/<bot>.gbdrive/mail/inbox/<mail id>/`), with the knowledge-base documents (chunks, vectors)
  indexed from those files;
- bot table rows whose JSON mentions an identifier;
- consent records, and the archives of earlier exports of the same subject;
- (erasure only) analytics' daily top questions quoting an address or number of the subject;
- others' records naming the subject: mail sent to others (subject, text and HTML body), scheduled job runs
  (`JobRun.output`, `error_message`, the saved VM `state`) and meeting rooms (`Room.title`, `metadata`, the
  booking's description). Their lines naming the subject become REDACTED_LINE and their JSON loses the
  subject's parts (`Matcher.split`); the records stay, and an export carries only those lines and parts.
  A job run's saved VM state is the exception: it is removed whole, never edited (a frame's variables
  blanked, or a FOR EACH list losing an item under its saved index, resumes wrongly), and a run waiting to
  resume from it ends in error (JOB_RUN_ERASED_MESSAGE).

Drive files are reported, not changed: text files of every bot's `.gbdata/` (a CSV imported as a table
would bring an erased row back at its next import) and `.gbdrive/` (files scripts wrote) that name the
subject are listed in the erasure's report (`drive_files`, shown by the console) and the export's manifest,
for the operator to edit; files over DRIVE_SCAN_FILE_MAX_BYTES or beyond DRIVE_SCAN_MAX_FILES, and files or
folders the drive will not read (permissions, S3 AccessDenied), are listed as not searched (the request
still succeeds: the erasure itself is done). A key that holds an identifier is kept masked (`pii_mask`).

"Mentions" is exact (see `Matcher`): an address or id as a whole value or a whole token of free text
(ana@example.com never finds mariana@example.com), a phone number by its digits in any spelling, with or
without its country code, never inside a longer number or an address.

Erasure deletes all of it; it does not anonymise, except in what is shared with others: a bot memory value
shared by the bot (a "subscribers" list, a dict of leads keyed by address) loses only the subject's items
or entries, and a table row belongs to the subject only when a field of it IS their identifier (also written
`Ana Souza <ana@...>`, `mailto:ana@...`, `tel:+55...`) and that field is a contact field (`email`, `phone`, any
name containing mail/phone/tel/mobile/whatsapp such as `customer_email`, but not `referrer_email`) or no other
field holds someone else's address or number (`Matcher.owns`). Another person's row that names the
subject ({"customer": bob, "referred_by": ana}, a note quoting ana's address) is kept with the fields
naming the subject blanked; an export includes only those fields ("partial": true). A chat user row is
deleted rather than kept with its fields blanked: the row's only purpose is to link sessions to a
person, and a kept row would still link the person's past to anything recorded later under the same id.
Outgoing mail addressed to the subject and to others is deleted as a whole (the other recipients lose a
log row, never a delivered message).

Failure modes prevented:
- PII in the audit log or in the request row after an erasure: audit events carry the request id, the
  kind and the counts only; the request keeps a keyed digest of the identifier, the identifier is blanked.
- A half-done erasure left looking done: files go first, then documents, then every row in one
  transaction; a failure marks the request failed and a re-run (idempotent) finishes the job.
- A write lost to the erasure: a shared value (bot memory, another customer's table row) is redacted from the row
  as it is at the erasure, read under its lock, not from the copy the scan read (a subscriber a script added in
  between was dropped).
- One tenant's request touching another tenant: everything runs in the connection's tenant schema and
  drive (`tenant_drive()`), nothing takes a schema or a prefix as input.
- An export that exhausts memory: attached files beyond EXPORT_FILES_MAX_BYTES are listed, not included.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import logging
import re
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import connection, transaction
from django.db.models import F, Func, Q, TextField, Value
from django.db.models.functions import Cast, Coalesce, Concat
from django.utils import timezone

from apps.bots.services import DATA_CSV_MAX_BYTES
from apps.compliance.models import (
    REQUESTED_BY_MAX_LENGTH,
    SUBJECT_MAX_LENGTH,
    ConsentRecord,
    DataSubjectRequest,
    SubjectKind,
)
from apps.compliance.services import audit_record

logger = logging.getLogger(__name__)

# Where export archives go, relative to the tenant's drive root: outside every `<bot>.gbai/` package, so
# the DriveMonitor ignores them and no bot script (confined to its package) can read them.
EXPORTS_FOLDER = "_compliance/exports"
# Attached files larger than this in total are listed in the manifest but left out of the archive: the
# archive is built in memory by a worker (a mailbox's attachments are capped at 25 MB per mail upstream).
EXPORT_FILES_MAX_BYTES = 200 * 1024 * 1024
# Bot memory values are encrypted and cannot be searched in SQL: every entry is decrypted to look for the
# subject (an erasure that skipped some would be incomplete), this many rows read from the database at a time.
BOT_MEMORY_SCAN_BATCH = 2000
# A request whose runs end with their worker this many times in a row (an export too big for the worker's
# memory is killed, and the job is delivered again at once) fails instead of being run for ever.
DSR_INTERRUPTIONS_MAX = 3
# Beat's `compliance.requeue_stale` queues a request again once it has been pending this long since it was last
# handed to the broker: its job never got there (the broker down when the request was filed, Redis restarted
# and lost it), and a request the law gives a deadline would otherwise stay pending for ever. Far longer than
# the jobs queue holds a job on a busy day, so a job merely waiting its turn is not doubled (a double would only
# run the idempotent request twice). At most DSR_REQUEUE_BATCH per tenant and sweep.
DSR_REQUEUE_AFTER = timedelta(minutes=30)
DSR_REQUEUE_BATCH = 100
# E.164: at most 15 digits; fewer than 6 is a short code or an extension, not a person's number.
PHONE_DIGITS_MIN, PHONE_DIGITS_MAX = 6, 15
PHONE_RE = re.compile(r"^\+?[\d\s().-]+$")
# Received attachments are kept here inside the bot's drive area (apps.mail.services.INBOX_FOLDER).
MAIL_INBOX_FOLDER = "mail/inbox"
# Drive files are not changed by an erasure, only reported: a `.gbdata` CSV still holding the person brings
# their table row back at its next import, and files scripts wrote under `.gbdrive/` are the tenant's to
# edit. Text files (these suffixes) of every bot's `.gbdata/` and `.gbdrive/` are searched: each up to the
# size of the largest `.gbdata` CSV imported (apps.bots.services.DATA_CSV_MAX_BYTES), at most this many
# files per request (a drive of thousands of script outputs); the rest are listed as not searched.
DRIVE_SCAN_SUFFIXES = (".csv", ".tsv", ".txt", ".json", ".md", ".xml", ".html", ".htm", ".log", ".yaml", ".yml",
                       ".vcf", ".ics")
DRIVE_SCAN_FILE_MAX_BYTES = DATA_CSV_MAX_BYTES
DRIVE_SCAN_MAX_FILES = 2000


class SubjectError(ValueError):
    """The subject is not a chat user id, an e-mail address or a phone number (the message says which)."""


@dataclass(frozen=True)
class Subject:
    kind: str  # SubjectKind
    value: str  # normalised: lower-case address, digits with their "+", or the UUID's canonical form


def subject_parse(value: str) -> Subject:
    """A subject from what an operator typed: a chat user id, an e-mail address or a phone number."""
    text = str(value or "").strip()
    if not text:
        raise SubjectError("the subject is empty: give a chat user id, an e-mail address or a phone number")
    if len(text) > SUBJECT_MAX_LENGTH:
        raise SubjectError(f"the subject is {len(text)} characters long; the limit is {SUBJECT_MAX_LENGTH}")
    try:
        return Subject(SubjectKind.CHAT_USER, str(uuid.UUID(text)))
    except ValueError:
        pass
    if "@" in text:
        try:
            validate_email(text)
        except ValidationError:
            raise SubjectError(f"{text!r} is not a valid e-mail address") from None
        return Subject(SubjectKind.EMAIL, text.lower())
    digits = re.sub(r"\D", "", text)
    if PHONE_RE.match(text) and PHONE_DIGITS_MIN <= len(digits) <= PHONE_DIGITS_MAX:
        return Subject(SubjectKind.PHONE, ("+" if text.startswith("+") else "") + digits)
    raise SubjectError(f"{text!r} is neither a chat user id (UUID), an e-mail address nor a phone number")


def subject_spellings(subject: Subject) -> set[str]:
    """The stored values that name this subject: a phone number with and without its "+" (one typed
    `+55 11 98765-4321` and one typed `5511987654321` are the same person's)."""
    if subject.kind == SubjectKind.PHONE:
        digits = subject.value.lstrip("+")
        return {digits, "+" + digits}
    return {subject.value}


def subject_digest(subject: Subject) -> str:
    """A keyed hash of the subject: finds a person's requests later without storing who they are."""
    message = f"{subject.kind}:{subject.value.lstrip('+')}".encode()
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


# --- finding the subject's data ---------------------------------------------------------------------


@dataclass
class SubjectData:
    """Everything found about a subject in the current tenant (querysets are evaluated lazily)."""

    subject: Subject
    users: list = field(default_factory=list)
    identifiers: set[str] = field(default_factory=set)  # every string that names the person
    addresses: set[str] = field(default_factory=set)  # e-mail addresses (lower-case)
    sessions: Any = None
    messages: Any = None
    bot_memory: list = field(default_factory=list)
    mail_in: Any = None
    mail_out: list = field(default_factory=list)
    table_rows: Any = None
    consents: Any = None
    earlier_exports: Any = None
    analytics_questions: Any = None
    # Others' records naming the subject: mail sent to others, scheduled job runs, meeting rooms.
    mail_out_mentions: list = field(default_factory=list)
    job_runs: list = field(default_factory=list)
    meeting_rooms: list = field(default_factory=list)
    matcher: Matcher | None = None

    def attachment_prefixes(self) -> list[str]:
        from apps.mail.services import bot_drive_root

        mails = self.mail_in.select_related("bot")
        return [f"{bot_drive_root(mail.bot)}{MAIL_INBOX_FOLDER}/{mail.pk}/" for mail in mails]


def _digits(expression: str):
    return Func(F(expression), Value(r"[^0-9]"), Value(""), Value("g"), function="regexp_replace",
                output_field=TextField())


# --- matching: does a value name the subject? ---------------------------------------------------------
#
# Identifiers are compared exactly, never as substrings (ana@example.com must not find mariana@example.com,
# a six-digit phone must not find an order number):
# - e-mail addresses and other identifiers (chat user ids, channel ids): a whole value equal to one (trimmed,
#   case-insensitive), or one standing as a whole token in free text ("my email is ana@example.com");
# - phone numbers: by their digits, in every spelling ("+55 11 98765-4321", "5511987654321" and the
#   national "(11) 98765-4321" are one number), as a whole value or as a phone-like run in free text.
# SQL can only narrow the candidates (`_prefilter`); the decision is made here, in Python.

# A number written without its country code still names the person: two numbers match when the longer one
# ends with the shorter, the difference is a country code (1 to 3 digits, ITU E.164) and the shorter keeps
# at least this many digits (national numbers have 8 or more; a shorter tail is an extension or an order).
PHONE_COUNTRY_CODE_DIGITS_MAX = 3
PHONE_NATIONAL_DIGITS_MIN = 8
# A phone-like run in free text: digits and the separators people type between them, at most this many
# characters (15 digits of E.164 plus spaces, brackets and dashes); longer runs are cut into their pieces.
PHONE_RUN_MAX_CHARS = 32
_PHONE_RUN_RE = re.compile(rf"(?<![\w@.+])\+?\(?\d[\d \t().-]{{4,{PHONE_RUN_MAX_CHARS - 3}}}\d(?![\w@])")
# Identifiers that are neither an address nor a number (a channel's user id) shorter than this are too
# likely to be an ordinary word or count ("42") to be looked for outside the chat user's own row.
IDENTIFIER_MIN_CHARS = 6
# JSON values are walked this deep (a value nested deeper is matched as its JSON text, conservatively):
# bounds the recursion on a script's arbitrarily nested memory value.
MATCH_JSON_MAX_DEPTH = 32


# Field names (lower-case, letters and digits only) that hold the record's own person: a record whose such
# field IS the subject's identifier is the subject's, whatever else it names. Also any name containing one
# of CONTACT_FIELD_WORDS (`customer_email`, `mobilePhone`, `whatsapp_number`), unless one of its words says
# the address is another party's (`referrer_email`, `sales_rep_email`, `cc_email`: OTHER_PARTY_WORDS).
CONTACT_FIELD_NAMES = frozenset({
    "email", "mail", "emailaddress", "email1", "phone", "phonenumber", "telephone", "tel", "mobile", "cell",
    "cellphone", "whatsapp", "telefone", "celular", "contact", "contato", "externalid", "userid", "user",
})
# Words of a field name (`customer_email`, `mobilePhone`, `whatsapp_number`) that make it a contact field; whole
# words, so `hotel`, `intel`, `telemetry` or `mailbox_count` are not.
CONTACT_FIELD_WORDS = frozenset({"mail", "email", "phone", "telephone", "tel", "mobile", "whatsapp", "cell",
                                 "cellphone", "celular", "telefone", "fone"})
OTHER_PARTY_WORDS = frozenset({
    "ref", "refer", "referred", "referrer", "referer", "referral", "by", "rep", "sales", "agent", "manager",
    "seller", "vendor", "owner", "sponsor", "inviter", "invited", "sender", "from", "cc", "bcc", "parent",
    "guardian", "emergency", "friend", "assignee", "assigned", "indicado", "indicacao", "vendedor",
})
_EMAIL_SHAPE_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# What a line of free text naming the subject becomes in others' records (a mail's body, a job's output).
REDACTED_LINE = "[erased]"
# Why a waiting job run whose saved state named the subject was ended by their erasure (JobRun.error_message).
JOB_RUN_ERASED_MESSAGE = ("ended by a data-subject erasure: its saved state named the person erased and cannot "
                          "be resumed without them; run the job again if it is still needed")
# Records of others scanned for mentions (mail, job runs, rooms) are read this many at a time.
MENTION_SCAN_BATCH = 500
# Split results: the whole value is the subject's (GONE), nothing of it is (NOTHING).
GONE, NOTHING = object(), object()


def _field_name(key: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(key).lower())


def _is_contact_field(key: Any) -> bool:
    """The field holds the record's own person's address or number (see CONTACT_FIELD_NAMES)."""
    if _field_name(key) in CONTACT_FIELD_NAMES:
        return True
    words = {word.lower() for word in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", str(key))}
    return bool(words & CONTACT_FIELD_WORDS) and not words & OTHER_PARTY_WORDS


def _address_of(text: str) -> str:
    """The one e-mail address `text` is, lower-case (`Ana Souza <ana@x.com>`, `mailto:ana@x.com`, `ana@x.com
    (Ana)`); "" when it is not a single address (free text, a list, a group)."""
    text = text.strip()
    if text[:7].lower() == "mailto:":
        text = text[7:].split("?", 1)[0]
    # parseaddr takes "note: ana@x" for a group and "ana@x, bob@x" for ana@x: neither is one address; nor is a
    # value with two addresses ("ana@x <bob@x>", one per line), which parseaddr reads as its first or its last.
    if (text.count("@") != 1 or "\n" in text or text.count("<") > 1
            or re.search(r"[,;:]", re.sub(r'"[^"]*"', "", text))):
        return ""
    address = parseaddr(text)[1].strip()
    return address.lower() if "@" in address and not re.search(r"\s", address) else ""


def _names_someone(value: Any) -> bool:
    """A value shaped like a person's address or number (anyone's)."""
    if not isinstance(value, str):
        return False
    text = value.strip()
    return bool(_EMAIL_SHAPE_RE.match(text) or _EMAIL_SHAPE_RE.match(_address_of(text))) or (
        bool(PHONE_RE.match(text)) and PHONE_NATIONAL_DIGITS_MIN <= len(re.sub(r"\D", "", text)) <= PHONE_DIGITS_MAX)


def _same_phone(a: str, b: str) -> bool:
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return (len(short) >= PHONE_NATIONAL_DIGITS_MIN and long.endswith(short)
            and len(long) - len(short) <= PHONE_COUNTRY_CODE_DIGITS_MAX)


@dataclass(frozen=True)
class Matcher:
    """Whether a value names the subject, by the rules above."""

    names: frozenset[str] = frozenset()  # lower-case e-mail addresses and other identifiers
    phones: frozenset[str] = frozenset()  # digits of phone numbers (without "+")
    pattern: re.Pattern | None = None  # the names as whole tokens

    def __bool__(self) -> bool:
        return bool(self.names or self.phones)

    def _phone(self, digits: str) -> bool:
        return (PHONE_DIGITS_MIN <= len(digits) <= PHONE_DIGITS_MAX + PHONE_COUNTRY_CODE_DIGITS_MAX
                and any(_same_phone(digits, phone) for phone in self.phones))

    def is_identifier(self, value: Any) -> bool:
        """`value` as a whole IS an identifier of the subject (a field holding their address or number, also as
        `Ana Souza <ana@x.com>` or `mailto:ana@x.com`, or `tel:` and their number)."""
        if isinstance(value, bool) or value is None:
            return False
        if isinstance(value, int):
            return bool(self.phones) and self._phone(str(abs(value)))
        if not isinstance(value, str):
            return False
        text = value.strip()
        if text.lower() in self.names or (self.names and _address_of(text) in self.names):
            return True
        if text[:4].lower() == "tel:":
            text = text[4:].strip()
        return bool(self.phones) and bool(PHONE_RE.match(text)) and self._phone(re.sub(r"\D", "", text))

    def mentions(self, text: str) -> bool:
        """Free text names the subject: an identifier as a whole token, or a phone-like run of their number."""
        if not text:
            return False
        if self.pattern is not None and self.pattern.search(text):
            return True
        if self.phones:
            for run in _PHONE_RUN_RE.finditer(text):
                pieces = re.split(r"[ \t]+", run.group())
                for start in range(len(pieces)):  # "ids 1234 5511987654321": each run of whole pieces
                    for end in range(start + 1, len(pieces) + 1):
                        if self._phone(re.sub(r"\D", "", "".join(pieces[start:end]))):
                            return True
        return False

    def json_mentions(self, value: Any, depth: int = 0) -> bool:
        """A JSON value names the subject somewhere: in a string, a key or a number."""
        if depth > MATCH_JSON_MAX_DEPTH:
            return self.mentions(json.dumps(value, ensure_ascii=False, default=str))
        if isinstance(value, str):
            return self.mentions(value)
        if isinstance(value, dict):
            return any(self.mentions(str(key)) or self.json_mentions(item, depth + 1) for key, item in value.items())
        if isinstance(value, list | tuple):
            return any(self.json_mentions(item, depth + 1) for item in value)
        return self.is_identifier(value)

    def owns(self, record: dict) -> bool:
        """A dict (a table row, a record in a memory value) is the subject's: one of its fields IS their
        identifier, and it is a contact field (`email`, `phone`...) or no field holds another person's
        address or number. {"customer": "bob@x", "referred_by": "ana@x"} is Bob's row that names Ana."""
        own = [key for key, value in record.items() if self.is_identifier(value)]
        if not own:
            return False
        if any(_field_name(key) in CONTACT_FIELD_NAMES for key in own):
            return True  # `email`, `phone`: the record's own person
        others = [key for key, value in record.items() if key not in own and _names_someone(value)]
        if any(_is_contact_field(key) for key in own):
            # `teacher_email` is the record's person unless another contact field names someone else
            # ({"student_email": bob, "teacher_email": ana} is no more Ana's than Bob's: only her field goes).
            return not any(_is_contact_field(key) for key in others)
        return not others

    def split(self, value: Any, depth: int = 0) -> tuple[Any, Any]:
        """(what stays, what is about the subject) of a JSON value shared with others.

        The second is NOTHING when the value does not name the subject; the first is GONE when all of it
        is theirs. Inside: a string naming them is theirs whole; a record they own (`owns`) is theirs whole;
        a dict entry whose key names them goes; a list item that is theirs goes; a dict field that is
        theirs is blanked (""), so another person's record keeps its shape and the rest of its fields."""
        if depth > MATCH_JSON_MAX_DEPTH:
            return (GONE, value) if self.json_mentions(value, depth) else (value, NOTHING)
        if isinstance(value, str):
            return (GONE, value) if self.mentions(value) else (value, NOTHING)
        if isinstance(value, dict):
            if self.owns(value):
                return GONE, value
            kept, taken = {}, {}
            for key, item in value.items():
                if self.mentions(str(key)):
                    taken[key] = item
                    continue
                item_kept, item_taken = self.split(item, depth + 1)
                if item_taken is not NOTHING:
                    taken[key] = item_taken
                kept[key] = "" if item_kept is GONE else item_kept
            return (kept, taken) if taken else (value, NOTHING)
        if isinstance(value, list | tuple):
            kept, taken = [], []
            for item in value:
                item_kept, item_taken = self.split(item, depth + 1)
                if item_taken is not NOTHING:
                    taken.append(item_taken)
                if item_kept is not GONE:
                    kept.append(item_kept)
            return (kept, taken) if taken else (value, NOTHING)
        return (GONE, value) if self.is_identifier(value) else (value, NOTHING)

    def redact_text(self, text: str) -> tuple[str, list[str]]:
        """(`text` with each line naming the subject replaced by REDACTED_LINE, those lines)."""
        if not text or not self.mentions(text):
            return text, []
        kept, taken = [], []
        for line in text.split("\n"):
            named = self.mentions(line)
            kept.append(REDACTED_LINE if named else line)
            if named:
                taken.append(line)
        return ("\n".join(kept), taken) if taken else (REDACTED_LINE, [text])

    def prefilter(self, text_field: str) -> Q:
        """A SQL condition every row naming the subject in `text_field` meets (a superset: decide in Python).
        The query must annotate `<text_field>_digits` with `_digits(text_field)` when there are phones."""
        query = Q(pk__in=[])
        for name in self.names:
            query |= Q(**{f"{text_field}__icontains": name})
        for phone in self.phones:
            # Any spelling that matches holds at least this tail of the number, its digits contiguous.
            tail = phone[-max(PHONE_NATIONAL_DIGITS_MIN, len(phone) - PHONE_COUNTRY_CODE_DIGITS_MAX):]
            query |= Q(**{f"{text_field}_digits__contains": tail})
        return query


def subject_matcher(identifiers) -> Matcher:
    """A Matcher for these identifiers (addresses, numbers typed any way, chat user ids, channel ids)."""
    names, phones = set(), set()
    for identifier in identifiers:
        text = str(identifier or "").strip()
        if not text:
            continue
        try:
            parsed = subject_parse(text)
        except SubjectError:
            parsed = None
        if parsed is not None and parsed.kind == SubjectKind.PHONE:
            phones.add(parsed.value.lstrip("+"))
        elif parsed is not None:
            names.add(parsed.value)
        elif len(text) >= IDENTIFIER_MIN_CHARS:
            names.add(text.lower())
    pattern = None
    if names:
        alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
        # Not inside a longer address or word: "mariana@x.com", "ana@x.com.br" and "ana@x.company" are others.
        pattern = re.compile(rf"(?<![\w.%+-])(?:{alternatives})(?![\w-]|\.\w)", re.IGNORECASE)
    return Matcher(frozenset(names), frozenset(phones), pattern)


def _annotated(queryset, text_field: str, expression, matcher: Matcher):
    queryset = queryset.annotate(**{text_field: expression})
    if matcher.phones:
        queryset = queryset.annotate(**{f"{text_field}_digits": _digits(text_field)})
    return queryset.filter(matcher.prefilter(text_field))


def _users_for(subject: Subject):
    from apps.sessions.models import ChatUser

    if subject.kind == SubjectKind.CHAT_USER:
        return list(ChatUser.objects.filter(pk=subject.value))
    if subject.kind == SubjectKind.EMAIL:
        return list(ChatUser.objects.filter(Q(email__iexact=subject.value) | Q(external_id__iexact=subject.value)))
    # A channel id holding the number ("+55 11 98765-4321", "whatsapp:5511987654321"), never an address or
    # another id that merely contains its digits.
    matcher = subject_matcher(subject_spellings(subject))
    candidates = _annotated(ChatUser.objects.exclude(external_id=""), "ext_text", Cast("external_id", TextField()),
                            matcher)
    return [user for user in candidates.order_by("created_at") if matcher.mentions(user.external_id)]


@dataclass
class Found:
    """A row naming the subject: `kept` is what stays of its value (GONE: the row is theirs, deleted),
    `taken` what is about them (exported)."""

    row: Any
    kept: Any
    taken: Any

    @property
    def whole(self) -> bool:
        return self.kept is GONE


def _split_row(matcher: Matcher, row, value: Any, *, key: str = "") -> Found | None:
    if key and matcher.mentions(key):
        return Found(row, GONE, value)
    kept, taken = matcher.split(value)
    return None if taken is NOTHING else Found(row, kept, value if kept is GONE else taken)


@dataclass
class Mention:
    """A record of others' data that names the subject: its fields after redaction (`changes`, written by an
    erasure) and what in them named the subject (`taken`, exported)."""

    row: Any
    changes: dict[str, Any]
    taken: dict[str, Any]


def _mentions_in(matcher: Matcher, queryset, *, text_fields=(), json_fields: dict | None = None) -> list[Mention]:
    """Records of `queryset` whose text fields (line by line) or JSON fields (`Matcher.split`; a JSON field
    that is the subject's whole becomes its `json_fields` empty value) name the subject."""
    json_fields = json_fields or {}
    parts = []
    for name in (*text_fields, *json_fields):
        parts += [Coalesce(Cast(name, TextField()), Value(""), output_field=TextField()),
                  Value("\n", output_field=TextField())]
    candidates = _annotated(queryset, "found_text", Concat(*parts, output_field=TextField()), matcher)
    found = []
    for row in candidates.order_by("pk").iterator(chunk_size=MENTION_SCAN_BATCH):
        changes, taken = {}, {}
        for name in text_fields:
            kept, lines = matcher.redact_text(getattr(row, name) or "")
            if lines:
                changes[name], taken[name] = kept, lines
        for name, empty in json_fields.items():
            kept, part = matcher.split(getattr(row, name))
            if part is not NOTHING:
                changes[name], taken[name] = (empty if kept is GONE else kept), part
        if taken:
            found.append(Mention(row, changes, taken))
    return found


def _key_names(matcher: Matcher, key: str) -> bool:
    """The file's name names the subject (also before its suffix: `ana@example.com.csv`)."""
    return matcher.mentions(key) or matcher.mentions(key.rsplit(".", 1)[0])


def _report_key(matcher: Matcher, key: str) -> str:
    """A drive key to keep in a request's report: with the person's identifiers masked when the name holds one
    (the report outlives the erasure)."""
    from apps.compliance.pii import pii_mask

    return pii_mask(key) if _key_names(matcher, key) else key


def _listed(drive, prefix: str, not_searched: list[str], matcher: Matcher):
    """drive.list(prefix); a listing that fails (a folder it may not read, S3 AccessDenied) ends there with
    `prefix` listed as not searched, never failing the request."""
    try:
        yield from drive.list(prefix)
    except Exception as exc:  # noqa: BLE001 - reported as not searched; the erasure itself is done
        logger.warning("data-subject drive scan: cannot list %s (%s)", prefix, type(exc).__name__)
        not_searched.append(_report_key(matcher, prefix))


def drive_files_naming(matcher: Matcher, *, skip_prefixes=()) -> dict[str, list[str]]:
    """{"files": keys of text files under every bot's `.gbdata/` and `.gbdrive/` naming the subject,
    "not_searched": keys too large, beyond DRIVE_SCAN_MAX_FILES or that could not be read (a file or folder
    the drive refuses: permissions, S3 AccessDenied, a key the drive will not open)}. Nothing is changed, and
    nothing here raises for one file: an erasure has committed by the time this runs, and failing it for a
    report would mark it failed (and every re-run the same) although everything was erased."""
    from apps.bots.models import Bot
    from apps.drive.backends import DriveObjectTooLarge
    from apps.drive.storage import package_root, tenant_drive
    from apps.mail.services import bot_drive_root

    if not matcher:  # nothing to look for (a chat user id that is no user)
        return {"files": [], "not_searched": []}
    drive, found, skipped, read = tenant_drive(), [], [], 0
    for bot in Bot.objects.order_by("pk"):
        for prefix in (f"{package_root(bot.name)}{bot.name}.gbdata/", bot_drive_root(bot)):
            for entry in _listed(drive, prefix, skipped, matcher):
                if not entry.key.lower().endswith(DRIVE_SCAN_SUFFIXES) or entry.key.startswith(tuple(skip_prefixes)):
                    continue
                if entry.size > DRIVE_SCAN_FILE_MAX_BYTES or read >= DRIVE_SCAN_MAX_FILES:
                    skipped.append(_report_key(matcher, entry.key))
                    continue
                read += 1
                try:
                    content = drive.read(entry.key, max_bytes=DRIVE_SCAN_FILE_MAX_BYTES)
                except FileNotFoundError:
                    continue
                except DriveObjectTooLarge:
                    skipped.append(_report_key(matcher, entry.key))
                    continue
                except Exception as exc:  # noqa: BLE001 - PermissionError, S3 AccessDenied, DriveKeyError...
                    logger.warning("data-subject drive scan: cannot read %s (%s)", _report_key(matcher, entry.key),
                                   type(exc).__name__)
                    skipped.append(_report_key(matcher, entry.key))
                    continue
                if _key_names(matcher, entry.key) or matcher.mentions(content.decode("utf-8", "replace")):
                    found.append(_report_key(matcher, entry.key))
    return {"files": found, "not_searched": skipped}


def _bot_memory_for(matcher: Matcher) -> list[Found]:
    """Entries naming the subject. A value shared by the bot (a "subscribers" list, a dict of leads) gives up
    only the subject's items; an entry keyed by them, or a value that is theirs whole, goes whole."""
    from apps.bots.models import BotMemory

    found = []
    if not matcher:
        return found
    for row in BotMemory.objects.order_by("pk").iterator(chunk_size=BOT_MEMORY_SCAN_BATCH):
        hit = _split_row(matcher, row, row.value, key=row.key)
        if hit is not None:
            found.append(hit)
    return found


def _shared_rows_redact(matcher: Matcher, hits: list[Found], field: str, key: str | None) -> tuple[int, int]:
    """Redact the partly-shared rows of `hits` (table rows, bot memory): (deleted, redacted).

    From each row as it is now, read under its lock (one query for all), not from the copy the scan read: a
    script may have written it since (a subscriber added to a shared list), and saving the scan's copy lost that
    write. A row that has come to name only the subject goes whole."""
    partial = [hit.row.pk for hit in hits if not hit.whole]
    if not partial:
        return 0, 0
    model = type(hits[0].row)
    deleted = redacted = 0
    for row in model.objects.select_for_update().filter(pk__in=partial).order_by("pk"):
        fresh = _split_row(matcher, row, getattr(row, field), **({"key": getattr(row, key)} if key else {}))
        if fresh is None:
            continue  # no longer names the subject
        if fresh.whole:
            deleted += row.delete()[0]
        else:
            setattr(row, field, fresh.kept)
            row.save(update_fields=[field, *(["updated_at"] if hasattr(row, "updated_at") else [])])
            redacted += 1
    return deleted, redacted


def subject_data(subject: Subject) -> SubjectData:
    """Find what the current tenant holds about `subject` (see the module docstring for where it looks)."""
    from apps.bots.models import BotTableRow
    from apps.mail.models import IncomingMail, OutgoingMail
    from apps.sessions.models import ChatSession, Message

    if not subject.value.strip():
        # Every lookup below would match everything (`icontains ""`): a blank subject is never searched for.
        raise SubjectError("the subject is empty: give a chat user id, an e-mail address or a phone number")
    data = SubjectData(subject=subject)
    data.users = _users_for(subject)
    if subject.kind != SubjectKind.CHAT_USER:
        data.identifiers.add(subject.value)
    if subject.kind == SubjectKind.EMAIL:
        data.addresses.add(subject.value)
    for user in data.users:
        data.identifiers.add(str(user.pk))
        for value in (user.email, user.external_id):
            value = (value or "").strip()
            if value:
                data.identifiers.add(value.lower() if "@" in value else value)
                if "@" in value:
                    data.addresses.add(value.lower())
    user_ids = [user.pk for user in data.users]
    data.sessions = ChatSession.objects.filter(user_id__in=user_ids).select_related("bot").order_by("created_at")
    data.messages = Message.objects.filter(session__user_id__in=user_ids).order_by("session_id", "index")
    address_query = Q(pk__in=[])
    for address in data.addresses:
        address_query |= Q(from_address__iexact=address)
    data.mail_in = IncomingMail.objects.filter(address_query).order_by("pk")
    to_query = Q(pk__in=[])
    for address in data.addresses:
        to_query |= Q(to__icontains=address)
    # `to` is a comma-separated list: a substring match is confirmed against the parsed addresses.
    data.mail_out = [mail for mail in OutgoingMail.objects.filter(to_query).order_by("pk")
                     if data.addresses & {part.strip().lower() for part in mail.to.split(",")}]
    spellings = set(subject_spellings(subject))
    for identifier in data.identifiers:  # a chat user's external id may be a number typed any way
        with contextlib.suppress(SubjectError):
            spellings |= subject_spellings(subject_parse(identifier))
    data.matcher = subject_matcher(data.identifiers | spellings)
    rows = _annotated(BotTableRow.objects.all(), "row_text", Cast("data", TextField()), data.matcher)
    # A row is deleted only when it is the subject's (Matcher.owns); in another's row their fields are blanked.
    data.table_rows = [hit for hit in (_split_row(data.matcher, row, row.data) for row in rows.order_by("pk"))
                       if hit is not None]
    consent_query = Q(subject__in=data.identifiers | spellings | {str(pk) for pk in user_ids})
    data.consents = ConsentRecord.objects.filter(consent_query).order_by("at", "pk")
    data.bot_memory = _bot_memory_for(data.matcher)
    from apps.analytics.models import DailyQuestion

    # Top questions are kept verbatim per day: one that quotes the subject's address or number goes too.
    questions = _annotated(DailyQuestion.objects.all(), "question_text", Cast("text", TextField()), data.matcher)
    data.analytics_questions = DailyQuestion.objects.filter(
        pk__in=[q.pk for q in questions.only("pk", "text") if data.matcher.mentions(q.text)])
    from apps.automation.models import JobRun
    from apps.meet.models import Room

    # Places that name the person in others' records: their lines are redacted, the records stay.
    data.mail_out_mentions = _mentions_in(
        data.matcher, OutgoingMail.objects.exclude(pk__in=[mail.pk for mail in data.mail_out]),
        text_fields=("subject", "body_text", "body_html"))
    data.job_runs = _mentions_in(data.matcher, JobRun.objects.all(), text_fields=("output", "error_message"),
                                 json_fields={"state": None})
    data.meeting_rooms = _mentions_in(data.matcher, Room.objects.all(), text_fields=("title",),
                                      json_fields={"metadata": {}})
    data.earlier_exports = DataSubjectRequest.objects.filter(
        kind=DataSubjectRequest.Kind.EXPORT, subject_digest__in=_digests(subject, data)
    )
    return data


def _digests(subject: Subject, data: SubjectData) -> list[str]:
    """Digests of every way this person may have been named in a request."""
    names = {subject} | {Subject(SubjectKind.CHAT_USER, str(user.pk)) for user in data.users}
    for identifier in data.identifiers:
        try:
            names.add(subject_parse(identifier))
        except SubjectError:
            continue
    return [subject_digest(name) for name in names]


# --- export ----------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, indent=2, default=str).encode("utf-8")


def subject_export(*, subject: str | Subject, request_id: str = "") -> tuple[bytes, dict]:
    """A zip archive of everything about `subject` in the current tenant, and its counts per data class.

    The archive holds `manifest.json` (what is included, counts, what was left out and why) and one JSON
    file per data class; received attachments are under `files/` with their drive keys.
    """
    from apps.drive.storage import tenant_drive

    subject = subject if isinstance(subject, Subject) else subject_parse(subject)
    data = subject_data(subject)
    users = [{"id": str(u.pk), "username": u.username, "email": u.email, "external_id": u.external_id,
              "is_anonymous": u.is_anonymous, "created_at": _iso(u.created_at)} for u in data.users]
    memory = {str(u.pk): u.memory for u in data.users if u.memory}
    sessions = [{"id": str(s.pk), "user_id": str(s.user_id), "bot": s.bot.name, "channel": s.channel,
                 "title": s.title, "created_at": _iso(s.created_at), "last_activity": _iso(s.last_activity),
                 "state": s.state} for s in data.sessions]
    messages = [{"session_id": str(m.session_id), "index": m.index, "role": m.get_role_display(),
                 "content": m.content, "model": m.model, "meta": m.meta, "created_at": _iso(m.created_at)}
                for m in data.messages.iterator()]
    # Shared entries and others' rows: only what is about the subject ("partial": true).
    bot_memory = [{"bot_id": hit.row.bot_id, "key": hit.row.key, "value": hit.taken, "partial": not hit.whole,
                   "updated_at": _iso(hit.row.updated_at)} for hit in data.bot_memory]
    mail_in = list(data.mail_in.select_related("bot"))
    incoming = [{"id": m.pk, "bot": m.bot.name, "message_id": m.message_id, "from": m.from_address,
                 "subject": m.subject, "attachments": m.attachments, "status": m.status,
                 "received_at": _iso(m.received_at)} for m in mail_in]
    outgoing = [{"id": m.pk, "bot_id": m.bot_id, "to": m.to, "subject": m.subject, "body_text": m.body_text,
                 "body_html": m.body_html, "attachments": m.attachments, "status": m.status,
                 "created_at": _iso(m.created_at), "sent_at": _iso(m.sent_at)} for m in data.mail_out]
    rows = [{"id": hit.row.pk, "bot_id": hit.row.bot_id, "table": hit.row.table, "data": hit.taken,
             "partial": not hit.whole, "created_at": _iso(hit.row.created_at)} for hit in data.table_rows]
    consents = [{"purpose": c.purpose, "granted": c.granted, "at": _iso(c.at), "source": c.source}
                for c in data.consents]
    # Others' records: only the lines / parts naming the subject, never the other people's addresses.
    mail_mentions = [{"id": hit.row.pk, "bot_id": hit.row.bot_id, "created_at": _iso(hit.row.created_at),
                      **hit.taken, "partial": True} for hit in data.mail_out_mentions]
    job_runs = [{"id": hit.row.pk, "bot_id": hit.row.bot_id, "script": hit.row.script_name,
                 "scheduled_for": _iso(hit.row.scheduled_for), **hit.taken, "partial": True}
                for hit in data.job_runs]
    rooms = [{"id": hit.row.pk, "created_at": _iso(hit.row.created_at), **hit.taken, "partial": True}
             for hit in data.meeting_rooms]

    drive = tenant_drive()
    files, skipped, total = [], [], 0
    for prefix in data.attachment_prefixes():
        for entry in drive.list(prefix):
            if total + entry.size > EXPORT_FILES_MAX_BYTES:
                skipped.append({"key": entry.key, "size": entry.size, "reason": "archive size limit"})
                continue
            total += entry.size
            files.append((entry.key, drive.read(entry.key)))

    drive_files = drive_files_naming(data.matcher, skip_prefixes=data.attachment_prefixes())
    counts = {"chat_users": len(users), "user_memory_keys": sum(len(m) for m in memory.values()),
              "sessions": len(sessions), "messages": len(messages), "bot_memory": len(bot_memory),
              "mail_incoming": len(incoming), "mail_outgoing": len(outgoing), "bot_table_rows": len(rows),
              "consents": len(consents), "files": len(files), "mail_outgoing_mentions": len(mail_mentions),
              "job_runs": len(job_runs), "meeting_rooms": len(rooms)}
    manifest = {
        "request_id": request_id, "tenant": connection.schema_name, "generated_at": _iso(timezone.now()),
        "subject": {"kind": subject.kind, "value": subject.value}, "counts": counts,
        "files": {
            "chat_users.json": "chat user rows matching the subject",
            "user_memory.json": "SET USER MEMORY values per chat user",
            "sessions.json": "conversations of those users (with dialog state)",
            "messages.json": "every message of those conversations, the bot's answers included",
            "bot_memory.json": "bot memory entries whose key or value names the subject (partial: only the "
                               "subject's items of a value shared with others)",
            "mail_incoming.json": "mail received from the subject's addresses",
            "mail_outgoing.json": "mail sent to the subject's addresses",
            "bot_table_rows.json": "bot table rows of the subject, and (partial) the fields of others' rows "
                                   "that name the subject",
            "consents.json": "consent decisions",
            "mail_outgoing_mentions.json": "lines of mail sent to others (subject, body) naming the subject",
            "job_runs.json": "lines of scheduled jobs' output and the parts of their saved state naming the subject",
            "meeting_rooms.json": "meeting rooms whose title or booking details name the subject (those parts)",
            "files/": "attachments of the received mail, under their drive keys",
        },
        "not_included": [
            "the audit log (records actions, not the subject's data; see the controller's records)",
            "knowledge-base documents (built from the bots' packages, not from the subject)",
            "meeting participation events and recordings (named by LiveKit identities, not contacts)",
        ],
        "files_skipped": skipped,
        # Not exported: the bots' own data files that name the subject (text of the tenant's packages).
        "drive_files_naming_subject": drive_files["files"],
        "drive_files_not_searched": drive_files["not_searched"],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, payload in (("manifest.json", manifest), ("chat_users.json", users),
                              ("user_memory.json", memory), ("sessions.json", sessions),
                              ("messages.json", messages), ("bot_memory.json", bot_memory),
                              ("mail_incoming.json", incoming), ("mail_outgoing.json", outgoing),
                              ("bot_table_rows.json", rows), ("consents.json", consents),
                              ("mail_outgoing_mentions.json", mail_mentions), ("job_runs.json", job_runs),
                              ("meeting_rooms.json", rooms)):
            archive.writestr(name, _json(payload))
        for key, content in files:
            archive.writestr(f"files/{key}", content)
    return buffer.getvalue(), counts


def export_archive_key(request_id: uuid.UUID | str) -> str:
    return f"{EXPORTS_FOLDER}/{request_id}.zip.sealed"


class ExportArchiveUnreadable(FileNotFoundError):
    """The stored archive cannot be opened (tampered with, copied from another tenant, or its key removed)."""


def _archive_context(request_id: uuid.UUID | str) -> str:
    # Bound to the tenant and the request: an archive copied to another tenant or request does not open.
    return f"{connection.schema_name}:dsr-export:{request_id}"


def export_archive_store(*, request_id: uuid.UUID | str, archive: bytes) -> str:
    """Seal `archive` (AES-256-GCM, apps.core.crypto) and write it to the tenant's drive; returns its key.

    Sealed because the drive is readable by more than the privacy officer (console drive browser, S3
    operators, backups): only `subject_export_read` opens it. Archives expire after a month
    (retention.EXPORT_ARCHIVE_KEEP_DAYS), well within any key-rotation cycle that keeps old keys readable.
    """
    from apps.core.crypto import encrypt
    from apps.drive.storage import tenant_drive

    key = export_archive_key(request_id)
    tenant_drive().write(key, encrypt(archive, context=_archive_context(request_id)).encode("ascii"))
    return key


# Base64 characters holding the longest envelope header plus its nonce and tag (2 + 64 + 12 + 16 = 94 bytes):
# enough for apps.core.crypto to name an archive's key without decoding the whole archive.
_ARCHIVE_HEAD_CHARS = 128


def export_archives_by_key() -> dict[str, list[str]]:
    """{key id: [drive keys]} of the current tenant's sealed export archives, read from each archive's header.

    The archives are sealed with the key active when they were made and kept EXPORT_ARCHIVE_KEEP_DAYS: a key
    retired meanwhile would leave them unreadable (encryption_rotate --retire asks this first). An object there
    that is no envelope is listed under "" (it opens under no key)."""
    from apps.core.crypto import DecryptionError, token_key_id
    from apps.drive.storage import tenant_drive

    drive = tenant_drive()
    found: dict[str, list[str]] = {}
    for entry in drive.list(EXPORTS_FOLDER):
        try:
            head = drive.read(entry.key)[:_ARCHIVE_HEAD_CHARS].decode("ascii")
            key_id = token_key_id(head)
        except FileNotFoundError:
            continue  # expired or erased while listed
        except (UnicodeDecodeError, DecryptionError):
            key_id = ""
        found.setdefault(key_id, []).append(entry.key)
    return found


# --- erasure ---------------------------------------------------------------------------------------


def subject_erase(*, subject: str | Subject) -> dict[str, int]:
    """Delete everything about `subject` in the current tenant; counts per data class. Idempotent: a second
    run finds nothing and returns zeros (but `drive_files_naming_subject`, files it does not change)."""
    return subject_erase_report(subject=subject)["counts"]


def subject_erase_report(*, subject: str | Subject) -> dict:
    """subject_erase, and the drive files left for the operator: {"counts": {...}, "drive_files": [keys of
    `.gbdata`/`.gbdrive` text files still naming the subject], "drive_files_not_searched": [keys]}."""
    from apps.drive.storage import tenant_drive
    from apps.kb.models import Chunk, Document
    from apps.kb.services import document_remove

    subject = subject if isinstance(subject, Subject) else subject_parse(subject)
    data = subject_data(subject)
    drive = tenant_drive()
    counts = dict.fromkeys(("chat_users", "user_memory_keys", "sessions", "messages", "bot_memory",
                            "mail_incoming", "mail_outgoing", "bot_table_rows", "bot_table_rows_redacted",
                            "bot_memory_redacted", "mail_outgoing_redacted", "job_runs_redacted",
                            "meeting_rooms_redacted", "consents", "files",
                            "documents", "chunks", "exports", "analytics_questions", "llm_cached_answers"), 0)

    # Files first (outside the transaction: a drive cannot roll back). A failure later leaves rows that a
    # re-run finds again; their files are already gone, which is the direction to fail in.
    prefixes = data.attachment_prefixes()
    for prefix in prefixes:
        documents = Document.objects.filter(path__startswith=prefix)
        counts["chunks"] += Chunk.objects.filter(document__in=documents).count()
        for path in list(documents.values_list("path", flat=True)):
            counts["documents"] += int(document_remove(path=path))
        counts["files"] += drive.delete_prefix(prefix)
    for export in data.earlier_exports:
        key = export_archive_key(export.pk)
        if drive.exists(key):
            drive.delete(key)
            counts["exports"] += 1

    with transaction.atomic():
        user_ids = [user.pk for user in data.users]
        counts["user_memory_keys"] = sum(len(user.memory or {}) for user in data.users)
        counts["messages"] = data.messages.count()
        counts["sessions"] = data.sessions.count()
        counts["mail_incoming"] = data.mail_in.count()
        data.mail_in.delete()
        mail_out_ids = [mail.pk for mail in data.mail_out]
        from apps.mail.models import OutgoingMail

        counts["mail_outgoing"] = OutgoingMail.objects.filter(pk__in=mail_out_ids).delete()[1].get(
            OutgoingMail._meta.label, 0)
        from apps.bots.models import BotMemory, BotTableRow

        counts["bot_table_rows"] = BotTableRow.objects.filter(
            pk__in=[hit.row.pk for hit in data.table_rows if hit.whole]).delete()[0]
        counts["bot_memory"] += BotMemory.objects.filter(
            pk__in=[hit.row.pk for hit in data.bot_memory if hit.whole]).delete()[0]
        for hits, field, key, label in ((data.table_rows, "data", None, "bot_table_rows"),
                                        (data.bot_memory, "value", "key", "bot_memory")):
            deleted, redacted = _shared_rows_redact(data.matcher, hits, field, key)
            counts[label] += deleted
            counts[f"{label}_redacted"] += redacted
        counts["consents"] = data.consents.delete()[0]
        from apps.automation.models import JobRun
        from apps.meet.models import Room

        for key, model, hits in (("mail_outgoing_redacted", OutgoingMail, data.mail_out_mentions),
                                 ("job_runs_redacted", JobRun, data.job_runs),
                                 ("meeting_rooms_redacted", Room, data.meeting_rooms)):
            for hit in hits:
                changes = dict(hit.changes)
                if model is JobRun and "state" in changes:
                    # A VM snapshot is never edited: a frame's variables blanked to "" or a FOR EACH list
                    # that lost an item (its saved index then skips the next person) resumes wrongly. The
                    # state goes whole; a run still waiting on it ends in error (the status is checked in
                    # the UPDATE: a resume may have started since the run was read).
                    changes["state"] = None
                    if JobRun.objects.filter(pk=hit.row.pk, status=JobRun.Status.WAITING).update(
                            **{**changes, "status": JobRun.Status.ERROR, "resume_at": None,
                               "finished_at": timezone.now(), "error_message": JOB_RUN_ERASED_MESSAGE}):
                        counts[key] += 1
                        continue
                counts[key] += model.objects.filter(pk=hit.row.pk).update(**changes)
        counts["analytics_questions"] = data.analytics_questions.delete()[0]
        from apps.sessions.models import ChatUser

        # Sessions and their messages go with the user (cascade); counted above.
        counts["chat_users"] = ChatUser.objects.filter(pk__in=user_ids).delete()[1].get(ChatUser._meta.label, 0)
        # Requests about the person keep their digest (proof of what was done), not the identifier: done and
        # failed ones at once, those still to run when they finish (subject_request_execute blanks it then).
        DataSubjectRequest.objects.filter(subject_digest__in=_digests(subject, data)).exclude(
            status__in=[DataSubjectRequest.Status.PENDING, DataSubjectRequest.Status.RUNNING]).update(subject="")
    # Cached LLM answers keep questions verbatim and cannot be told apart by person: the tenant's all go.
    from django.db import connection

    from apps.llm.cache import cache_clear_tenant

    counts["llm_cached_answers"] = cache_clear_tenant(connection.schema_name)
    # Files are reported, not changed: the operator edits them (a .gbdata CSV would bring the rows back).
    drive_files = drive_files_naming(data.matcher)
    counts["drive_files_naming_subject"] = len(drive_files["files"])
    return {"counts": counts, "drive_files": drive_files["files"],
            "drive_files_not_searched": drive_files["not_searched"]}


# --- requests: created by the console, carried out by a job -----------------------------------------


def subject_request_create(*, kind: str, subject: str, requested_by: str, request=None) -> DataSubjectRequest:
    """Record an export or erasure request and queue its job (after commit). SubjectError on a bad subject."""
    from apps.compliance.tasks import subject_request_run_task

    if kind not in DataSubjectRequest.Kind.values:
        raise ValueError(f"unknown request kind {kind!r}; expected one of {DataSubjectRequest.Kind.values}")
    parsed = subject_parse(subject)
    with transaction.atomic():
        row = DataSubjectRequest.objects.create(
            id=uuid.uuid4(), kind=kind, subject_kind=parsed.kind, subject=parsed.value,
            subject_digest=subject_digest(parsed), requested_by=str(requested_by)[:REQUESTED_BY_MAX_LENGTH],
        )
        audit_record(action="dsr.requested", actor=requested_by, object_type="data_subject_request",
                     object_id=str(row.pk), summary={"kind": kind}, request=request)
        # Robust: the request is recorded either way; with the broker down the sweep queues it later, and the
        # caller (the console) shows it pending instead of failing after it was saved.
        transaction.on_commit(lambda: subject_request_run_task.delay(str(row.pk)), robust=True)
    return row


def subject_requests_requeue_stale(*, older_than: timedelta = DSR_REQUEUE_AFTER) -> int:
    """Queue again the current tenant's requests still pending `older_than` after they were last queued: their
    job was lost. Safe to repeat: `subject_request_execute` leaves a done request alone."""
    from apps.compliance.tasks import subject_request_run_task

    cutoff = timezone.now() - older_than
    stale = DataSubjectRequest.objects.filter(status=DataSubjectRequest.Status.PENDING, queued_at__lt=cutoff)
    queued: list[uuid.UUID] = []
    try:
        for request_id in stale.order_by("queued_at").values_list("pk", flat=True)[:DSR_REQUEUE_BATCH]:
            # The broker down still: raises; the next sweep. `requeued`: should the lost job turn up after all
            # (it was only stuck behind a backlog), the later copy finds the request taken and does nothing.
            subject_request_run_task.delay(str(request_id), requeued=True)
            queued.append(request_id)
    finally:  # one UPDATE for the rows queued (also when the broker failed part way)
        if queued:
            DataSubjectRequest.objects.filter(pk__in=queued).update(queued_at=timezone.now())
    if queued:
        logger.warning("compliance: queued %d data-subject requests again whose job was lost", len(queued))
    return len(queued)


def subject_request_execute(*, request_id: str, requeued: bool = False) -> DataSubjectRequest:
    """Carry out a request (the job). Done requests are left alone; a failed or interrupted one runs again.
    `requeued` (a copy the stale sweep queued): only a request still pending runs; one already running is the
    original job's, not one whose worker died, and running it again would run it twice at once (and count an
    interruption that did not happen)."""
    with transaction.atomic():
        row = DataSubjectRequest.objects.select_for_update().get(pk=request_id)
        Status = DataSubjectRequest.Status
        if row.status == Status.DONE or (requeued and row.status != Status.PENDING):
            return row
        # Still `running`: the last run ended with its worker (a killed worker's job is delivered again).
        row.interrupted = row.interrupted + 1 if row.status == DataSubjectRequest.Status.RUNNING else 0
        if row.interrupted >= DSR_INTERRUPTIONS_MAX:
            row.status = DataSubjectRequest.Status.FAILED
            row.error = (f"stopped after {row.interrupted} runs ended with their worker (out of memory, or "
                         "killed?); look at the workers' logs, then ask again")
            row.save(update_fields=["status", "error", "interrupted"])
            audit_record(action="dsr.export" if row.kind == DataSubjectRequest.Kind.EXPORT else "dsr.erase",
                         actor=row.requested_by, object_type="data_subject_request", object_id=str(row.pk),
                         summary={"status": "failed"})
            return row
        row.status, row.started_at, row.error = DataSubjectRequest.Status.RUNNING, timezone.now(), ""
        row.save(update_fields=["status", "started_at", "error", "interrupted"])
    subject = Subject(row.subject_kind, row.subject)
    action = "dsr.export" if row.kind == DataSubjectRequest.Kind.EXPORT else "dsr.erase"
    if not row.subject:
        # Blanked by an erasure of the same person before this request ran (before that erasure kept the
        # identifier of pending requests): there is nothing left to look for, and no way to look.
        DataSubjectRequest.objects.filter(pk=row.pk).update(
            status=DataSubjectRequest.Status.FAILED,
            error="the subject's identifier was removed by an earlier erasure of the same person; "
                  "nothing of theirs is left to export or erase")
        audit_record(action=action, actor=row.requested_by, object_type="data_subject_request",
                     object_id=str(row.pk), summary={"status": "failed"})
        row.refresh_from_db()
        return row
    try:
        if row.kind == DataSubjectRequest.Kind.EXPORT:
            archive, counts = subject_export(subject=subject, request_id=str(row.pk))
            key = export_archive_store(request_id=row.pk, archive=archive)
            report = {"archive": key, "size": len(archive), "counts": counts}
        else:
            report = subject_erase_report(subject=subject)
    except Exception as exc:
        DataSubjectRequest.objects.filter(pk=row.pk).update(
            status=DataSubjectRequest.Status.FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
        audit_record(action=action, actor=row.requested_by, object_type="data_subject_request",
                     object_id=str(row.pk), summary={"status": "failed"})
        raise
    with transaction.atomic():
        updates = {"status": DataSubjectRequest.Status.DONE, "report": report, "completed_at": timezone.now()}
        if row.kind == DataSubjectRequest.Kind.ERASURE or DataSubjectRequest.objects.filter(
                subject_digest=row.subject_digest, kind=DataSubjectRequest.Kind.ERASURE,
                status=DataSubjectRequest.Status.DONE).exists():
            # An export finished after the person's erasure keeps only the digest too.
            updates["subject"] = ""
        DataSubjectRequest.objects.filter(pk=row.pk).update(**updates)
        audit_record(action=action, actor=row.requested_by, object_type="data_subject_request",
                     object_id=str(row.pk), summary={"status": "done", "counts": report["counts"]})
    row.refresh_from_db()
    return row


def subject_export_read(*, request_id: str) -> bytes:
    """The archive (zip) of a finished export of the current tenant, for the console's download.
    DoesNotExist for no such export; FileNotFoundError when its archive expired or cannot be opened."""
    from apps.core.crypto import DecryptionError, decrypt
    from apps.drive.storage import tenant_drive

    row = DataSubjectRequest.objects.get(pk=request_id, kind=DataSubjectRequest.Kind.EXPORT,
                                         status=DataSubjectRequest.Status.DONE)
    sealed = tenant_drive().read(export_archive_key(row.pk))
    try:
        return decrypt(sealed.decode("ascii", "replace"), context=_archive_context(row.pk))
    except DecryptionError as exc:
        raise ExportArchiveUnreadable(f"export archive of request {row.pk} cannot be opened: {exc}") from None
