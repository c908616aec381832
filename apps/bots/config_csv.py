"""`config.csv` of a bot package: parsing, key normalisation, lookup and `param-*` injection.

This module owns the reading of a `<bot>.gbot/config.csv` file (spec §2) and nothing else: services
store the parsed rows and call `config_lookup` / `config_params` at run time. Pure functions, no Django.

Failure modes it prevents:

* A malformed line silently becoming a setting (or silently vanishing): every rejected line produces a
  `ConfigIssue` whose message names the line and what is wrong (`line 7: expected key,value (no comma
  found)`), so the deploy can show it to the bot author instead of a stack trace.
* An oversized or binary upload exhausting memory or the database: the file size is checked before
  anything is decoded, and keys/values have their own caps; NUL bytes and invalid UTF-8 are reported with
  their position instead of being stored.
* A spreadsheet cell with line breaks (`"system-prompt","You are helpful,⏎friendly"`) read as several settings:
  upstream reads the file line by line (§2.1), so its lines became settings (`friendly`); a quote left open on
  its line is an issue naming the line that closes it, and those lines are not read as settings.
* Two spellings of one setting diverging: the legacy v3 Title Case dialect (`Theme Color`, `Bot Name`)
  and today's kebab-case (`theme-color1`, `bot-name`) resolve through one canonical form.
* Placeholders and developer-machine paths (`none`, `../models/x.gguf`) overriding a working default:
  lookup treats them as absent, as upstream does (§2.2).
* Secrets leaking into config storage: `vault:` values are kept verbatim as references; resolving them is
  somebody else's job, never this module's.

Choices at the spec's [GAP]s (§2.1): both `name,value` and `key,value` header lines are skipped (upstream
stores `name` as a key); a duplicate key is an issue, so the file is refused like any other with one (upstream
upserts line by line and the last silently wins: two values for one setting are most often an edit made to
the wrong line, and which one the author meant is theirs to say).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

# --- limits ----------------------------------------------------------------------------------------------

# A config file is settings, not content; 1 MiB is the spec's `script-max-size` and leaves room for long
# system prompts while refusing a mis-uploaded dataset before it is decoded (§1.3).
CONFIG_MAX_BYTES = 1024 * 1024
# The longest catalogue key is under 40 characters (§2.4); 128 allows generous custom `param-*` names.
CONFIG_MAX_KEY_CHARS = 128
# Values include whole system prompts (`system-prompt`, `Error Message,...`); 64 KiB of text is far beyond
# a sensible prompt and still bounded per row.
CONFIG_MAX_VALUE_CHARS = 64 * 1024

# --- vocabulary ------------------------------------------------------------------------------------------

UTF8_BOM = b"\xef\xbb\xbf"
BOM_CHAR = "\ufeff"  # the same mark in text decoded as "utf-8" (not "utf-8-sig")
# Spreadsheet exports put a header row first; both spellings appear in templates (§2.1 [GAP]).
HEADER_KEYS = frozenset({"name", "key"})
# Values the upstream reader treats as "not set" (§2.1, case-insensitive).
UNSET_VALUES = frozenset({"", "none", "null", "n/a"})
# A value that points at a file on the author's machine is meaningless on the server (§2.2): upstream's
# reader ignores values with these prefixes or suffixes (e.g. `llm-model,../models/x.gguf`).
LOCAL_PATH_PREFIXES = ("../", "./", "/", "~")
LOCAL_PATH_SUFFIXES = (".gguf", ".bin", ".safetensors")
# Values that name a secret in the vault instead of holding it (`meet-api-key,vault:gbo/meet/api_key`).
VAULT_REFERENCE_PREFIX = "vault:"
# `param-<name>` rows become script variables (§2.3); the prefix is case-sensitive upstream.
PARAM_PREFIX = "param-"

# Legacy or alternative spellings -> the canonical key, applied AFTER lower-casing and turning spaces and
# underscores into hyphens. Only pairs the spec lists as the same setting (§2.4):
#   theme-color          -> theme-color1            (`Theme Color`; the web UI reads both)
#   max-tokens           -> llm-max-tokens          (both documented as the output cap)
#   bot-system-prompt    -> system-prompt           (both documented as the bot persona)
#   smtp-username        -> smtp-user               (`smtp-user`/`smtp-username`)
#   whatsapp-access-token -> whatsapp-api-key       (`whatsapp-api-key`/`whatsapp-access-token`)
#   twilio-from-number   -> twilio-phone-number     (`twilio-phone-number`/`twilio-from-number`)
#   messagebird-api-key  -> messagebird-access-key  (`messagebird-access-key`/`-api-key`)
# Title Case keys such as `Bot Name`, `Answer Mode`, `Welcome Message` need no entry: the general rule
# already maps them to `bot-name`, `answer-mode`, `welcome-message`.
KEY_ALIASES: dict[str, str] = {
    "theme-color": "theme-color1",
    "max-tokens": "llm-max-tokens",
    "bot-system-prompt": "system-prompt",
    "smtp-username": "smtp-user",
    "whatsapp-access-token": "whatsapp-api-key",
    "twilio-from-number": "twilio-phone-number",
    "messagebird-api-key": "messagebird-access-key",
}

_SEPARATORS = re.compile(r"[\s_]+")
_HYPHENS = re.compile(r"-{2,}")
# Upstream parses with Rust's `i64` / `f64` parsers, which accept no spaces or digit separators; Python's
# `int()`/`float()` accept both, so the accepted shapes are spelled out.
_INT_RE = re.compile(r"[+-]?\d+")
_FLOAT_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class ConfigRow:
    """One accepted `key,value` line; `line` is 1-based in the original file."""

    line: int
    key: str
    value: str


@dataclass(frozen=True)
class ConfigIssue:
    """A problem found while parsing; `line` is 0 for whole-file problems. `message` is user-facing."""

    line: int
    message: str


@dataclass(frozen=True)
class ParsedConfig:
    rows: list[ConfigRow]
    issues: list[ConfigIssue]

    @property
    def ok(self) -> bool:
        return not self.issues

    def as_dict(self) -> dict[str, str]:
        """Key -> value with the last occurrence winning (upstream upserts line by line)."""
        return {row.key: row.value for row in self.rows}


def config_parse(data: bytes | str) -> ParsedConfig:
    """Parse the bytes (or text) of a config.csv into rows plus line-level issues (§2.1).

    Lines with an issue are left out of `rows`; every other line still parses, so one typo does not hide
    the rest of the file. Duplicate keys are the exception: both rows are kept and the second is flagged.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > CONFIG_MAX_BYTES:
        # Checked first: nothing of an oversized file is decoded or split.
        return ParsedConfig(rows=[], issues=[ConfigIssue(0, f"config.csv is {len(raw)} bytes; "
                                                            f"the limit is {CONFIG_MAX_BYTES}")])
    offset = 0
    if raw.startswith(UTF8_BOM):
        offset = len(UTF8_BOM)
        raw = raw[offset:]

    rows: list[ConfigRow] = []
    issues: list[ConfigIssue] = []
    first_line_of: dict[str, int] = {}
    # bytes.splitlines() breaks only on \n, \r\n and \r, so a CRLF file and a LF file parse the same and no
    # Unicode line separator inside a value splits it (str.splitlines would).
    chunks = raw.splitlines(keepends=True)
    closing: list[int] | None = None  # _closing_lines of the file, worked out when a line leaves a quote open
    spanned_to = 0  # the last line of a key or value over several lines, refused with its first line
    for number, chunk in enumerate(chunks, start=1):
        line_start = offset
        offset += len(chunk)
        line_bytes = chunk.rstrip(b"\r\n")
        nul = nul_byte_issue(line_bytes, line=number, offset=line_start)
        if nul is not None:
            issues.append(ConfigIssue(number, nul))
            continue
        try:
            text = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            issues.append(ConfigIssue(number, f"line {number}: invalid UTF-8 at byte {exc.start + 1} of the line "
                                              f"(byte {line_start + exc.start + 1} of the file)"))
            continue
        if number <= spanned_to:
            continue  # read as part of the value its quote opened: not a setting of its own
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        split = _key_value(text)
        if isinstance(split, _OpenQuote):
            if closing is None:
                closing = _closing_lines([chunk.decode("utf-8", "replace") for chunk in chunks])
            if closing[number - 1] < 0:
                split = f"{split.what} opens a quote that is not closed"
            else:
                # Spreadsheets save a cell with line breaks so (`"system-prompt","You are helpful,⏎friendly"`). Read
                # line by line, as upstream reads the file, it made up settings (`friendly`) from the value's lines.
                spanned_to = closing[number - 1] + 1
                noun = "key" if split.key is None else "value"
                split = (f"{split.what} opens a quote that is closed only on line {spanned_to}: config.csv holds one "
                         f"setting per line, so a {noun} over several lines (a spreadsheet cell with line breaks) is "
                         f"not read; put it on one line")
        if isinstance(split, str):
            issues.append(ConfigIssue(number, f"line {number}: {split}"))
            continue
        key, value = split
        if not key:
            # Separator lines (`,`) and blank spreadsheet rows (`,,,`) carry nothing.
            continue
        if key.lower() in HEADER_KEYS and value.lower() == "value":
            continue
        if len(key) > CONFIG_MAX_KEY_CHARS:
            issues.append(ConfigIssue(number, f"line {number}: key is {len(key)} characters; "
                                              f"the limit is {CONFIG_MAX_KEY_CHARS}"))
            continue
        if len(value) > CONFIG_MAX_VALUE_CHARS:
            issues.append(ConfigIssue(number, f"line {number}: value of '{key}' is {len(value)} characters; "
                                              f"the limit is {CONFIG_MAX_VALUE_CHARS}"))
            continue
        if key in first_line_of:
            issues.append(ConfigIssue(number, f"line {number}: duplicate key '{key}' (first set on line "
                                              f"{first_line_of[key]}); a key may be set once: remove one of "
                                              f"the two lines"))
        else:
            first_line_of[key] = number
        rows.append(ConfigRow(line=number, key=key, value=value))
    return ParsedConfig(rows=rows, issues=issues)


def nul_byte_issue(data: bytes, *, line: int = 1, offset: int = 0) -> str | None:
    """`line N: contains a NUL byte (byte B of the file)` for the first NUL byte of `data`, or None when it has
    none. PostgreSQL stores no NUL in text: every text file of a package (config.csv, scripts, the prompt, .gbdata
    tables) is refused with this, instead of failing at the INSERT. `data` starts on `line`, at byte `offset`
    (0-based) of the file; lines end at LF, CRLF or CR, as config_parse splits them."""
    at = data.find(b"\x00")
    if at < 0:
        return None
    line += sum(1 for part in data[:at].splitlines(keepends=True) if part.endswith((b"\n", b"\r")))
    return f"line {line}: contains a NUL byte (byte {offset + at + 1} of the file)"


def _unquote(field: str) -> str:
    """A field written as one CSV quoted field (`"sk-live-123"`, `"say ""hi"" twice"`) without its quotes, as a
    CSV reader gives it; anything else as it is (a value such as `"Hi", she said` is upstream's verbatim text)."""
    if len(field) >= 2 and field[0] == field[-1] == '"' and '"' not in field[1:-1].replace('""', ""):
        return field[1:-1].replace('""', '"')
    return field


def _closing_quote(text: str) -> int:
    """Index of the quote closing the quoted field that `text` starts with (`""` is a quote inside), or -1."""
    index = 1
    while (end := text.find('"', index)) >= 0 and text.startswith('""', end):
        index = end + 2
    return end


@dataclass(frozen=True)
class _OpenQuote:
    """A key or value whose quote its line does not close; `what` names it ("the key", "the value of 'x'")."""

    what: str
    key: str | None = None


def _closing_lines(lines: list[str]) -> list[int]:
    """For each line (0-based index), the index of the first line after it that closes a quote left open before
    that line (a `"` not doubled: `""` is a quote inside a quoted field), or -1. One pass from the end: a file of
    lines that each leave a quote open costs no more than any other."""
    found, after = [-1] * len(lines), -1
    for index in range(len(lines) - 1, -1, -1):
        found[index] = after
        if _closing_quote('"' + lines[index]) >= 0:  # read from its start as the inside of a quoted field
            after = index
    return found


def _key_value(text: str) -> tuple[str, str] | str | _OpenQuote:
    """(key, value) of a stripped line, or what is wrong with it. The key and the value may each be a CSV quoted
    field, as spreadsheets and `QUOTE_ALL` writers save them (`"llm-key","sk-live-123"`): read with their quotes
    the setting was stored under a key nothing looks up (and one the console did not see as a secret's). A key or
    value whose quote is not closed on the line is an _OpenQuote (the caller says where, if anywhere, it closes)."""
    if text.startswith('"'):
        end = _closing_quote(text)
        if end < 0:
            return _OpenQuote("the key")
        key, rest = text[1:end].replace('""', '"'), text[end + 1:].lstrip()
        if not rest.startswith(","):
            return ("expected key,value (no comma found)" if not rest
                    else "unexpected text after the quoted key (expected a comma)")
        key, value = key.strip(), rest[1:].strip()
    elif "," not in text:
        return "expected key,value (no comma found)"
    else:
        key, value = (part.strip() for part in text.split(",", 1))
    if value.startswith('"') and _closing_quote(value) < 0:
        return _OpenQuote(f"the value of '{key}'", key)
    return key, _unquote(value)


def config_value_is_unset(value: str | None) -> bool:
    """True for values the reader treats as absent: None, empty, `none`, `null`, `n/a` (any case)."""
    return value is None or value.strip().lower() in UNSET_VALUES


def config_is_secret_reference(value: str | None) -> bool:
    """True when the value names a vault secret (`vault:gbo/meet/api_key`) instead of holding one."""
    return value is not None and value.strip().lower().startswith(VAULT_REFERENCE_PREFIX)


# Words that make a key a secret's (`llm-key`, `email-pass`, `whatsapp-token`, `stripe-secret`): the console
# hides such values from who may not edit the bot (a vault: reference is shown, it holds no secret).
SECRET_KEY_WORDS = frozenset({"key", "apikey", "pass", "password", "passwd", "pwd", "secret", "token"})
SECRET_MASK = "******"  # noqa: S105 (what is shown in place of a secret, not one)
# The line breaks config_parse splits on (bytes.splitlines: \n, \r\n and \r only).
_LINE_BREAK_RE = re.compile(r"(\r\n|\r|\n)")


def config_key_is_secret(key: str) -> bool:
    """True for keys whose value is a credential (a word of the key is in SECRET_KEY_WORDS); quotes and a byte
    order mark around the key do not hide it."""
    bare = key.strip().lstrip(BOM_CHAR).strip().strip('"').strip().lower()
    return any(word in SECRET_KEY_WORDS for word in re.split(r"[^a-z0-9]+", bare))


def config_value_masked(key: str, value: str) -> str:
    """The value as shown to who may not see credentials: SECRET_MASK for a secret key's literal value."""
    if config_key_is_secret(key) and not config_value_is_unset(value) and not config_is_secret_reference(value):
        return SECRET_MASK
    return value


def config_text_masked(text: str) -> str:
    """config.csv text with every secret key's literal value replaced by SECRET_MASK, line by line as
    config_parse reads it (lines it would refuse are masked too: a refused line may still hold a secret)."""
    parts = _LINE_BREAK_RE.split(text)
    lines = parts[::2]  # lines at even indexes of parts, their breaks between
    closing: list[int] | None = None
    masked_to = -1  # the last line of a secret's value over several lines (a key pasted as a multi-line cell)
    for number, line in enumerate(lines):
        index = 2 * number
        if number <= masked_to:
            parts[index] = SECRET_MASK if line.strip() else line  # a blank line holds nothing to hide
            continue
        # As config_parse reads it (quoted fields unquoted; a BOM before the first key, as a download decoded
        # with "utf-8" keeps it), else split at the first comma: a line it refuses may still hold a secret.
        split = _key_value(line.strip().lstrip(BOM_CHAR).strip())
        if isinstance(split, _OpenQuote) and split.key is not None and config_key_is_secret(split.key):
            # Its lines up to the closing quote hold the secret too (never closed: the rest of the file may).
            closing = closing if closing is not None else _closing_lines(lines)
            masked_to = closing[number] if closing[number] >= 0 else len(lines)
        if isinstance(split, str | _OpenQuote):
            key, comma, value = line.partition(",")
            if not comma:
                continue
            split = (key, _unquote(value.strip()))
        if config_value_masked(*split) == SECRET_MASK:
            parts[index] = f"{_key_part(line)},{SECRET_MASK}"
    return "".join(parts)


def _key_part(line: str) -> str:
    """The text of `line` up to the comma that ends its key (a quoted key may hold commas)."""
    stripped = line.lstrip().lstrip(BOM_CHAR).lstrip()
    start = len(line) - len(stripped)
    end = _closing_quote(stripped) if stripped.startswith('"') else -1
    comma = line.find(",", start + end + 1 if end >= 0 else 0)
    return line[:comma] if comma >= 0 else line


def config_value_is_local_path(value: str) -> bool:
    """True for values that point at a file on the author's machine (§2.2), which lookups ignore."""
    text = value.strip()
    return text.startswith(LOCAL_PATH_PREFIXES) or text.lower().endswith(LOCAL_PATH_SUFFIXES)


def config_key_normalize(key: str) -> str:
    """Canonical form of a key for lookups across dialects: `Theme Color` -> `theme-color1`,
    `Bot Name` -> `bot-name`, `LLM_Model` -> `llm-model`. Stored keys keep their original spelling."""
    canonical = _SEPARATORS.sub("-", key.strip().lower())
    canonical = _HYPHENS.sub("-", canonical).strip("-")
    return KEY_ALIASES.get(canonical, canonical)


def _usable(value: str | None, allow_local_paths: bool) -> bool:
    if config_value_is_unset(value):
        return False
    return allow_local_paths or not config_value_is_local_path(value)  # type: ignore[arg-type]


def config_lookup(values: Mapping[str, str], key: str, default: str | None = None, *,
                  allow_local_paths: bool = False) -> str | None:
    """The value of `key` for one bot's configuration (§2.2), or `default`.

    The exact key wins; otherwise any key with the same canonical form (so `theme-color1` finds a legacy
    `Theme Color` row), the last such row winning as in the file. Placeholders (`none`, empty, ...) and
    local file paths count as absent, so a template's `llm-model,../models/x.gguf` falls back to the
    default. `allow_local_paths=True` is for the few keys whose value is meant to be a server path
    (`sites-root`). Global defaults and environment fallbacks are the caller's next step.
    """
    exact = values.get(key)
    if _usable(exact, allow_local_paths):
        return exact
    wanted = config_key_normalize(key)
    found: str | None = None
    for candidate, value in values.items():
        if candidate != key and config_key_normalize(candidate) == wanted and _usable(value, allow_local_paths):
            found = value
    return found if found is not None else default


I64_DIGITS_MAX = 19


def _typed(value: str) -> object:
    # Order matters and mirrors upstream: integer, then float, then boolean, else the text itself.
    text = value.strip()
    if _INT_RE.fullmatch(text):
        # A 64-bit integer has at most 19 digits; int() of thousands of them is slow or refused outright.
        if len(text.lstrip("+-")) <= I64_DIGITS_MAX:
            number = int(text)
            if _I64_MIN <= number <= _I64_MAX:
                return number
        # Too large for a 64-bit integer: upstream's float parse takes it (past the float range: the text).
        number = float(text)
        return number if math.isfinite(number) else text
    if _FLOAT_RE.fullmatch(text):
        number = float(text)
        if math.isfinite(number):
            return number
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return value


def config_params(values: Mapping[str, str]) -> dict[str, object]:
    """Script variables from `param-*` keys (§2.3): `param-blingClientID,42` -> {"blingclientid": 42}.

    Only keys starting with the case-sensitive `param-` prefix are injected, as upstream's query does; the
    rest of the key is lower-cased; an empty name is skipped. Values are typed int -> float -> bool -> str
    (`inf`/`nan` stay text: a script comparing against them would misbehave silently).
    """
    params: dict[str, object] = {}
    for key, value in values.items():
        if not key.startswith(PARAM_PREFIX):
            continue
        name = key[len(PARAM_PREFIX):].strip().lower()
        if name:
            params[name] = _typed(value)
    return params
