"""AST node types produced by the parser and consumed by the compiler.

Identifiers are already lower-cased here (the dialect is case-insensitive); keyword names are the
canonical upper-case phrase (`"SET BOT MEMORY"`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# --- expressions ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Expr:
    line: int
    col: int


@dataclass(slots=True)
class Lit(Expr):
    value: object


@dataclass(slots=True)
class Interp(Expr):
    """A string literal with `${expr}` parts: str pieces and expressions alternate."""

    parts: list[object]


@dataclass(slots=True)
class Var(Expr):
    name: str


@dataclass(slots=True)
class Member(Expr):
    obj: Expr
    name: str


@dataclass(slots=True)
class Index(Expr):
    obj: Expr
    index: Expr


@dataclass(slots=True)
class Call(Expr):
    """`NAME(args)`: a user FUNCTION or a built-in; resolved by the compiler."""

    name: str
    args: list[Expr]
    loose: bool = False  # space-separated form (`FIRST links, 10`): arity is checked at run time
    written: str = ""  # the name as the script spells it (`name` is lower-cased), for messages


@dataclass(slots=True)
class Unary(Expr):
    op: str
    operand: Expr


@dataclass(slots=True)
class Binary(Expr):
    op: str
    left: Expr
    right: Expr


@dataclass(slots=True)
class ArrayLit(Expr):
    items: list[Expr]


@dataclass(slots=True)
class MapLit(Expr):
    pairs: list[tuple[str, Expr]]


@dataclass(slots=True)
class KwCall(Expr):
    """A world-touching keyword (`FIND "t", "a=1"`, `GET BOT MEMORY "k"`) used for its value or effect.

    `args` are the positional expressions; `opts` maps a connector word (`TO`, `AS`, `WITH`...) to
    the expression that followed it.
    """

    keyword: str
    args: list[Expr]
    opts: dict[str, Expr] = field(default_factory=dict)


# --- statements ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Stmt:
    line: int
    col: int


@dataclass(slots=True)
class Assign(Stmt):
    target: Expr  # Var, Member or Index
    value: Expr


@dataclass(slots=True)
class ExprStmt(Stmt):
    """A keyword used as a statement, or a call whose value is dropped."""

    expr: Expr


@dataclass(slots=True)
class CallUser(Stmt):
    """`CALL name(args)` / `name args` / `x = name(args)`; resolved by the compiler."""

    name: str
    args: list[Expr]
    target: Expr | None = None
    quoted: bool = False  # CALL "script.bas"
    explicit: bool = False  # written with CALL: an unknown name is another script of the bot


@dataclass(slots=True)
class If(Stmt):
    branches: list[tuple[Expr, list[Stmt]]]
    orelse: list[Stmt] | None


@dataclass(slots=True)
class ForEach(Stmt):
    var: str
    iterable: Expr
    body: list[Stmt]


@dataclass(slots=True)
class ForTo(Stmt):
    var: str
    start: Expr
    stop: Expr
    step: Expr | None
    body: list[Stmt]


@dataclass(slots=True)
class Loop(Stmt):
    """WHILE/WEND and the DO..LOOP family; `until` negates, `post` tests after the body."""

    cond: Expr | None
    until: bool
    post: bool
    body: list[Stmt]
    kind: str  # "WHILE" or "DO" (which EXIT leaves it)


@dataclass(slots=True)
class Case:
    """One CASE: tests are ("eq", expr) / ("range", lo, hi) / ("is", op, expr)."""

    tests: list[tuple]
    body: list[Stmt]


@dataclass(slots=True)
class Select(Stmt):
    subject: Expr
    cases: list[Case]
    orelse: list[Stmt] | None


@dataclass(slots=True)
class Exit(Stmt):
    what: str  # FOR, DO, WHILE, SUB, FUNCTION, SELECT


@dataclass(slots=True)
class Return(Stmt):
    value: Expr | None


@dataclass(slots=True)
class End(Stmt):
    pass


@dataclass(slots=True)
class Goto(Stmt):
    label: str


@dataclass(slots=True)
class Label(Stmt):
    name: str


@dataclass(slots=True)
class OnError(Stmt):
    mode: str  # "NEXT", "OFF" (GOTO 0), "GOTO"
    label: str | None


@dataclass(slots=True)
class Resume(Stmt):
    target: str | None = None  # "NEXT", a label, or None: retry the statement that failed (VB)


@dataclass(slots=True)
class Try(Stmt):
    body: list[Stmt]
    var: str | None
    handler: list[Stmt]


@dataclass(slots=True)
class Throw(Stmt):
    value: Expr


@dataclass(slots=True)
class Hear(Stmt):
    target: Expr
    kind: str  # upper-case type name, "MENU" or "STRING"
    options: list[Expr] | Expr | None
    prompt: Expr | None
    default: Expr | None


@dataclass(slots=True)
class Wait(Stmt):
    seconds: Expr


@dataclass(slots=True)
class With(Stmt):
    target: Expr
    body: list[Stmt]


@dataclass(slots=True)
class Block(Stmt):
    """BEGIN TALK / BEGIN SYSTEM PROMPT / BEGIN MAIL with interpolated lines."""

    kind: str
    header: Expr | None
    lines: list[Expr]


@dataclass(slots=True)
class Proc(Stmt):
    name: str
    params: list[str]
    body: list[Stmt]
    is_function: bool


@dataclass(slots=True)
class Handler(Stmt):
    """`ON EVENT "x" DO ... END ON`: an event handler, compiled like a SUB and listed in metadata."""

    trigger: str
    args: list[Expr]
    body: list[Stmt]


@dataclass(slots=True)
class Meta(Stmt):
    """Compile-time-only statements: PARAM, DESCRIPTION, TABLE, WEBHOOK, ON (trigger) ..."""

    kind: str
    data: dict


@dataclass(slots=True)
class Schedule(Stmt):
    args: list[Expr]


@dataclass(slots=True)
class Nop(Stmt):
    pass
