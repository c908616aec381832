"""Parser: tokens -> AST (lists of `apps.basic.nodes` statements).

Recursive descent over the lexer's tokens. Statements are recognised by their first word(s); what is
neither a control-flow word, an assignment nor a known keyword phrase becomes a procedure call that
the compiler resolves (user SUB, built-in, or an error naming the unknown word).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from apps.basic import nodes as n
from apps.basic.builtins import BUILTINS
from apps.basic.errors import CompileError
from apps.basic.keywords import (
    CONNECTORS,
    MODE_WORDS,
    OPERATOR_WORDS,
    REFUSED,
    phrases_starting_with,
)
from apps.basic.lexer import BLOCK, EOF, ID, NL, NUM, OP, RAW, STR, Lexer, RawBlock, Token
from apps.basic.limits import LENIENT_INTERPOLATION_TRIES_FACTOR

_LITERAL_WORDS = {"TRUE": True, "FALSE": False, "NULL": None, "NOTHING": None, "EMPTY": None}
_COMPARE_OPS = {"=": "==", "==": "==", "<>": "!=", "!=": "!=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}
# Keywords whose `"key" = value` form (docs/templates) means two arguments, not a comparison.
_SPLIT_EQUALS = frozenset({"SET HEADER", "SET BOT MEMORY", "SET USER MEMORY", "REMEMBER", "SET CONTEXT",
                           "SET SESSION"})
# Keywords whose `WITH col AS value, ...` is a map of column values.
_WITH_AS_KEYWORDS = frozenset({"SAVE", "INSERT"})
# Flags that may end a keyword argument list with nothing after them.
_TRAILING_FLAGS = frozenset({"RECURSIVE", "APPEND"})
_END_BLOCKS = ("IF", "FOR", "WHILE", "SELECT", "SWITCH", "SUB", "FUNCTION", "WITH", "TRY", "ON", "SCHEDULE",
               "PARALLEL")
# Control words that start their statement even when `[` follows them at once (`RETURN[1] = [1]`).
_BRACKET_STATEMENTS = frozenset({"IF", "ELSEIF", "WHILE", "DO", "FOR", "SELECT", "SWITCH", "RETURN", "THROW",
                                 "EXIT", "GOTO", "CALL", "TALK", "PRINT"})
# Model-routing hints after LLM "..." (`WITH MAX_COST 0.05`), read and ignored like WITH OPTIMIZE FOR.
_LLM_HINTS = frozenset({"MAX_COST", "MAX_LATENCY"})
# Words that start a line continuing an inline SQL query (`x = SELECT ... FROM t` + `JOIN ...` lines).
_SQL_CONTINUATION = frozenset({"FROM", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "WHERE", "GROUP",
                               "ORDER", "HAVING", "LIMIT", "OFFSET", "UNION"})


class Parser:
    def __init__(self, tokens: list[Token], source: str = "") -> None:
        self.toks = tokens
        self.i = 0
        self.lines = source.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self.with_stack: list[n.Expr] = []
        self.in_proc = False

    # -- token helpers -------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Token:
        j = min(self.i + k, len(self.toks) - 1)
        return self.toks[j]

    def advance(self) -> Token:
        t = self.toks[self.i]
        if t.kind != EOF:
            self.i += 1
        return t

    def error(self, message: str, tok: Token | None = None) -> CompileError:
        t = tok or self.tok
        return CompileError(message, t.line, t.col)

    def word(self, k: int = 0) -> str:
        t = self.peek(k) if k else self.tok
        return str(t.value).upper() if t.kind == ID else ""

    def at_words(self, *words: str) -> bool:
        return all(self.word(k) == w for k, w in enumerate(words))

    def accept_word(self, *words: str) -> bool:
        if self.at_words(*words):
            self.i += len(words)
            return True
        return False

    def expect_word(self, w: str) -> Token:
        if self.word() != w:
            raise self.error(f"expected {w}, found {self.describe()}")
        return self.advance()

    def accept_op(self, *ops: str) -> bool:
        if self.tok.kind == OP and self.tok.value in ops:
            self.i += 1
            return True
        return False

    def expect_op(self, op: str) -> Token:
        if not (self.tok.kind == OP and self.tok.value == op):
            raise self.error(f"expected '{op}', found {self.describe()}")
        return self.advance()

    def describe(self, t: Token | None = None) -> str:
        t = t or self.tok
        if t.kind == NL:
            return "end of line"
        if t.kind == EOF:
            return "end of file"
        if t.kind == STR:
            return "a string"
        if t.kind == RAW:
            return "a block"
        return f"'{t.value}'"

    def at_end(self) -> bool:
        return self.tok.kind in (NL, EOF)

    def end_statement(self) -> None:
        if self.accept_op(":"):
            return
        if not self.at_end():
            raise self.error(f"unexpected {self.describe()} after the end of the statement")
        if self.tok.kind == NL:
            self.advance()

    def rest_of_line_text(self, tok: Token) -> str:
        line = self.lines[tok.line - 1] if 0 < tok.line <= len(self.lines) else ""
        return line[tok.col - 1:]

    def line_end(self) -> int:
        j = self.i
        while self.toks[j].kind not in (NL, EOF):
            j += 1
        return j

    def skip_to_eol(self) -> None:
        while not self.at_end():
            self.advance()
        self.end_statement()

    # -- program and blocks --------------------------------------------------------------------
    def parse_program(self) -> list[n.Stmt]:
        try:
            body = self.parse_body(lambda: False, "")
        except RecursionError:  # reported where the parser was when it ran out of stack
            raise self.error("script is nested too deeply") from None
        if self.tok.kind != EOF:
            raise self.error(f"unexpected {self.describe()}")
        return body

    def parse_body(self, stop: Callable[[], bool], opener: str, open_tok: Token | None = None) -> list[n.Stmt]:
        body: list[n.Stmt] = []
        while True:
            while self.tok.kind == NL or self.tok.is_op(":"):
                self.advance()
            if self.tok.kind == EOF:
                if opener:
                    raise self.error(f"{opener} is never closed", open_tok)
                return body
            if stop():
                return body
            stmt = self.parse_statement()
            if stmt is not None:
                body.append(stmt)

    def parse_statement(self) -> n.Stmt | None:
        t = self.tok
        if t.kind == RAW:
            self.advance()
            self.end_statement()
            return self.raw_block(t)
        if t.kind == BLOCK:
            raise self.error("'}' without a matching 'IF ... {'" if t.value == "}" else "unexpected '{'")
        if t.is_op("."):
            if not self.with_stack:
                raise self.error("'.name = value' is only allowed inside WITH ... END WITH")
            self.advance()
            name = self.ident("a member name")
            target = n.Member(t.line, t.col, self.with_stack[-1], name)
            self.expect_op("=")
            value = self.parse_rhs()
            self.end_statement()
            return n.Assign(t.line, t.col, target, value)
        if t.kind != ID:
            raise self.error(f"a statement cannot start with {self.describe()}")
        w = self.word()
        nxt = self.peek()
        # `label:` on its own line
        if nxt.is_op(":") and self.peek(2).kind in (NL, EOF) and w not in ("ELSE", "CASE", "DEFAULT"):
            self.i += 2
            self.end_statement()
            return n.Label(t.line, t.col, t.value.lower())
        if self.looks_like_assignment():
            return self.assignment(t)
        if nxt.is_op(".", "?.") and self.peek(2).kind == ID:
            e = self.parse_postfix()
            if not isinstance(e, n.Call):
                raise self.error("expected an assignment or a method call", t)
            self.end_statement()
            return n.ExprStmt(t.line, t.col, e)
        handler = getattr(self, "stmt_" + w, None) if w.isascii() and w.isidentifier() else None
        if handler is not None:
            result = handler(t)
            if result is not NotImplemented:
                return result
        return self.keyword_or_call(t)

    def looks_like_assignment(self) -> bool:
        nxt = self.peek()
        if nxt.is_op("="):
            return True
        if nxt.is_op("[") and self.statement_before_bracket():
            return False
        if nxt.is_op("[") or (nxt.is_op(".") and self.peek(2).kind == ID):
            # scan the lvalue chain and see whether '=' follows
            j = self.i + 1
            depth = 0
            while j < len(self.toks):
                tk = self.toks[j]
                if tk.kind in (NL, EOF):
                    return False
                if tk.kind == OP and tk.value in ("[", "(", "{", "#{"):
                    depth += 1
                elif tk.kind == OP and tk.value in ("]", ")", "}"):
                    depth -= 1
                elif depth == 0 and tk.kind == OP and tk.value == "=":
                    return True
                elif depth == 0 and not (tk.kind == ID or tk.is_op(".")):
                    return False
                j += 1
        return False

    def statement_before_bracket(self) -> bool:
        """`RETURN [1] = [1]`, `TALK [a] = [b]`, `IF [1] = [1] THEN`: a statement word followed by `[` starts
        that statement; it is not an element assignment to a variable named like the word. A control word
        always does; another statement keyword does when a space separates it from the `[` (`list[0] = 1`
        written without one still indexes a variable named `list`)."""
        t, nxt = self.tok, self.peek()
        w = self.word()
        if w in _BRACKET_STATEMENTS:
            return True
        if not ((w.isascii() and w.isidentifier() and hasattr(self, "stmt_" + w))
                or (w,) in phrases_starting_with(w)):
            return False
        return not (nxt.line == t.line and nxt.col == t.col + len(str(t.value)))

    def ident(self, what: str) -> str:
        if self.tok.kind != ID:
            raise self.error(f"expected {what}, found {self.describe()}")
        return str(self.advance().value).lower()

    # -- assignment ----------------------------------------------------------------------------
    def assignment(self, t: Token) -> n.Stmt:
        target = self.parse_lvalue()
        self.expect_op("=")
        if self.with_stack and isinstance(target, n.Var):
            target = n.Member(t.line, t.col, self.with_stack[-1], target.name)
        if self.word() == "HEAR":
            hear_tok = self.advance()
            return self.hear_rest(hear_tok, target)
        if self.word() == "ASK":
            ask_tok = self.advance()
            prompt = self.parse_expr()
            self.end_statement()
            return n.Hear(ask_tok.line, ask_tok.col, target, "STRING", None, prompt, None)
        value = self.parse_rhs()
        if self.with_stack and self.tok.is_op(","):  # `WITH x` lines written like map entries
            self.advance()
        else:
            self.end_statement()
        return n.Assign(t.line, t.col, target, value)

    def parse_lvalue(self) -> n.Expr:
        t = self.advance()
        e: n.Expr = n.Var(t.line, t.col, str(t.value).lower())
        while True:
            if self.accept_op("."):
                e = n.Member(t.line, t.col, e, self.ident("a member name"))
            elif self.tok.is_op("["):
                self.advance()
                idx = self.parse_expr()
                self.expect_op("]")
                e = n.Index(t.line, t.col, e, idx)
            else:
                return e

    def parse_rhs(self) -> n.Expr:
        """Right-hand side: a keyword here takes its full comma-separated argument list."""
        w = self.word()
        if w == "CALL":
            t = self.advance()
            stmt = self.stmt_CALL_rest(t)
            return n.Call(t.line, t.col, "$call", [n.Lit(t.line, t.col, stmt)])
        if w == "SELECT" and self.word(1) != "CASE":
            return self.inline_sql()
        kw = self.match_keyword(expression=True)
        if kw is not None:
            return self.keyword_call(kw, full=True)
        if w in BUILTINS and self.starts_argument(self.peek()) and not self.peek().is_op("(", "[", "{"):
            # space-separated call of a built-in: `FIRST results`, `FORMAT NOW() AS "MM-DD"`
            t = self.advance()
            args, opts = self.keyword_args()
            return n.Call(t.line, t.col, w.lower(), args + list(opts.values()), loose=True)
        return self.parse_expr()

    def inline_sql(self) -> n.Expr:
        """`x = SELECT ... FROM t [JOIN u ...]` (legacy in-memory queries): never run as SQL here.

        The query text (lines starting with FROM/JOIN/WHERE/GROUP... continue it) goes to
        `Host.keyword("SELECT", [text], {"FROM": {name: value}})` with the script variables named
        after FROM/JOIN, so a host can evaluate it over those values or refuse it.
        """
        t = self.tok
        j = self.line_end()
        while self.toks[j].kind == NL and self.toks[j + 1].kind == ID and \
                str(self.toks[j + 1].value).upper() in _SQL_CONTINUATION:
            j += 1
            while self.toks[j].kind not in (NL, EOF):
                j += 1
        last_line = self.toks[j - 1].line
        text = "\n".join([self.lines[t.line - 1][t.col - 1:], *self.lines[t.line:last_line]])
        tables: list[tuple[str, n.Expr]] = []
        for k in range(self.i, j - 1):
            tk, nxt = self.toks[k], self.toks[k + 1]
            if tk.is_word("FROM", "JOIN") and nxt.kind == ID:
                name = str(nxt.value).lower()
                if all(name != key for key, _ in tables):
                    tables.append((name, n.Var(nxt.line, nxt.col, name)))
        self.i = j
        query = n.Lit(t.line, t.col, " ".join(text.split()))
        return n.KwCall(t.line, t.col, "SELECT", [query], {"FROM": n.MapLit(t.line, t.col, tables)})

    # -- keywords ------------------------------------------------------------------------------
    def match_keyword(self, expression: bool) -> tuple[str, Token] | None:
        w = self.word()
        if not w:
            return None
        for words in phrases_starting_with(w):
            if all(self.word(k) == words[k] for k in range(len(words))):
                name = " ".join(words)
                if expression and len(words) == 1 and not self.starts_argument(self.peek()):
                    if self.peek().is_op("("):
                        return None  # NAME(...) is a function call, resolved by the compiler
                    if name not in ("HEAR",):
                        return None
                if expression and len(words) == 1 and self.peek().is_op("("):
                    return None
                return name, self.tok
        return None

    def starts_argument(self, t: Token) -> bool:
        if t.kind in (STR, NUM):
            return True
        if t.kind == ID:
            return str(t.value).upper() not in OPERATOR_WORDS
        return t.kind == OP and t.value in ("[", "#{", "{")

    def keyword_call(self, kw: tuple[str, Token], full: bool) -> n.KwCall:
        name, t = kw
        self.i += len(name.split())
        if name in REFUSED:
            raise CompileError(f"{name} is not supported: {REFUSED[name]}", t.line, t.col)
        args: list[n.Expr] = []
        opts: dict[str, n.Expr] = {}
        if self.tok.is_op("(") and (not full or self.paren_closes_statement()):
            self.advance()
            args = self.expr_list(")")
            self.expect_op(")")
        elif full:
            args, opts = self.keyword_args(name)
        elif self.starts_argument(self.tok):
            args = [self.parse_postfix()]
            if self.word() == "WHERE":  # `FIND "t" WHERE user_id = x` inside a larger expression
                self.advance()
                opts["WHERE"] = self.parse_compare()
        if name in _SPLIT_EQUALS and len(args) == 1 and isinstance(args[0], n.Binary) and args[0].op == "==":
            args = [args[0].left, args[0].right]
        return n.KwCall(t.line, t.col, name, args, opts)

    def paren_closes_statement(self) -> bool:
        depth = 0
        j = self.i
        while j < len(self.toks):
            tk = self.toks[j]
            if tk.kind == OP and tk.value in ("(", "[", "{", "#{"):
                depth += 1
            elif tk.kind == OP and tk.value in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    nxt = self.toks[j + 1]
                    return nxt.kind in (NL, EOF)
            j += 1
        return False

    def keyword_args(self, keyword: str = "") -> tuple[list[n.Expr], dict[str, n.Expr]]:
        args: list[n.Expr] = []
        opts: dict[str, n.Expr] = {}
        pending: str | None = None
        while not self.at_end() and not self.tok.is_op(":", ")", "]", "}"):
            if self.accept_op(","):
                continue
            w = self.word()
            if w in CONNECTORS and self.connector_here():
                ctok = self.advance()
                if w == "WITH" and (self.at_words("OPTIMIZE", "FOR") or self.word() in _LLM_HINTS):
                    # upstream's model-routing hints after LLM "..." (WITH OPTIMIZE FOR "cost",
                    # WITH MAX_COST 0.05, WITH MAX_LATENCY 5000); they have no meaning here
                    self.i += 2 if self.word() == "OPTIMIZE" else 1
                    self.parse_expr()
                    continue
                if pending is not None:
                    opts[pending] = n.Lit(ctok.line, ctok.col, True)
                if w == "SET":  # `UPDATE "t" SET a = 1, b = 2 WHERE id = x` (may span lines)
                    opts["SET"] = self.set_pairs(ctok)
                    continue
                if w == "WITH" and keyword in _WITH_AS_KEYWORDS and self.tok.kind == ID and self.peek().is_word("AS"):
                    opts["WITH"] = self.as_pairs(ctok)  # `SAVE "t" WITH name AS info.name, brand AS info.brand`
                    pending = None
                    continue
                pending = w
                if self.at_end():
                    opts[w] = n.Lit(ctok.line, ctok.col, True)
                    pending = None
                elif w == "AS" and self.word() in MODE_WORDS and (
                        self.peek().kind in (NL, EOF) or self.peek().is_op(",")):
                    mt = self.advance()
                    opts["AS"] = n.Lit(mt.line, mt.col, str(mt.value).upper())
                    pending = None
                continue
            e = self.parse_expr()
            if pending is not None:
                opts[pending] = e
                pending = None
            else:
                args.append(e)
        return args, opts

    def set_pairs(self, t: Token) -> n.Expr:
        pairs: list[tuple[str, n.Expr]] = []
        while True:
            while self.tok.kind == NL:
                self.advance()
            if self.word() == "WHERE" or self.tok.kind == EOF:
                return n.MapLit(t.line, t.col, pairs)
            key = self.ident("a column name")
            self.expect_op("=")
            pairs.append((key, self.parse_expr()))
            if not self.accept_op(","):
                if self.tok.kind == NL and self.peek().is_word("WHERE"):
                    self.advance()
                return n.MapLit(t.line, t.col, pairs)

    def as_pairs(self, t: Token) -> n.Expr:
        """`col AS expr, col AS expr, ...` after WITH (templates' `SAVE "products" WITH name AS info.name, ...`):
        the map of column values."""
        pairs: list[tuple[str, n.Expr]] = []
        while True:
            kt = self.tok
            key = self.ident("a column name")
            if not self.accept_word("AS"):
                raise self.error(f"expected AS after column '{kt.value}' (WITH column AS value, ...)")
            if any(k == key for k, _ in pairs):
                raise self.error(f"column '{kt.value}' is given twice", kt)
            pairs.append((key, self.parse_expr()))
            if not self.accept_op(","):
                return n.MapLit(t.line, t.col, pairs)

    def connector_here(self) -> bool:
        nxt = self.peek()
        if nxt.kind in (NL, EOF):
            return self.word() in _TRAILING_FLAGS or self.word() == "SET"
        if nxt.kind == OP and nxt.value in (",", "=", ".", "[", ")", "]", "}", "+", "*", "/", "-", "<", ">", "<>"):
            return False
        return not (nxt.kind == ID and str(nxt.value).upper() in ("AND", "OR", "MOD", "THEN"))

    def keyword_or_call(self, t: Token) -> n.Stmt:
        kw = self.match_keyword(expression=False)
        if kw is not None:
            call = self.keyword_call(kw, full=True)
            self.end_statement()
            return n.ExprStmt(t.line, t.col, call)
        w = self.word()
        if w in ("ELSE", "ELSEIF", "NEXT", "WEND", "LOOP", "CASE", "DEFAULT", "CATCH") or (
            w == "END" and self.word(1) in _END_BLOCKS
        ):
            raise self.error(f"{w if w != 'END' else 'END ' + self.word(1)} without a matching opening statement")
        if w.startswith("END") and w[3:] in _END_BLOCKS:
            raise self.error(f"{w} without a matching opening statement")
        # `Name(args)` or `Name arg, arg`: user SUB, built-in used as a statement, or unknown word.
        self.advance()
        name = str(t.value).lower()
        if self.tok.is_op("(") and self.paren_closes_statement():
            self.advance()
            args = self.expr_list(")")
            self.expect_op(")")
        else:
            args = []
            while not self.at_end() and not self.tok.is_op(":"):
                if self.accept_op(","):
                    continue
                if self.tok.kind == ID and not self.starts_argument(self.tok) and self.word() not in ("NOT",):
                    raise self.error(f"unknown keyword or procedure '{t.value}'", t)
                args.append(self.parse_expr())
        self.end_statement()
        return n.CallUser(t.line, t.col, name, args)

    # -- control flow statements ---------------------------------------------------------------
    def stmt_IF(self, t: Token) -> n.Stmt:
        self.advance()
        cond = self.parse_expr()
        if self.tok.kind == BLOCK:
            return self.brace_if(t, cond)
        if not self.accept_word("THEN") and not self.at_end():
            raise self.error(f"expected THEN, found {self.describe()}")
        if not self.at_end():
            return self.single_line_if(t, cond)
        self.end_statement()
        branches: list[tuple[n.Expr, list[n.Stmt]]] = []
        orelse: list[n.Stmt] | None = None
        body = self.parse_body(self.at_if_part, "IF", t)
        branches.append((cond, body))
        while True:
            if self.accept_word("ELSEIF") or self.accept_word("ELSE", "IF"):
                c = self.parse_expr()
                self.accept_word("THEN")
                self.end_statement()
                branches.append((c, self.parse_body(self.at_if_part, "IF", t)))
            elif self.accept_word("ELSE"):
                self.end_statement()
                orelse = self.parse_body(self.at_if_part, "IF", t)
            elif self.accept_word("END", "IF") or self.accept_word("ENDIF"):
                self.end_statement()
                return n.If(t.line, t.col, branches, orelse)
            else:
                raise self.error("expected END IF")

    def brace_if(self, t: Token, cond: n.Expr | None) -> n.Stmt:
        """`IF cond {` ... `} ELSE IF cond {` ... `} ELSE {` ... `}` (Rhai/JavaScript braces)."""
        branches: list[tuple[n.Expr, list[n.Stmt]]] = []
        while True:
            if not (self.tok.kind == BLOCK and self.tok.value == "{"):
                raise self.error(f"expected '{{', found {self.describe()}")
            self.advance()
            self.end_statement()
            body = self.parse_body(lambda: self.tok.kind == BLOCK and self.tok.value == "}", "IF {", t)
            self.advance()
            if cond is None:
                self.end_statement()
                return n.If(t.line, t.col, branches, body)
            branches.append((cond, body))
            if self.tok.kind == NL and self.peek().is_word("ELSE", "ELSEIF"):
                self.advance()  # `}` and `else {` on separate lines
            if self.accept_word("ELSE", "IF") or self.accept_word("ELSEIF"):
                cond = self.parse_expr()
            elif self.accept_word("ELSE"):
                cond = None
            else:
                self.end_statement()
                return n.If(t.line, t.col, branches, None)

    def at_if_part(self) -> bool:
        return self.word() in ("ELSEIF", "ELSE", "ENDIF") or self.at_words("END", "IF")

    def single_line_if(self, t: Token, cond: n.Expr) -> n.Stmt:
        then = [self.inline_statement()]
        orelse = None
        if self.accept_word("ELSE"):
            orelse = [self.inline_statement()]
        self.accept_word("END", "IF")
        self.end_statement()
        return n.If(t.line, t.col, [(cond, then)], orelse)

    def inline_statement(self) -> n.Stmt:
        """One statement inside a single-line IF; stops before ELSE or the end of the line."""
        # Temporarily cut the token stream at ELSE/NL so the statement parser stops there.
        j = self.i
        depth = 0
        while self.toks[j].kind not in (NL, EOF):
            tk = self.toks[j]
            if tk.kind == OP and tk.value in ("(", "[", "{", "#{"):
                depth += 1
            elif tk.kind == OP and tk.value in (")", "]", "}"):
                depth -= 1
            elif depth == 0 and tk.kind == ID and str(tk.value).upper() == "ELSE":
                break
            j += 1
        saved = self.toks[j]
        self.toks[j] = Token(NL, None, saved.line, saved.col)
        try:
            stmt = self.parse_statement()
        finally:
            self.toks[j] = saved
        if stmt is None:
            raise self.error("expected a statement after THEN")
        if self.i > j:
            self.i = j
        return stmt

    def stmt_FOR(self, t: Token) -> n.Stmt:
        self.advance()
        each = self.accept_word("EACH")
        var_tok = self.tok
        var = self.ident("a loop variable")
        if each or self.word() == "IN":
            self.expect_word("IN")
            iterable = self.parse_expr()
            if self.word() in ("LAST", "FIRST"):  # `FOR m IN history LAST 10 DO`
                lt = self.advance()
                count = self.parse_expr()
                fn = "tail" if lt.value.upper() == "LAST" else "take"
                iterable = n.Call(lt.line, lt.col, fn, [iterable, count])
            self.accept_word("DO")
            self.end_statement()
            body = self.loop_body("FOR", t)
            self.close_for(var)
            return n.ForEach(t.line, t.col, var, iterable, body)
        if not self.tok.is_op("="):
            raise self.error("expected '=' or IN after the FOR variable", var_tok)
        self.advance()
        start = self.parse_expr()
        self.expect_word("TO")
        stop = self.parse_expr()
        step = self.parse_expr() if self.accept_word("STEP") else None
        self.end_statement()
        body = self.loop_body("FOR", t)
        self.close_for(var)
        return n.ForTo(t.line, t.col, var, start, stop, step, body)

    def loop_body(self, kind: str, t: Token) -> list[n.Stmt]:
        return self.parse_body(lambda: self.word() == "NEXT" or self.at_words("END", "FOR"), kind, t)

    def close_for(self, var: str) -> None:
        if self.accept_word("END", "FOR"):
            self.end_statement()
            return
        nt = self.expect_word("NEXT")
        if self.tok.kind == ID:
            name = self.ident("a loop variable")
            if name != var:
                raise CompileError(f"NEXT {name} does not match FOR {var}", nt.line, nt.col)
        self.end_statement()

    def stmt_WHILE(self, t: Token) -> n.Stmt:
        self.advance()
        cond = self.parse_expr()
        self.accept_word("DO")
        self.end_statement()
        body = self.parse_body(lambda: self.word() in ("WEND", "LOOP") or self.at_words("END", "WHILE"), "WHILE", t)
        if not (self.accept_word("WEND") or self.accept_word("END", "WHILE") or self.accept_word("LOOP")):
            raise self.error("expected WEND")
        self.end_statement()
        return n.Loop(t.line, t.col, cond, False, False, body, "WHILE")

    def stmt_DO(self, t: Token) -> n.Stmt:
        self.advance()
        cond = None
        until = False
        post = False
        if self.word() in ("WHILE", "UNTIL"):
            until = self.advance().value.upper() == "UNTIL"
            cond = self.parse_expr()
        self.end_statement()
        body = self.parse_body(lambda: self.word() == "LOOP", "DO", t)
        self.expect_word("LOOP")
        if self.word() in ("WHILE", "UNTIL"):
            if cond is not None:
                raise self.error("a DO loop cannot test both at DO and at LOOP")
            until = self.advance().value.upper() == "UNTIL"
            cond = self.parse_expr()
            post = True
        self.end_statement()
        return n.Loop(t.line, t.col, cond, until, post, body, "DO")

    def stmt_SELECT(self, t: Token) -> n.Stmt:
        self.advance()
        self.expect_word("CASE")
        return self.case_block(t, "SELECT", lambda: self.at_words("END", "SELECT"))

    def stmt_SWITCH(self, t: Token) -> n.Stmt:
        self.advance()
        return self.case_block(t, "SWITCH", lambda: self.at_words("END", "SWITCH"))

    def case_block(self, t: Token, kind: str, at_end: Callable[[], bool]) -> n.Stmt:
        subject = self.parse_expr()
        self.end_statement()
        cases: list[n.Case] = []
        orelse: list[n.Stmt] | None = None

        def stop() -> bool:
            return self.word() in ("CASE", "DEFAULT") or at_end()

        pre = self.parse_body(stop, kind, t)
        if pre:
            raise CompileError(f"statements before the first CASE of {kind}", pre[0].line, pre[0].col)
        while not at_end():
            ct = self.tok
            if self.accept_word("CASE", "ELSE") or self.accept_word("DEFAULT"):
                self.accept_op(":")
                self.end_statement() if self.at_end() else None
                orelse = self.parse_body(stop, kind, t)
                continue
            self.expect_word("CASE")
            tests: list[tuple] = []
            while True:
                if self.accept_word("IS"):
                    op_tok = self.advance()
                    if not (op_tok.kind == OP and op_tok.value in _COMPARE_OPS):
                        raise CompileError("expected a comparison after CASE IS", op_tok.line, op_tok.col)
                    tests.append(("is", _COMPARE_OPS[str(op_tok.value)], self.parse_expr()))
                else:
                    lo = self.parse_expr()
                    if self.accept_word("TO"):
                        tests.append(("range", lo, self.parse_expr()))
                    else:
                        tests.append(("eq", lo))
                if not self.accept_op(","):
                    break
            self.accept_op(":")
            if not self.at_end():
                raise self.error(f"unexpected {self.describe()} after CASE values", ct)
            self.end_statement()
            cases.append(n.Case(tests, self.parse_body(stop, kind, t)))
        self.i += 2
        self.end_statement()
        return n.Select(t.line, t.col, subject, cases, orelse)

    def stmt_EXIT(self, t: Token) -> n.Stmt:
        self.advance()
        what = self.word()
        if what in ("FOR", "DO", "WHILE", "SUB", "FUNCTION", "SELECT"):
            self.advance()
        elif self.at_end():
            what = "SUB" if self.in_proc else "SCRIPT"
        else:
            raise self.error(f"expected FOR, DO, WHILE, SUB or FUNCTION after EXIT, found {self.describe()}")
        self.end_statement()
        return n.Exit(t.line, t.col, what)

    def stmt_SUB(self, t: Token) -> n.Stmt:
        return self.proc(t, False)

    def stmt_FUNCTION(self, t: Token) -> n.Stmt:
        return self.proc(t, True)

    def proc(self, t: Token, is_function: bool) -> n.Stmt:
        kind = "FUNCTION" if is_function else "SUB"
        if self.in_proc:
            raise self.error(f"{kind} cannot be defined inside another SUB or FUNCTION")
        self.advance()
        name = self.ident(f"a {kind} name")
        params: list[str] = []
        if self.accept_op("("):
            while not self.tok.is_op(")"):
                self.accept_word("BYVAL") or self.accept_word("BYREF") or self.accept_word("OPTIONAL")
                params.append(self.ident("a parameter name"))
                if self.accept_word("AS"):
                    self.ident("a type name")
                if self.accept_op("="):
                    self.parse_expr()
                if not self.accept_op(","):
                    break
            self.expect_op(")")
        if self.accept_word("AS"):
            self.ident("a type name")
        self.end_statement()
        self.in_proc = True
        try:
            body = self.parse_body(lambda: self.at_words("END", kind), kind, t)
        finally:
            self.in_proc = False
        self.i += 2
        self.end_statement()
        return n.Proc(t.line, t.col, name, params, body, is_function)

    def stmt_CALL(self, t: Token) -> n.Stmt:
        self.advance()
        stmt = self.stmt_CALL_rest(t)
        self.end_statement()
        return stmt

    def stmt_CALL_rest(self, t: Token) -> n.CallUser:
        if self.tok.kind == STR:
            name_tok = self.advance()
            args = []
            if self.accept_op("("):
                args = self.expr_list(")")
                self.expect_op(")")
            else:
                while not self.at_end():
                    if not self.accept_op(","):
                        args.append(self.parse_expr())
            return n.CallUser(t.line, t.col, str(name_tok.value), args, quoted=True, explicit=True)
        name = self.ident("a procedure name")
        args = []
        if self.accept_op("("):
            args = self.expr_list(")")
            self.expect_op(")")
        else:
            while not self.at_end():
                if not self.accept_op(","):
                    args.append(self.parse_expr())
        return n.CallUser(t.line, t.col, name, args, explicit=True)

    def stmt_RETURN(self, t: Token) -> n.Stmt:
        self.advance()
        if self.accept_word("WITH"):  # `RETURN WITH error AS "text"[, k AS v]` returns a map
            pairs: list[tuple[str, n.Expr]] = []
            while True:
                key = self.ident("a field name")
                if not (self.accept_word("AS") or self.accept_op("=")):
                    raise self.error(f"expected AS after {key}")
                pairs.append((key, self.parse_expr()))
                if not self.accept_op(","):
                    break
            self.end_statement()
            return n.Return(t.line, t.col, n.MapLit(t.line, t.col, pairs))
        value = None if self.at_end() else self.parse_rhs()
        self.end_statement()
        return n.Return(t.line, t.col, value)

    def stmt_GOTO(self, t: Token) -> n.Stmt:
        self.advance()
        label = self.ident("a label")
        self.end_statement()
        return n.Goto(t.line, t.col, label)

    def stmt_RESUME(self, t: Token) -> n.Stmt:
        self.advance()
        target: str | None = None
        if self.accept_word("NEXT"):
            target = "NEXT"
        elif self.tok.kind == NUM and self.tok.value == 0:  # VB `RESUME 0` = `RESUME`
            self.advance()
        elif self.tok.kind == ID:
            target = self.ident("a label")
        self.end_statement()
        return n.Resume(t.line, t.col, target)

    def stmt_ON(self, t: Token) -> n.Stmt | object:
        if self.word(1) == "ERROR":
            self.i += 2
            if self.accept_word("RESUME", "NEXT"):
                self.end_statement()
                return n.OnError(t.line, t.col, "NEXT", None)
            self.expect_word("GOTO")
            if self.tok.kind == NUM and self.tok.value == 0:
                self.advance()
                self.end_statement()
                return n.OnError(t.line, t.col, "OFF", None)
            label = self.ident("a label")
            self.end_statement()
            return n.OnError(t.line, t.col, "GOTO", label)
        if self.word(1) == "TIMEOUT":
            raise self.error("ON TIMEOUT is only allowed after STEP n: HUMAN APPROVAL FROM ...")
        # Triggers: ON INSERT OF "t", ON EMAIL "a", ON CHANGE "p", ON FORM SUBMIT "f", ON EVENT "e" DO
        self.advance()
        words: list[str] = []
        while self.tok.kind == ID and self.word() not in CONNECTORS | {"DO"}:
            words.append(self.word())
            self.advance()
        if not words:
            raise self.error("expected a trigger (INSERT, UPDATE, DELETE, EMAIL, CHANGE, FORM SUBMIT, EVENT) after ON")
        trigger = " ".join(words)
        args, opts = self.keyword_args_until_do()
        is_block = self.accept_word("DO") or self.has_end_on()
        self.end_statement()
        if not is_block:
            return n.Meta(t.line, t.col, "ON", {"trigger": trigger, "args": args, "opts": opts})
        body = self.parse_body(lambda: self.at_words("END", "ON"), "ON " + trigger, t)
        self.i += 2
        self.end_statement()
        return n.Handler(t.line, t.col, trigger, args, body)

    def stmt_STEP(self, t: Token) -> n.Stmt | object:
        """A workflow step: `STEP n: BOT "bot" "action"` (upstream), `STEP n: PARALLEL` with
        `BRANCH X: BOT "bot" "action"` lines up to END PARALLEL, and `STEP n: HUMAN APPROVAL FROM who`
        with optional `TIMEOUT secs` and `ON TIMEOUT: action words` (same or following lines).
        Becomes `Host.keyword("STEP", [n], opts)` with opts BOT/ACTION, PARALLEL (a list of
        {branch, bot, action}) or APPROVAL FROM/TIMEOUT/ON TIMEOUT."""
        self.advance()
        number = self.parse_expr()
        self.expect_op(":")
        opts: dict[str, n.Expr] = {}
        if self.accept_word("BOT"):
            opts["BOT"], opts["ACTION"] = self.bot_action()
            self.end_statement()
        elif self.accept_word("PARALLEL"):
            self.end_statement()
            branches: list[n.Expr] = []
            while True:
                while self.tok.kind == NL:
                    self.advance()
                if self.accept_word("END", "PARALLEL"):
                    self.end_statement()
                    break
                if self.tok.kind == EOF:
                    raise self.error("STEP ... PARALLEL is never closed (END PARALLEL)", t)
                bt = self.expect_word("BRANCH")
                if self.tok.kind not in (ID, NUM, STR):
                    raise self.error(f"expected a branch name, found {self.describe()}")
                branch = str(self.advance().value)
                self.expect_op(":")
                self.expect_word("BOT")
                bot, action = self.bot_action()
                self.end_statement()
                branches.append(n.MapLit(bt.line, bt.col, [
                    ("branch", n.Lit(bt.line, bt.col, branch)), ("bot", bot), ("action", action)]))
            opts["PARALLEL"] = n.ArrayLit(t.line, t.col, branches)
        elif self.accept_word("HUMAN", "APPROVAL"):
            self.expect_word("FROM")
            opts["APPROVAL FROM"] = self.parse_expr()
            while True:
                if self.tok.kind == NL and (self.peek().is_word("TIMEOUT") or (
                        self.peek().is_word("ON") and self.peek(2).is_word("TIMEOUT"))):
                    self.advance()
                if self.accept_word("TIMEOUT"):
                    opts["TIMEOUT"] = self.parse_expr()
                elif self.accept_word("ON", "TIMEOUT"):
                    self.accept_op(":")
                    words = []
                    while not self.at_end():
                        tk = self.advance()
                        words.append(json.dumps(tk.value) if tk.kind == STR else str(tk.value))
                    if not words:
                        raise self.error("expected an action after ON TIMEOUT:")
                    opts["ON TIMEOUT"] = n.Lit(t.line, t.col, " ".join(words))
                else:
                    break
            self.end_statement()
        else:
            raise self.error(f"expected BOT, PARALLEL or HUMAN APPROVAL after STEP n:, found {self.describe()}")
        return n.ExprStmt(t.line, t.col, n.KwCall(t.line, t.col, "STEP", [number], opts))

    def bot_action(self) -> tuple[n.Expr, n.Expr]:
        bot = self.parse_expr()
        self.accept_op(",")
        action = n.Lit(self.tok.line, self.tok.col, "") if self.at_end() else self.parse_expr()
        return bot, action

    def stmt_BRANCH(self, t: Token) -> n.Stmt:
        raise self.error("BRANCH is only allowed inside STEP n: PARALLEL ... END PARALLEL")

    def stmt_SCHEDULE(self, t: Token) -> n.Stmt | object:
        if self.word(1) not in ("IN", "AT", "EVERY"):
            return NotImplemented
        self.advance()
        args, opts = self.keyword_args_until_do()
        self.accept_word("DO")
        self.end_statement()
        body = self.parse_body(lambda: self.at_words("END", "SCHEDULE"), "SCHEDULE", t)
        self.i += 2
        self.end_statement()
        return n.Handler(t.line, t.col, "SCHEDULE", args + list(opts.values()), body)

    def keyword_args_until_do(self) -> tuple[list[n.Expr], dict[str, n.Expr]]:
        # Cut at a trailing DO so the generic argument parser does not read it as a variable.
        j = self.i
        while self.toks[j].kind not in (NL, EOF):
            j += 1
        cut = j - 1 if j - 1 >= self.i and self.toks[j - 1].is_word("DO") else None
        if cut is None:
            return self.keyword_args()
        saved = self.toks[cut]
        self.toks[cut] = Token(NL, None, saved.line, saved.col)
        try:
            return self.keyword_args()
        finally:
            self.toks[cut] = saved

    def has_end_on(self) -> bool:
        j = self.i
        while j < len(self.toks) - 1:
            tk = self.toks[j]
            prev = self.toks[j - 1] if j else None
            if tk.kind == ID and (prev is None or prev.kind == NL):
                up = str(tk.value).upper()
                if up == "END" and self.toks[j + 1].is_word("ON"):
                    return True
                if up == "ON" and not self.toks[j + 1].is_word("ERROR"):
                    return False
            j += 1
        return False

    def stmt_END(self, t: Token) -> n.Stmt:
        if self.peek().kind in (NL, EOF) or self.peek().is_op(":"):
            self.advance()
            self.end_statement()
            return n.End(t.line, t.col)
        nxt = self.word(1)
        raise self.error(f"END {nxt} without a matching opening statement" if nxt else "unexpected END")

    def stmt_WITH(self, t: Token) -> n.Stmt:
        self.advance()
        target = self.parse_lvalue() if self.tok.kind == ID else None
        if target is None:
            raise self.error("expected a variable after WITH")
        self.end_statement()
        self.with_stack.append(target)
        try:
            body = self.parse_body(lambda: self.at_words("END", "WITH"), "WITH", t)
        finally:
            self.with_stack.pop()
        self.i += 2
        self.end_statement()
        return n.With(t.line, t.col, target, body)

    def stmt_SET(self, t: Token) -> n.Stmt | object:
        kw = self.match_keyword(expression=False)
        if kw is not None:
            if kw[0] == "SET SCHEDULE":
                self.i += 2
                if self.tok.kind in (ID, NUM) and all(
                        tk.kind in (ID, NUM) for tk in self.toks[self.i:self.line_end()]):
                    # unquoted natural language: `SET SCHEDULE every 1 hour`
                    text = self.rest_of_line_text(self.tok).strip()
                    self.skip_to_eol()
                    return n.Schedule(t.line, t.col, [n.Lit(t.line, t.col, text)])
                args, _opts = self.keyword_args()
                if not args:
                    raise self.error("SET SCHEDULE needs a schedule such as \"0 9 * * *\" or \"every day at 9am\"")
                self.end_statement()
                return n.Schedule(t.line, t.col, args)
            return NotImplemented
        if self.peek().kind == STR or (self.peek().kind == ID and self.peek(2).is_op(",")):
            self.advance()
            args, opts = self.keyword_args()
            self.end_statement()
            return n.ExprStmt(t.line, t.col, n.KwCall(t.line, t.col, "SET", args, opts))
        self.advance()
        if self.tok.kind != ID:
            raise self.error(f"expected a variable after SET, found {self.describe()}")
        return self.assignment(self.tok)

    def stmt_LET(self, t: Token) -> n.Stmt:
        self.advance()
        if self.tok.kind != ID:
            raise self.error(f"expected a variable after LET, found {self.describe()}")
        return self.assignment(self.tok)

    def stmt_DIM(self, t: Token) -> n.Stmt:
        self.advance()
        name_tok = self.tok
        name = self.ident("a variable name")
        value: n.Expr = n.Lit(t.line, t.col, None)
        if self.accept_op("("):
            self.expr_list(")")
            self.expect_op(")")
            value = n.ArrayLit(t.line, t.col, [])
        if self.accept_word("AS"):
            self.accept_word("NEW")
            self.ident("a type name")
        if self.accept_op("="):
            value = self.parse_rhs()
        self.end_statement()
        return n.Assign(t.line, t.col, n.Var(name_tok.line, name_tok.col, name), value)

    def stmt_HEAR(self, t: Token) -> n.Stmt:
        self.advance()
        if self.tok.kind == STR:  # legacy `HEAR "prompt" AS var`
            prompt = self.parse_expr()
            self.expect_word("AS")
            target = self.parse_lvalue()
            self.end_statement()
            return n.Hear(t.line, t.col, target, "STRING", None, prompt, None)
        if self.tok.kind != ID:
            raise self.error(f"expected a variable after HEAR, found {self.describe()}")
        target = self.parse_lvalue()
        return self.hear_rest(t, target)

    def hear_rest(self, t: Token, target: n.Expr) -> n.Stmt:
        kind = "STRING"
        options: list[n.Expr] | n.Expr | None = None
        prompt = default = None
        while not self.at_end():
            if self.accept_word("AS"):
                if self.word() == "MENU" and self.peek().kind == STR:
                    self.advance()
                if self.tok.kind == ID and self.peek().kind in (NL, EOF) or (
                    self.tok.kind == ID and self.peek().kind == ID and self.word(1) in ("WITH", "DEFAULT")
                ):
                    kind = self.word()
                    self.advance()
                elif self.tok.kind == STR:
                    options = [self.parse_expr()]
                    while self.accept_op(","):
                        options.append(self.parse_expr())
                    kind = "MENU"
                else:
                    options = self.parse_expr()
                    kind = "MENU"
            elif self.accept_word("WITH"):
                prompt = self.parse_expr()
            elif self.accept_word("DEFAULT"):
                default = self.parse_expr()
            else:
                raise self.error(f"unexpected {self.describe()} in HEAR")
        self.end_statement()
        return n.Hear(t.line, t.col, target, kind, options, prompt, default)

    def stmt_WAIT(self, t: Token) -> n.Stmt | object:
        if self.at_words("WAIT", "FOR", "RESPONSE"):
            # `WAIT FOR RESPONSE AS x [TIMEOUT secs]` (templates): a HEAR of x. The VM never times out
            # a HEAR; the caller decides when (and whether) to resume the conversation.
            self.i += 3
            self.expect_word("AS")
            target = self.parse_lvalue()
            if self.accept_word("TIMEOUT"):
                self.parse_expr()
            self.end_statement()
            return n.Hear(t.line, t.col, target, "STRING", None, None, None)
        if self.word(1) == "FOR":
            return NotImplemented
        self.advance()
        seconds = self.parse_expr()
        self.end_statement()
        return n.Wait(t.line, t.col, seconds)

    def stmt_TRY(self, t: Token) -> n.Stmt:
        self.advance()
        self.end_statement()
        body = self.parse_body(lambda: self.word() == "CATCH" or self.at_words("END", "TRY"), "TRY", t)
        var = None
        handler: list[n.Stmt] = []
        if self.accept_word("CATCH"):
            if self.tok.kind == ID:
                var = self.ident("a variable")
            self.end_statement()
            handler = self.parse_body(lambda: self.at_words("END", "TRY"), "TRY", t)
        self.i += 2
        self.end_statement()
        return n.Try(t.line, t.col, body, var, handler)

    def stmt_THROW(self, t: Token) -> n.Stmt:
        self.advance()
        value = self.parse_expr() if not self.at_end() else n.Lit(t.line, t.col, "error")
        self.end_statement()
        return n.Throw(t.line, t.col, value)

    stmt_RAISE = stmt_THROW

    def stmt_ASSERT(self, t: Token) -> n.Stmt:
        self.advance()
        cond = self.parse_expr()
        msg: n.Expr = n.Lit(t.line, t.col, f"assertion failed at line {t.line}")
        if self.accept_op(","):
            msg = self.parse_expr()
        self.end_statement()
        return n.If(t.line, t.col, [(n.Unary(t.line, t.col, "NOT", cond), [n.Throw(t.line, t.col, msg)])], None)

    def stmt_CLEAR(self, t: Token) -> n.Stmt | object:
        if self.word(1) in ("ERROR", "ERR"):
            self.i += 2
            self.end_statement()
            return n.OnError(t.line, t.col, "CLEAR", None)
        return NotImplemented

    def stmt_PARAM(self, t: Token) -> n.Stmt:
        self.advance()
        name = self.ident("a parameter name")
        data: dict = {"name": name, "type": "string", "example": None, "description": "", "required": True,
                      "enum": None, "line": t.line}
        while not self.at_end():
            w = self.word()
            if self.accept_word("AS"):
                if self.tok.kind == STR:
                    first = str(self.advance().value)
                    if self.tok.is_op(","):  # `PARAM x AS "a", "b"`: the allowed values
                        values = [first]
                        while self.accept_op(","):
                            values.append(self.literal_value("the value list"))
                        data["enum"] = values
                    else:  # `PARAM x AS "what it is"`: a description in place of the type
                        data["description"] = first
                else:
                    data["type"] = self.ident("a type name")
            elif self.accept_word("DEFAULT"):
                data["default"] = self.literal_value("DEFAULT")
            elif self.accept_word("LIKE"):
                data["example"] = self.literal_value("LIKE")
            elif self.accept_word("DESCRIPTION"):
                data["description"] = self.literal_value("DESCRIPTION")
            elif self.accept_word("OPTIONAL"):
                data["required"] = False
            elif self.accept_word("REQUIRED"):
                data["required"] = True
            elif self.accept_word("ENUM"):
                value = self.literal_value("ENUM")
                if not isinstance(value, list):
                    raise self.error("ENUM needs a list of values like [\"a\", \"b\"]")
                data["enum"] = value
            else:
                raise self.error(f"unexpected {w or self.describe()} in PARAM")
        self.end_statement()
        return n.Meta(t.line, t.col, "PARAM", data)

    def literal_value(self, what: str) -> object:
        e = self.parse_postfix()
        value = _constant(e)
        if value is _NOT_CONSTANT:
            raise CompileError(f"{what} needs a literal value", e.line, e.col)
        return value

    def stmt_DESCRIPTION(self, t: Token) -> n.Stmt:
        self.advance()
        if self.tok.kind == STR and self.peek().kind in (NL, EOF):
            text = str(self.advance().value)
        else:
            text = self.rest_of_line_text(self.tok).strip() if not self.at_end() else ""
            while not self.at_end():
                self.advance()
        self.end_statement()
        return n.Meta(t.line, t.col, "DESCRIPTION", {"text": text})

    def stmt_CREATE(self, t: Token) -> n.Stmt | object:
        if self.word(1) in ("INDEX", "UNIQUE"):
            text = self.rest_of_line_text(t)
            self.skip_to_eol()
            return n.Meta(t.line, t.col, "INDEX", {"sql": text.strip()})
        return NotImplemented

    def stmt_WEBHOOK(self, t: Token) -> n.Stmt | object:
        if not (self.peek().kind == STR and self.peek(2).kind in (NL, EOF)):
            return NotImplemented  # outgoing form: `WEBHOOK POST url WITH {...}`
        self.advance()
        name = self.literal_value("WEBHOOK")
        self.end_statement()
        return n.Meta(t.line, t.col, "WEBHOOK", {"name": str(name)})

    # -- raw blocks ----------------------------------------------------------------------------
    def raw_block(self, t: Token) -> n.Stmt:
        block = t.value
        assert isinstance(block, RawBlock)
        if block.kind == "TABLE":
            return n.Meta(t.line, t.col, "TABLE", {"header": block.header, "columns": [
                line.strip() for line in block.lines if line.strip() and not line.strip().startswith("'")]})
        lenient = block.kind == "TALK"
        lines = [interpolate(text, t.line + k + 1, 1, lenient) for k, text in enumerate(block.lines)]
        header = None
        if block.kind == "MAIL":
            if not block.header:
                raise CompileError("BEGIN MAIL needs a recipient", t.line, t.col)
            header = parse_expression(block.header, t.line, t.col)
        return n.Block(t.line, t.col, block.kind, header, lines)

    # -- expressions ---------------------------------------------------------------------------
    def expr_list(self, closer: str) -> list[n.Expr]:
        items: list[n.Expr] = []
        while not self.tok.is_op(closer):
            items.append(self.parse_expr())
            if not self.accept_op(","):
                break
        return items

    def parse_expr(self) -> n.Expr:
        left = self.parse_or()
        while self.tok.is_op("??"):
            t = self.advance()
            left = n.Binary(t.line, t.col, "??", left, self.parse_or())
        if self.tok.is_op("?"):  # `cond ? a : b`
            t = self.advance()
            then = self.parse_expr()
            self.expect_op(":")
            orelse = self.parse_expr()
            return n.Call(t.line, t.col, "$iif", [left, then, orelse])
        return left

    def parse_or(self) -> n.Expr:
        left = self.parse_and()
        while self.word() in ("OR", "XOR") or self.tok.is_op("||"):
            t = self.advance()
            op = "XOR" if self.toks[self.i - 1].is_word("XOR") else "OR"
            left = n.Binary(t.line, t.col, op, left, self.parse_and())
        return left

    def parse_and(self) -> n.Expr:
        left = self.parse_not()
        while self.word() == "AND" or self.tok.is_op("&&"):
            t = self.advance()
            left = n.Binary(t.line, t.col, "AND", left, self.parse_not())
        return left

    def parse_not(self) -> n.Expr:
        if self.word() == "NOT" or self.tok.is_op("!"):
            t = self.advance()
            return n.Unary(t.line, t.col, "NOT", self.parse_not())
        return self.parse_compare()

    def parse_compare(self) -> n.Expr:
        left = self.parse_concat()
        while True:
            t = self.tok
            if t.kind == OP and t.value in _COMPARE_OPS:
                self.advance()
                left = n.Binary(t.line, t.col, _COMPARE_OPS[str(t.value)], left, self.parse_concat())
            elif self.word() == "IN":
                self.advance()
                left = n.Binary(t.line, t.col, "IN", left, self.parse_concat())
            elif self.at_words("NOT", "IN"):
                self.i += 2
                left = n.Binary(t.line, t.col, "NOT IN", left, self.parse_concat())
            elif self.word() == "CONTAINS" and self.starts_argument(self.peek()):
                self.advance()
                left = n.Binary(t.line, t.col, "CONTAINS", left, self.parse_concat())
            elif self.word() in ("STARTS", "ENDS") and self.word(1) == "WITH":
                op = self.word() + " WITH"
                self.i += 2
                left = n.Binary(t.line, t.col, op, left, self.parse_concat())
            elif self.word() == "LIKE":
                self.advance()
                left = n.Binary(t.line, t.col, "LIKE", left, self.parse_concat())
            elif self.word() == "IS":
                self.advance()
                negate = self.accept_word("NOT")
                right = self.parse_concat()
                left = n.Binary(t.line, t.col, "!=" if negate else "==", left, right)
            else:
                return left

    def parse_concat(self) -> n.Expr:
        left = self.parse_additive()
        while self.tok.is_op("&"):
            t = self.advance()
            left = n.Binary(t.line, t.col, "&", left, self.parse_additive())
        return left

    def parse_additive(self) -> n.Expr:
        left = self.parse_term()
        while self.tok.kind == OP and self.tok.value in ("+", "-"):
            t = self.advance()
            left = n.Binary(t.line, t.col, str(t.value), left, self.parse_term())
        return left

    def parse_term(self) -> n.Expr:
        left = self.parse_unary()
        while (self.tok.kind == OP and self.tok.value in ("*", "/", "\\", "%")) or self.word() == "MOD":
            t = self.advance()
            op = "MOD" if t.kind == ID or t.value == "%" else str(t.value)
            left = n.Binary(t.line, t.col, op, left, self.parse_unary())
        return left

    def parse_unary(self) -> n.Expr:
        t = self.tok
        if t.kind == OP and t.value in ("-", "+"):
            self.advance()
            operand = self.parse_unary()
            if t.value == "+":
                return operand
            if isinstance(operand, n.Lit) and isinstance(operand.value, int | float) and not isinstance(
                    operand.value, bool):
                return n.Lit(t.line, t.col, -operand.value)
            return n.Unary(t.line, t.col, "-", operand)
        return self.parse_power()

    def parse_power(self) -> n.Expr:
        base = self.parse_postfix()
        if self.tok.is_op("^"):
            t = self.advance()
            return n.Binary(t.line, t.col, "^", base, self.parse_unary())
        return base

    def parse_postfix(self) -> n.Expr:
        e = self.parse_primary()
        while True:
            t = self.tok
            if t.is_op(".", "?."):
                self.advance()
                if self.tok.kind not in (ID, NUM):
                    raise self.error(f"expected a member name after '.', found {self.describe()}")
                name = str(self.advance().value).lower()
                if self.tok.is_op("("):  # method form of a built-in: `list.PUSH(x)` = PUSH(list, x)
                    self.advance()
                    args = self.expr_list(")")
                    self.expect_op(")")
                    e = n.Call(t.line, t.col, name, [e, *args])
                else:
                    e = n.Member(t.line, t.col, e, name)
            elif t.is_op("["):
                self.advance()
                idx = self.parse_expr()
                self.expect_op("]")
                e = n.Index(t.line, t.col, e, idx)
            else:
                return e

    def parse_primary(self) -> n.Expr:
        t = self.tok
        if t.kind == NUM:
            self.advance()
            return n.Lit(t.line, t.col, t.value)
        if t.kind == STR:
            self.advance()
            return interpolate(str(t.value), t.line, t.col)
        if t.kind == OP:
            if t.value == "(":
                self.advance()
                kw = self.match_keyword(expression=True)
                # `(FIND "t", "a=1").name`: inside parentheses a keyword takes all its arguments
                e = self.keyword_call(kw, full=True) if kw is not None else self.parse_expr()
                self.expect_op(")")
                return e
            if t.value == "[":
                self.advance()
                items = self.expr_list("]")
                self.expect_op("]")
                return n.ArrayLit(t.line, t.col, items)
            if t.value in ("{", "#{"):
                return self.map_literal()
            raise self.error(f"expected a value, found {self.describe()}")
        if t.kind == ID:
            w = self.word()
            if w in _LITERAL_WORDS and not self.peek().is_op("("):
                self.advance()
                return n.Lit(t.line, t.col, _LITERAL_WORDS[w])
            if w in OPERATOR_WORDS:
                raise self.error(f"expected a value, found {w}")
            kw = self.match_keyword(expression=True)
            if kw is not None:
                if kw[0] == "HEAR":
                    raise self.error("HEAR must be a statement of its own: use `HEAR var` or `var = HEAR`")
                return self.keyword_call(kw, full=False)
            self.advance()
            name = str(t.value).lower()
            if self.tok.is_op("("):
                self.advance()
                args = self.expr_list(")")
                self.expect_op(")")
                if w == "FORMAT" and len(args) == 1 and self.accept_word("AS"):
                    args.append(self.parse_postfix())
                return n.Call(t.line, t.col, name, args, written=str(t.value))
            if w == "FORMAT" and self.starts_argument(self.tok) and not self.tok.is_op("[", "{"):
                # `FORMAT NOW() AS "YYYYMMDD"` inside an expression
                args = [self.parse_postfix()]
                if self.accept_word("AS"):
                    args.append(self.parse_postfix())
                return n.Call(t.line, t.col, name, args)
            return n.Var(t.line, t.col, name)
        raise self.error(f"expected a value, found {self.describe()}")

    def map_literal(self) -> n.Expr:
        t = self.advance()
        pairs: list[tuple[str, n.Expr]] = []
        while not self.tok.is_op("}"):
            kt = self.tok
            if kt.kind == STR:
                key = str(kt.value)
            elif kt.kind == ID:
                key = str(kt.value).lower()
            elif kt.kind == NUM:
                key = str(kt.value)
            else:
                raise self.error(f"expected a key in the map, found {self.describe()}")
            self.advance()
            if not (self.accept_op(":") or self.accept_op("=")):
                raise self.error(f"expected ':' after the map key, found {self.describe()}")
            pairs.append((key, self.parse_expr()))
            if not self.accept_op(","):
                break
        self.expect_op("}")
        return n.MapLit(t.line, t.col, pairs)


_NOT_CONSTANT = object()


def _constant(e: n.Expr) -> object:
    if isinstance(e, n.Lit):
        return e.value
    if isinstance(e, n.Interp) and all(isinstance(p, str) for p in e.parts):
        return "".join(str(p) for p in e.parts)
    if isinstance(e, n.ArrayLit):
        values = [_constant(x) for x in e.items]
        return _NOT_CONSTANT if any(v is _NOT_CONSTANT for v in values) else values
    if isinstance(e, n.Var):
        return e.name
    return _NOT_CONSTANT


_INTERP = re.compile(r"\\?\$\{")


# In a BEGIN TALK block, what upstream reads of a `${...}` that is not an expression: a variable name
# (letters, digits, `_`, `.`, `[`, `]`) ended by a space, ':' or '='; the rest of the text stays literal.
_LENIENT_NAME = re.compile(r"[\w.\[\]]+(?=[ :=])")


def interpolate(text: str, line: int, col: int, lenient: bool = False) -> n.Expr:
    """A string literal: plain Lit, or Interp when it holds `${expr}` (spec 3.1 GAP: every string).

    `lenient` (BEGIN TALK lines, prose written by hand): a `${...}` that does not parse is read the
    way upstream's TALK-block conversion reads it, `${name rest}` = the value of name + " rest}",
    and when not even a name starts it, the text is kept literally.
    """
    if "$" not in text:
        return n.Lit(line, col, text)
    parts: list[object] = []
    buf: list[str] = []
    closings: dict[int, int] | None = None  # found once per text: a scan per `${` made failing ones quadratic
    tries_left = LENIENT_INTERPOLATION_TRIES_FACTOR * len(text)
    i = 0
    while i < len(text):
        if text.startswith("\\$", i):
            buf.append("$")
            i += 2
            continue
        if text.startswith("${{", i):  # `${{amount}}`: a dollar sign before a mustache placeholder
            buf.append("${{")
            i += 3
            continue
        if text.startswith("${", i):
            try:
                if closings is None:
                    closings = _closing_braces(text)
                end = closings.get(i + 1, -1)
                if end < 0:
                    raise CompileError("'${' without a closing '}' in string", line, col)
                if lenient:  # nested `${` that all fail would each parse the rest of the line
                    tries_left -= end - i - 2
                    if tries_left < 0:
                        raise CompileError("too many '${' that are not expressions", line, col)
                inner = text[i + 2:end]
                if not inner.strip():
                    raise CompileError("empty '${}' in string", line, col)
                expr = parse_expression(inner, line, col)
            except CompileError:
                if not lenient:
                    raise
                m = _LENIENT_NAME.match(text, i + 2)
                try:
                    expr = parse_expression(m.group(0), line, col) if m else None
                except CompileError:
                    expr = None
                end = m.end() - 1 if m else i + 1
                if expr is None:
                    buf.append("${")
                    i += 2
                    continue
            if buf:
                parts.append("".join(buf))
                buf = []
            parts.append(expr)
            i = end + 1
            continue
        buf.append(text[i])
        i += 1
    if buf:
        parts.append("".join(buf))
    if all(isinstance(p, str) for p in parts):
        return n.Lit(line, col, "".join(str(p) for p in parts))
    return n.Interp(line, col, parts)


_BRACE_OR_QUOTE = re.compile(r"[{}\"']")


def _closing_braces(text: str) -> dict[int, int]:
    """For each `{` of `text`, where the `}` closing it is (absent: never closed), in one pass.

    The brace closing a `${` at i is found by scanning from i + 2 outside quotes, quotes being `"..."` or
    `'...'`, counting `{` and `}`. Where such a scan is inside or outside quotes depends on where it started,
    but a quote character swaps the states "outside", "in double quotes" and "in single quotes" among the
    three possible scans (0, 1 or 2 quotes open at the start), so three tracks, each with its own stack of
    open braces, stand for every scan: a `{` belongs to the track that is outside quotes there.
    """
    stacks: list[list[int]] = [[], [], []]
    track = {"": 0, '"': 1, "'": 2}  # quote state -> the track in that state
    closing: dict[int, int] = {}
    for m in _BRACE_OR_QUOTE.finditer(text):
        ch, j = m.group(), m.start()
        if ch == "{":
            stacks[track[""]].append(j)
        elif ch == "}":
            stack = stacks[track[""]]
            if stack:
                closing[stack.pop()] = j
        else:  # the track outside quotes enters this quote, the one inside it leaves
            track[""], track[ch] = track[ch], track[""]
    return closing


def parse_expression(text: str, line: int, col: int) -> n.Expr:
    """Parse an expression embedded in a string or block header, reporting errors at (line, col)."""
    try:
        toks = Lexer(text.replace("\n", " ")).tokenize()
        p = Parser(toks, text)
        e = p.parse_rhs()
        if p.tok.kind == NL:
            p.advance()
        if p.tok.kind != EOF:
            raise p.error(f"unexpected {p.describe()}")
    except CompileError as exc:
        raise CompileError(f"in '{text.strip()}': {exc.message}", line, col) from None
    _relocate(e, line, col)
    return e


def _relocate(e: object, line: int, col: int) -> None:
    """Give every node of an embedded expression the position of the string that holds it."""
    stack = [e]
    while stack:
        x = stack.pop()
        if isinstance(x, n.Expr):
            x.line, x.col = line, col
            for name in x.__slots__:
                stack.append(getattr(x, name))
        elif isinstance(x, list | tuple):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())


def parse(source: str) -> list[n.Stmt]:
    """Parse a whole script into statements."""
    return Parser(Lexer(source).tokenize(), source).parse_program()

