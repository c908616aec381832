"""Lexer: BASIC source text -> tokens with line and column.

The dialect is line-oriented, so the lexer emits NL tokens between statements and hides what makes
a logical line span several physical ones: open brackets (multi-line map literals), a trailing `,`
or `_`, and double-quoted strings with embedded newlines (templates write long prompts that way).

Raw blocks (`BEGIN TALK`/`BEGIN SYSTEM PROMPT`/`BEGIN MAIL` ... `END ...`, and `TABLE ... END TABLE`)
are free text rather than code; they become one RAW token carrying their lines, so prose inside a
system prompt can never be mistaken for statements.

Comments: whole-line `'`, `REM`, `//`, `#` and trailing `'` outside strings (spec 3.1 GAP). A `'` is
a single-quoted string instead when it follows an operator or a keyword and closes on the same line
(`SAVE 'leads.csv', x`, `TALK '"'`), which is how templates use them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from apps.basic.errors import CompileError
from apps.basic.limits import MAX_SOURCE_CHARS

ID, NUM, STR, OP, NL, EOF, RAW = "ID", "NUM", "STR", "OP", "NL", "EOF", "RAW"
# `{` ending an `IF cond {` / `} ELSE {` line and the `}` that closes it (Rhai/JavaScript braces, which
# upstream passes through to Rhai unchanged); value "{" or "}".
BLOCK = "BLOCK"

# A numeric literal past the float range cannot be a value (1e999 read as Infinity, which no JSON state
# or database accepts, and integers past 4300 digits made Python's int() raise): a compile error.
MAX_LITERAL_INT_BITS = 1024


@dataclass(slots=True)
class Token:
    kind: str
    value: object
    line: int
    col: int

    def is_word(self, *words: str) -> bool:
        return self.kind == ID and str(self.value).upper() in words

    def is_op(self, *ops: str) -> bool:
        return self.kind == OP and self.value in ops


@dataclass(slots=True)
class RawBlock:
    """Lines of a BEGIN ... END block or a TABLE definition, kept verbatim."""

    kind: str  # "TALK", "SYSTEM PROMPT", "MAIL", "TABLE"
    header: str  # text after the opening words (mail recipient, table name)
    lines: list[str]


# Longest operators first so `<>` wins over `<`.
_OPERATORS = (
    "#{", "?.", "??", "<>", "<=", ">=", "==", "!=", "&&", "||",
    "=", "<", ">", "+", "-", "*", "/", "\\", "^", "&", "%",
    "(", ")", "[", "]", "{", "}", ",", ":", ".", ";", "?", "!",
)
_OPEN = {"(": ")", "[": "]", "{": "}", "#{": "}"}
_CLOSE = {")", "]", "}"}

_LLM_HINT_LINE = re.compile(r"[ \t]*WITH[ \t]+(OPTIMIZE[ \t]+FOR|MAX_COST|MAX_LATENCY)\b", re.IGNORECASE)
_BLOCK_START = re.compile(r"BEGIN\s+(TALK|SYSTEM\s+PROMPT|MAIL)\b(.*)$", re.IGNORECASE)
_TABLE_START = re.compile(r"TABLE\s+([A-Za-z_][\w.]*)(\s+ON\s+.*)?\s*$", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_IDENT = re.compile(r"[^\W\d]\w*", re.UNICODE)
_REM = re.compile(r"REM(\s|$)", re.IGNORECASE)
# After a `{` that opens a brace block: nothing but spaces or a comment up to the end of the line.
_BRACE_ENDS_LINE = re.compile(r"[^\S\n]*(?:\n|$|'|//)")
# An END TABLE line (what `_raw_block` ends a TABLE at); horizontal spaces only, so blank lines are not rescanned.
_END_TABLE = re.compile(r"^[^\S\n]*END[^\S\n]+TABLE[^\S\n]*$", re.IGNORECASE | re.MULTILINE)

# Words after which a `'` opens a string rather than a comment.
_QUOTE_AFTER_WORDS = frozenset(
    {"TALK", "PRINT", "SAVE", "TEMPLATE", "RETURN", "SEND_MAIL", "MAIL", "EMAIL", "FIND", "GET", "POST",
     "CALL", "CASE", "IN", "AS", "TO", "WITH", "AND", "OR", "NOT", "LLM", "INSERT", "UPDATE",
     "DELETE", "USE", "KB", "TOOL", "SUGGESTION", "CONTEXT", "MEMORY", "HEADER", "WRITE", "READ"}
)
_QUOTE_AFTER_OPS = frozenset({"=", "(", ",", "+", "[", "{", "#{", ":", "&", "<>", "<", ">", "<=", ">=", "==", "!="})

_DIGITS = frozenset("0123456789")  # str.isdigit() also accepts '²', which no number regex reads
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "$": "\\$"}


class Lexer:
    """Turns source text into a list of tokens; raises CompileError on malformed input."""

    def __init__(self, source: str) -> None:
        if len(source) > MAX_SOURCE_CHARS:
            raise CompileError(f"script is too large ({len(source)} characters, limit {MAX_SOURCE_CHARS})", 1)
        self.src = source.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
        self.pos = 0
        self.line = 1
        self.line_start = 0
        self.tokens: list[Token] = []
        self.depth: list[tuple[str, int, int]] = []
        self.brace_blocks = 0  # open `IF cond {` blocks
        # Where the current physical line ends (`_line_end`), found once per line: searching again for every `'`
        # made a line of many quotes cost its length squared.
        self._eol_from = self._eol = -1
        # End of the last END TABLE line of the source (-1: none), found once: `_has_end_table` searched the rest
        # of the source again for every `TABLE name` line without one.
        self._last_end_table: int | None = None

    # -- helpers -------------------------------------------------------------------------------
    def _col(self) -> int:
        return self.pos - self.line_start + 1

    def _line_end(self) -> int:
        """Index of the newline ending the current physical line (or the source's length)."""
        if not self._eol_from <= self.pos <= self._eol:
            end = self.src.find("\n", self.pos)
            self._eol_from, self._eol = self.pos, len(self.src) if end < 0 else end
        return self._eol

    def _rest_of_line(self) -> str:
        end = self.src.find("\n", self.pos)
        return self.src[self.pos:] if end < 0 else self.src[self.pos:end]

    def _skip_to_eol(self) -> None:
        end = self.src.find("\n", self.pos)
        self.pos = len(self.src) if end < 0 else end

    def _newline(self) -> None:
        """Consume one '\\n' and emit NL unless the logical line continues."""
        self.pos += 1
        self.line += 1
        self.line_start = self.pos
        if self.depth:
            return
        last = self.tokens[-1] if self.tokens else None
        if last is None or last.kind == NL:
            return
        if last.kind == OP and last.value in (",", "+", "&", "&&", "||"):
            return  # a line ending with a comma or a binary operator continues (templates rely on it)
        if last.kind == ID and str(last.value).upper() in ("AND", "OR", "WHERE") and len(self.tokens) > 1 \
                and self.tokens[-2].kind != NL:
            return
        if last.kind == ID and last.value == "_":
            self.tokens.pop()  # `_` line continuation
            return
        if _LLM_HINT_LINE.match(self.src, self.pos):
            return  # `x = LLM "..."` followed by `WITH OPTIMIZE FOR "cost"` / `WITH MAX_COST 0.05` lines
        self.tokens.append(Token(NL, None, last.line, last.col))

    def _at_statement_start(self) -> bool:
        return not self.depth and (not self.tokens or self.tokens[-1].kind == NL)

    # -- main loop -----------------------------------------------------------------------------
    def tokenize(self) -> list[Token]:
        src = self.src
        n = len(src)
        while self.pos < n:
            ch = src[self.pos]
            if ch == "\n":
                self._newline()
                continue
            if ch in " \t\f\v\u00a0":
                self.pos += 1
                continue
            if self._at_statement_start() and self._line_level():
                continue
            col = self._col()
            if ch == '"':
                self._string('"')
                continue
            if ch == "'":
                if self._quote_opens_string():
                    self._string("'")
                else:
                    self._skip_to_eol()
                continue
            if ch == "/" and src.startswith("//", self.pos):
                self._skip_to_eol()
                continue
            if ch in _DIGITS or (ch == "." and self.pos + 1 < n and src[self.pos + 1] in _DIGITS
                                and not self._value_before()):
                m = _NUMBER.match(src, self.pos)
                assert m is not None
                text = m.group(0)
                try:
                    value: object = float(text) if ("." in text or "e" in text.lower()) else int(text)
                except ValueError:  # Python refuses int() of more than 4300 digits
                    value = math.inf
                if value == math.inf or (type(value) is int and value.bit_length() > MAX_LITERAL_INT_BITS):
                    raise CompileError(f"number too large: {text[:20]}{'...' if len(text) > 20 else ''}",
                                       self.line, col)
                self.tokens.append(Token(NUM, value, self.line, col))
                self.pos = m.end()
                continue
            m = _IDENT.match(src, self.pos)
            if m:
                self.tokens.append(Token(ID, m.group(0), self.line, col))
                self.pos = m.end()
                continue
            for op in _OPERATORS:
                if src.startswith(op, self.pos):
                    self._operator(op, col)
                    break
            else:
                raise CompileError(f"unexpected character {ch!r}", self.line, col)
        if self.depth:
            opener, line, col = self.depth[-1]
            raise CompileError(f"'{opener}' is never closed", line, col)
        if self.tokens and self.tokens[-1].kind != NL:
            last = self.tokens[-1]
            self.tokens.append(Token(NL, None, last.line, last.col))
        self.tokens.append(Token(EOF, None, self.line, self._col()))
        return self.tokens

    def _value_before(self) -> bool:
        last = self.tokens[-1] if self.tokens else None
        return last is not None and (last.kind in (ID, NUM, STR) or (last.kind == OP and last.value in _CLOSE))

    def _brace_block(self, op: str, col: int) -> bool:
        """`{` closing an `IF cond` / `} ELSE` line, or the `}` that ends such a block."""
        if self.depth:
            return False
        if op == "}":
            if not self.brace_blocks:
                return False
            self.brace_blocks -= 1
        else:
            if not _BRACE_ENDS_LINE.match(self.src, self.pos + 1):  # not the rest of the line: `{` may be many
                return False
            k = len(self.tokens) - 1
            while k >= 0 and self.tokens[k].kind != NL:
                k -= 1
            first = self.tokens[k + 1] if k + 1 < len(self.tokens) else None
            if first is None or not (first.is_word("IF", "ELSE", "ELSEIF") or first.kind == BLOCK):
                return False
            last = self.tokens[-1]
            if last.kind == OP and last.value not in (")", "]"):
                return False  # `IF c THEN m = {` / `IF x = {`: a map literal
            if any(tk.is_word("THEN") for tk in self.tokens[k + 1:]):
                return False
            self.brace_blocks += 1
        self.tokens.append(Token(BLOCK, op, self.line, col))
        self.pos += 1
        return True

    def _operator(self, op: str, col: int) -> None:
        if op in ("{", "}") and self._brace_block(op, col):
            return
        if op in _OPEN:
            self.depth.append((op, self.line, col))
        elif op in _CLOSE:
            if not self.depth:
                raise CompileError(f"'{op}' without a matching opening bracket", self.line, col)
            opener, _, _ = self.depth.pop()
            if _OPEN[opener] != op:
                raise CompileError(f"'{op}' does not match '{opener}'", self.line, col)
        self.tokens.append(Token(OP, op, self.line, col))
        self.pos += len(op)

    def _quote_opens_string(self) -> bool:
        last = self.tokens[-1] if self.tokens else None
        if last is None or last.kind == NL:
            return False
        if last.kind == OP:
            opens = last.value in _QUOTE_AFTER_OPS
        else:
            opens = last.kind == ID and str(last.value).upper() in _QUOTE_AFTER_WORDS
        # A closing quote on the same line; the search stops at the next quote, where the string (or, when there
        # is none, the comment to the end of the line) ends anyway, so each character is searched once.
        return opens and self.src.find("'", self.pos + 1, self._line_end()) >= 0

    def _string(self, quote: str) -> None:
        """Read a string literal; `""` doubles a quote, backslash escapes as in the templates."""
        src = self.src
        line, col = self.line, self._col()
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(src):
                raise CompileError("unterminated string", line, col)
            ch = src[self.pos]
            if ch == quote:
                if src.startswith(quote * 2, self.pos):
                    out.append(quote)
                    self.pos += 2
                    continue
                self.pos += 1
                break
            if ch == "\n":
                if quote == "'":
                    raise CompileError("unterminated string", line, col)
                out.append("\n")
                self.pos += 1
                self.line += 1
                self.line_start = self.pos
                continue
            if ch == "\\" and self.pos + 1 < len(src) and src[self.pos + 1] in _ESCAPES:
                out.append(_ESCAPES[src[self.pos + 1]])
                self.pos += 2
                continue
            out.append(ch)
            self.pos += 1
        self.tokens.append(Token(STR, "".join(out), line, col))

    def _line_level(self) -> bool:
        """Handle comments and raw blocks at the start of a statement; True if something was consumed."""
        src = self.src
        ch = src[self.pos]
        if ch == "'" or src.startswith("//", self.pos) or (ch == "#" and not src.startswith("#{", self.pos)):
            self._skip_to_eol()
            return True
        if _REM.match(src, self.pos):
            self._skip_to_eol()
            return True
        if ch not in "BbTt":
            return False
        rest = self._rest_of_line()
        m = _BLOCK_START.match(rest)
        if m:
            kind = " ".join(m.group(1).upper().split())
            end_words = r"\s+".join(kind.split())
            self._raw_block(kind, m.group(2).strip(), re.compile(r"\s*END\s+" + end_words + r"\s*$", re.I))
            return True
        m = _TABLE_START.match(rest)
        if m and self._has_end_table():
            self._raw_block("TABLE", (m.group(1) + (m.group(2) or "")).strip(), re.compile(r"\s*END\s+TABLE\s*$", re.I))
            return True
        return False

    def _has_end_table(self) -> bool:
        if self._last_end_table is None:
            ends = [m.end() for m in _END_TABLE.finditer(self.src)]
            self._last_end_table = ends[-1] if ends else -1
        return self._last_end_table > self.pos

    def _raw_block(self, kind: str, header: str, end_re: re.Pattern[str]) -> None:
        line, col = self.line, self._col()
        self._skip_to_eol()
        lines: list[str] = []
        while True:
            if self.pos >= len(self.src):
                raise CompileError(f"BEGIN {kind} without END {kind}" if kind != "TABLE"
                                   else "TABLE without END TABLE", line, col)
            self.pos += 1  # the newline
            self.line += 1
            self.line_start = self.pos
            text = self._rest_of_line()
            self._skip_to_eol()
            if end_re.match(text):
                break
            lines.append(text)
        self.tokens.append(Token(RAW, RawBlock(kind, header, lines), line, col))
        self.tokens.append(Token(NL, None, line, col))


def tokenize(source: str) -> list[Token]:
    """Tokenize a whole script."""
    return Lexer(source).tokenize()
