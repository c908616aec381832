"""Compiler: AST -> `Program` (flat instruction lists per code unit) plus metadata.

Each instruction is a Python closure `op(vm) -> next_pc`; expressions are compiled to closures
`ev(vm) -> value` with constants folded into them. This keeps dispatch to one call per instruction
(the VM loop is `pc = code[pc](vm)`), which is what makes >1M instructions/s reachable in CPython.

Closures are not serialisable, and need not be: a suspended run stores only JSON (unit name, pc,
variables), and resuming recompiles the same source (checked by hash) to the same instruction layout.

Metadata gathered here (no runtime effect): PARAMs and DESCRIPTION (the tool schema), SET SCHEDULE
crons, USE KB / ADD TOOL / USE TOOL literal names, websites, webhooks, TABLE definitions, triggers.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from apps.basic import meter
from apps.basic import nodes as n
from apps.basic import values as V
from apps.basic.builtins import BUILTINS
from apps.basic.errors import BasicRuntimeError, CompileError, LimitExceeded
from apps.basic.keywords import KEYWORDS, PURE_KEYWORDS
from apps.basic.limits import MAX_SCHEDULES
from apps.basic.parser import parse
from apps.basic.schedule import ScheduleError, to_cron

# Variables read from the host (Host.context()) when the script has not set them.
PSEUDO_VARIABLES = ("user", "session", "bot")

Op = Callable[..., int]
Ev = Callable[..., object]

# Sentinel "next pc" values returned by instructions to the VM loop.
SUSPEND = -1
HALT = -2
RELOAD = -3
RETURN = -4

# Built-ins used as statements that mean "update the first argument": `APPEND list, x`.
_MUTATORS = frozenset({"APPEND", "PUSH", "ARRAY_PUSH", "PREPEND", "UNSHIFT", "SORT", "SORT_ASC", "SORT_DESC",
                       "REVERSE", "UNIQUE", "DISTINCT", "CONCAT", "FLATTEN", "SPLICE"})

_PARAM_TYPES = {"integer": "integer", "int": "integer", "number": "integer", "float": "number",
                "double": "number", "decimal": "number", "boolean": "boolean", "bool": "boolean",
                "array": "array", "list": "array", "object": "object", "map": "object"}


@dataclass
class Unit:
    """One code unit: the main script, a SUB/FUNCTION or an event handler."""

    name: str
    params: list[str]
    ops: list[Op] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    hears: dict[int, dict] = field(default_factory=dict)
    is_function: bool = False


@dataclass
class Program:
    source_hash: str
    units: dict[str, Unit]
    metadata: dict

    @property
    def main(self) -> Unit:
        return self.units["main"]


class _Label:
    __slots__ = ("pc",)

    def __init__(self) -> None:
        self.pc = -1


class Compiler:
    def __init__(self, stmts: list[n.Stmt], source_hash: str, name: str) -> None:
        self.stmts = stmts
        self.meta: dict = {"name": name, "description": "", "params": [], "schedules": [], "kbs": [],
                           "tools": [], "websites": [], "webhooks": [], "tables": [], "triggers": [],
                           "handlers": [], "uses_hear": False, "warnings": []}
        self.source_hash = source_hash
        self.procs: dict[str, n.Proc] = {}
        self.units: dict[str, Unit] = {}
        self.slot_counter = 0
        self.block_counter = 0
        self.label_lines: dict[str, int] = {}
        self.schedule_repeats: set[int] = set()  # lines of schedules already warned about as repeated

    # -- entry --------------------------------------------------------------------------------
    def compile(self) -> Program:
        main_body: list[n.Stmt] = []
        handlers = self.handlers = []
        # spec 3.6: ENUM values become suggestion buttons right after the DESCRIPTION line
        self.enum_values = [v for s in self.stmts if isinstance(s, n.Meta) and s.kind == "PARAM"
                            for v in (s.data.get("enum") or [])]
        for s in self.stmts:
            if isinstance(s, n.Proc):
                if s.name in self.procs:
                    raise CompileError(f"{s.name} is defined twice", s.line, s.col)
                self.procs[s.name] = s
            elif isinstance(s, n.Handler):
                handlers.append(s)
            else:
                main_body.append(s)
        self.compile_unit("main", [], main_body, False)
        for p in self.procs.values():
            self.compile_unit(p.name, p.params, p.body, p.is_function)
        k = 0
        while k < len(handlers):  # handlers may register more handlers while compiling
            h = handlers[k]
            name = f"on:{k}"
            k += 1
            self.meta["handlers"].append({"unit": name, "trigger": h.trigger, "line": h.line,
                                          "args": [_const_or_none(a) for a in h.args]})
            self.compile_unit(name, [], h.body, False)
        self.meta["tool"] = tool_schema(self.meta)
        return Program(self.source_hash, self.units, self.meta)

    def compile_unit(self, name: str, params: list[str], body: list[n.Stmt], is_function: bool) -> None:
        unit = Unit(name, params, is_function=is_function)
        self.units[name] = unit
        self.unit = unit
        self.code: list[tuple] = []  # (kind, line, payload) before linking
        self.labels: dict[str, _Label] = {}
        self.loops: list[tuple[str, _Label]] = []
        # FOR / FOR EACH / SELECT blocks open around the statement being compiled: their header keeps the
        # loop's state in a hidden slot, so a jump into their body from outside is refused (see below).
        self.slot_blocks: list[int] = []
        self.label_blocks: dict[str, tuple[int, ...]] = {}
        self.jumps_in: list[tuple[str, tuple[int, ...], int, int, str]] = []
        self.block(body)
        self.check_jumps_into_blocks()
        end_line = body[-1].line if body else 1
        if name == "main" or name.startswith("on:"):
            self.emit_halt(end_line)
        else:
            self.emit(end_line, lambda nxt: _return_none)  # falling off a SUB returns nothing
        for lname, lab in self.labels.items():
            if lab.pc < 0:
                raise CompileError(f"label '{lname}' is not defined", self.label_lines.get(lname, 1), 1)
        self.link(unit)

    def check_jumps_into_blocks(self) -> None:
        """GOTO (or RESUME) to a label inside a FOR, FOR EACH or SELECT block the jump is not in: the body
        would run without its header (the loop's limit, items or the SELECT value) and fail at NEXT."""
        for name, at, line, col, word in self.jumps_in:
            inside = self.label_blocks.get(name, ())
            if at[:len(inside)] != inside:
                raise CompileError(f"{word} {name} jumps into a FOR/FOR EACH/SELECT block (label on line "
                                   f"{self.label_lines.get(name, line)}); jump to a label outside it", line, col)

    def open_slot_block(self) -> None:
        # Its own counter: slot names (#1, #2...) are saved in suspended dialogs' state and must stay the
        # names the same script compiled to before (a dialog waiting inside a loop across an upgrade).
        self.block_counter += 1
        self.slot_blocks.append(self.block_counter)

    def note_jump(self, name: str, line: int, col: int, word: str) -> None:
        self.jumps_in.append((name, tuple(self.slot_blocks), line, col, word))

    # -- emission -----------------------------------------------------------------------------
    def here(self) -> int:
        return len(self.code)

    def emit(self, line: int, factory: Callable[[int], Op]) -> int:
        """Queue an instruction; `factory(next_pc)` builds the closure once positions are known."""
        self.code.append((line, factory))
        return len(self.code) - 1

    def mark(self, lab: _Label) -> None:
        lab.pc = self.here()

    def emit_halt(self, line: int) -> None:
        self.emit(line, lambda nxt: _halt)

    def link(self, unit: Unit) -> None:
        for pc, (line, factory) in enumerate(self.code):
            unit.ops.append(factory(pc + 1))
            unit.lines.append(line)

    def new_slot(self) -> str:
        self.slot_counter += 1
        return f"#{self.slot_counter}"

    def label(self, name: str, line: int) -> _Label:
        if name not in self.labels:
            self.labels[name] = _Label()
            self.label_lines[name] = line
        return self.labels[name]

    # -- statements ---------------------------------------------------------------------------
    def block(self, body: list[n.Stmt]) -> None:
        for s in body:
            method = getattr(self, "s_" + type(s).__name__)
            try:
                method(s)
            except RecursionError:  # the innermost statement reports it, with its own line
                raise CompileError("script is nested too deeply", s.line, s.col) from None

    def s_Nop(self, s: n.Nop) -> None:
        pass

    def s_Handler(self, s: n.Handler) -> None:
        self.handlers.append(s)  # compiled as its own unit; registering it has no runtime effect

    def s_Proc(self, s: n.Proc) -> None:
        raise CompileError(f"{s.name} must be defined at the top level, not inside a block", s.line, s.col)

    def s_Assign(self, s: n.Assign) -> None:
        value = s.value
        if isinstance(value, n.Call) and value.name in self.procs:
            self.call_proc(s, value.name, value.args, s.target)
            return
        if isinstance(value, n.Call) and value.name == "$call":
            stmt = value.args[0].value  # type: ignore[attr-defined]
            self.s_CallUser(n.CallUser(stmt.line, stmt.col, stmt.name, stmt.args, s.target, stmt.quoted, True))
            return
        ev = self.expr(value)
        store = self.assigner(s.target)
        if isinstance(s.target, n.Var):
            name = s.target.name

            def factory(nxt: int) -> Op:
                def op(vm: object) -> int:
                    d = vm.vars  # type: ignore[attr-defined]
                    if name not in d and d is not vm.globals and name in vm.globals:  # type: ignore[attr-defined]
                        d = vm.globals  # type: ignore[attr-defined]
                    d[name] = ev(vm)
                    return nxt
                return op
            self.emit(s.line, factory)
            return

        def factory2(nxt: int) -> Op:
            def op(vm: object) -> int:
                store(vm, ev(vm))
                return nxt
            return op
        self.emit(s.line, factory2)

    def assigner(self, target: n.Expr) -> Callable[[object, object], None]:
        if isinstance(target, n.Var):
            name = target.name

            def store_var(vm: object, value: object) -> None:
                d = vm.vars  # type: ignore[attr-defined]
                if name not in d and d is not vm.globals and name in vm.globals:  # type: ignore[attr-defined]
                    d = vm.globals  # type: ignore[attr-defined]
                d[name] = value
            return store_var
        if isinstance(target, n.Member):
            obj = self.container(target.obj)
            mname = target.name

            def store_member(vm: object, value: object) -> None:
                V.set_member(obj(vm), mname, value)
            return store_member
        if isinstance(target, n.Index):
            obj = self.container(target.obj)
            idx = self.expr(target.index)

            def store_index(vm: object, value: object) -> None:
                V.set_index(obj(vm), idx(vm), value)
            return store_index
        raise CompileError("cannot assign to this expression", target.line, target.col)

    def container(self, e: n.Expr) -> Ev:
        """Like expr(), but a null variable/field becomes an empty map so `a.b.c = 1` works."""
        if isinstance(e, n.Var) and e.name in PSEUDO_VARIABLES:
            return self.pseudo_container(e.name)
        if isinstance(e, n.Var):
            read = self.expr(e)
            store = self.assigner(e)

            def get_var(vm: object) -> object:
                value = read(vm)
                if value is None:
                    value = {}
                    store(vm, value)
                return value
            return get_var
        if isinstance(e, n.Member):
            parent = self.container(e.obj)
            name = e.name

            def get_member(vm: object) -> object:
                p = parent(vm)
                value = V.get_member(p, name)
                if value is None:
                    value = {}
                    V.set_member(p, name, value)
                return value
            return get_member
        return self.expr(e)

    def pseudo_container(self, name: str) -> Ev:
        """`user.score = 5`: USER/SESSION/BOT come from the host on every read, so a field written on them was
        lost. The first write makes the script's own copy (a global, saved with the state); the host's user
        is not changed."""
        def get_pseudo(vm: object) -> object:
            for d in (vm.vars, vm.globals):  # type: ignore[attr-defined]
                if name in d:
                    if d[name] is None:
                        d[name] = {}
                    return d[name]
            value = copy.deepcopy(vm.read_missing(name))  # type: ignore[attr-defined]
            if value is None:
                value = {}
            vm.globals[name] = value  # type: ignore[attr-defined]
            return value
        return get_pseudo

    def s_ExprStmt(self, s: n.ExprStmt) -> None:
        e = s.expr
        if isinstance(e, n.Call) and e.name in self.procs:
            self.call_proc(s, e.name, e.args, None)
            return
        if isinstance(e, n.Call) and e.name.upper() in _MUTATORS and e.args and _is_lvalue(e.args[0]) \
                and e.name not in self.procs:
            self.s_Assign(n.Assign(s.line, s.col, e.args[0], e))
            return
        ev = self.expr(e)

        def factory(nxt: int) -> Op:
            def op(vm: object) -> int:
                ev(vm)
                return nxt
            return op
        self.emit(s.line, factory)

    def s_CallUser(self, s: n.CallUser) -> None:
        name = s.name
        if not s.quoted and name in self.procs:
            self.call_proc(s, name, s.args, s.target)
            return
        if not s.quoted and name.upper() in BUILTINS:
            call = n.Call(s.line, s.col, name, s.args)
            if s.target is not None:
                self.s_Assign(n.Assign(s.line, s.col, s.target, call))
            else:
                self.s_ExprStmt(n.ExprStmt(s.line, s.col, call))
            return
        if not s.quoted and name.upper() in KEYWORDS:
            kw = n.KwCall(s.line, s.col, name.upper(), s.args, {})
            if s.target is not None:
                self.s_Assign(n.Assign(s.line, s.col, s.target, kw))
            else:
                self.s_ExprStmt(n.ExprStmt(s.line, s.col, kw))
            return
        if not s.quoted and not self.is_call_statement(s):
            raise CompileError(f"unknown keyword or procedure '{name.upper()}'", s.line, s.col)
        # CALL "script" / CALL name (not defined here): another script of the bot, through the host.
        args = [self.expr(a) for a in s.args]
        store = self.assigner(s.target) if s.target is not None else None
        line = s.line

        def factory(nxt: int) -> Op:
            def op(vm: object) -> int:
                result = vm.call_script(name, [a(vm) for a in args], line)  # type: ignore[attr-defined]
                if store is not None:
                    store(vm, result)
                return nxt
            return op
        self.emit(s.line, factory)

    def is_call_statement(self, s: n.CallUser) -> bool:
        return s.explicit or s.target is not None or s.quoted

    def call_proc(self, s: n.Stmt, name: str, arg_exprs: list[n.Expr], target: n.Expr | None) -> None:
        proc = self.procs[name]
        if len(arg_exprs) > len(proc.params):
            raise CompileError(f"{name} takes {len(proc.params)} arguments, got {len(arg_exprs)}", s.line, s.col)
        args = [self.expr(a) for a in arg_exprs]
        params = proc.params
        want = target is not None

        def factory(nxt: int) -> Op:
            def op(vm: object) -> int:
                vm.push_frame(name, params, [a(vm) for a in args], nxt, want)  # type: ignore[attr-defined]
                return RELOAD
            return op
        self.emit(s.line, factory)
        if target is not None:
            store = self.assigner(target)

            def factory2(nxt: int) -> Op:
                def op(vm: object) -> int:
                    store(vm, vm.vars.pop("#ret", None))  # type: ignore[attr-defined]
                    return nxt
                return op
            self.emit(s.line, factory2)

    def s_If(self, s: n.If) -> None:
        end = _Label()
        for cond, body in s.branches:
            nxt_branch = _Label()
            self.jump_if_false(cond, nxt_branch)
            self.block(body)
            self.jump(end, cond.line)
            self.mark(nxt_branch)
        if s.orelse:
            self.block(s.orelse)
        self.mark(end)

    def jump(self, lab: _Label, line: int) -> None:
        self.emit(line, lambda nxt: _jump_to(lab))

    def jump_if_false(self, cond: n.Expr, lab: _Label, negate: bool = False) -> None:
        ev = self.expr(cond)
        truthy = V.is_truthy

        def factory(nxt: int) -> Op:
            target = lab.pc
            if negate:
                def op_neg(vm: object) -> int:
                    v = ev(vm)
                    if v is True:
                        return target
                    if v is False:
                        return nxt
                    return target if truthy(v) else nxt
                return op_neg

            def op(vm: object) -> int:
                v = ev(vm)
                if v is True:
                    return nxt
                if v is False:
                    return target
                return nxt if truthy(v) else target
            return op
        self.emit(cond.line, factory)

    def s_ForEach(self, s: n.ForEach) -> None:
        slot = self.new_slot()
        items = self.expr(s.iterable)
        var = s.var
        end, cleanup = _Label(), _Label()
        line = s.line

        def init(nxt: int) -> Op:
            def op(vm: object) -> int:
                seq = items(vm)
                if seq is None:
                    seq = []
                elif isinstance(seq, dict):
                    seq = [seq]  # a single record (FIND used as a record) iterates once
                elif isinstance(seq, str):
                    seq = [seq] if seq else []
                elif not isinstance(seq, list):
                    raise BasicRuntimeError(f"FOR EACH needs an array, not {V.describe(seq)}", line)
                meter.charge_items(len(seq))  # copied (and counted in the run's memory while the loop runs)
                vm.vars[slot] = [list(seq), 0]  # type: ignore[attr-defined]
                return nxt
            return _skips_block_on_error(op, end)
        self.emit(s.line, init)
        top = self.here()

        def step(nxt: int) -> Op:
            def op(vm: object) -> int:
                d = vm.vars  # type: ignore[attr-defined]
                state = d.get(slot)
                if state is None:
                    raise _headless("NEXT", line)
                i = state[1]
                if i >= len(state[0]):
                    return cleanup.pc
                d[var] = state[0][i]
                state[1] = i + 1
                return nxt
            return op
        self.emit(s.line, step)
        self.loops.append(("FOR", cleanup))
        self.open_slot_block()
        self.block(s.body)
        self.slot_blocks.pop()
        self.loops.pop()
        self.emit(s.line, lambda nxt: _const_jump(top))
        self.mark(cleanup)

        def clean(nxt: int) -> Op:
            def op(vm: object) -> int:
                vm.vars.pop(slot, None)  # type: ignore[attr-defined]
                return nxt
            return op
        self.emit(s.line, clean)
        self.mark(end)

    def s_ForTo(self, s: n.ForTo) -> None:
        slot = self.new_slot()
        start, stop = self.expr(s.start), self.expr(s.stop)
        step_ev = self.expr(s.step) if s.step is not None else None
        var = s.var
        body_lab, cleanup, after = _Label(), _Label(), _Label()
        line = s.line

        def init(nxt: int) -> Op:
            def op(vm: object) -> int:
                d = vm.vars  # type: ignore[attr-defined]
                first = V.as_number(start(vm), "FOR")
                last = V.as_number(stop(vm), "TO")
                st = V.as_number(step_ev(vm), "STEP") if step_ev is not None else 1
                if st == 0:
                    raise BasicRuntimeError("FOR ... STEP 0 would never end")
                d[var] = first
                d[slot] = [last, st]
                if (st > 0 and first > last) or (st < 0 and first < last):
                    return cleanup.pc
                return nxt
            return _skips_block_on_error(op, after)
        self.emit(s.line, init)
        self.mark(body_lab)
        self.loops.append(("FOR", cleanup))
        self.open_slot_block()
        self.block(s.body)
        self.slot_blocks.pop()
        self.loops.pop()

        def nxt_op(nxt: int) -> Op:
            target = body_lab.pc

            def op(vm: object) -> int:
                d = vm.vars  # type: ignore[attr-defined]
                bounds = d.get(slot)
                if bounds is None:
                    raise _headless("NEXT", line)
                lim, st = bounds
                i = d[var]
                if type(i) is not int and type(i) is not float:
                    i = V.as_number(i, "FOR")
                i += st
                d[var] = i
                if (i <= lim) if st > 0 else (i >= lim):
                    return target
                return nxt
            return op
        self.emit(s.line, nxt_op)
        self.mark(cleanup)

        def clean(nxt: int) -> Op:
            def op(vm: object) -> int:
                vm.vars.pop(slot, None)  # type: ignore[attr-defined]
                return nxt
            return op
        self.emit(s.line, clean)
        self.mark(after)

    def s_Loop(self, s: n.Loop) -> None:
        end = _Label()
        top = _Label()
        test = _Label()
        if s.cond is None:  # DO ... LOOP: only EXIT DO leaves it
            self.mark(top)
            self.loops.append((s.kind, end))
            self.block(s.body)
            self.loops.pop()
            self.jump(top, s.line)
            self.mark(end)
            return
        if not s.post:
            self.jump(test, s.line)  # test at the bottom: one instruction per iteration
        self.mark(top)
        self.loops.append((s.kind, end))
        self.block(s.body)
        self.loops.pop()
        self.mark(test)
        ev = self.expr(s.cond)
        truthy = V.is_truthy
        until = s.until

        def factory(nxt: int) -> Op:
            target = top.pc

            def op(vm: object) -> int:
                v = ev(vm)
                ok = v if type(v) is bool else truthy(v)
                return target if ok is not until else nxt
            return op
        self.emit(s.cond.line, factory)
        self.mark(end)

    def s_Select(self, s: n.Select) -> None:
        slot = self.new_slot()
        subject = self.expr(s.subject)

        end = _Label()

        def init(nxt: int) -> Op:
            def op(vm: object) -> int:
                vm.vars[slot] = subject(vm)  # type: ignore[attr-defined]
                return nxt
            return _skips_block_on_error(op, end)
        self.emit(s.line, init)
        self.loops.append(("SELECT", end))
        self.open_slot_block()
        for case in s.cases:
            nxt_case = _Label()
            tests = [self.case_test(slot, t) for t in case.tests]

            def test_ev(vm: object, tests: list = tests) -> bool:
                return any(t(vm) for t in tests)
            line = case.body[0].line if case.body else s.line
            self.emit(line, lambda nxt, ev=test_ev, lab=nxt_case: _branch(ev, lab, nxt))
            self.block(case.body)
            self.jump(end, line)
            self.mark(nxt_case)
        if s.orelse:
            self.block(s.orelse)
        self.slot_blocks.pop()
        self.loops.pop()
        self.mark(end)

        def clean(nxt: int) -> Op:
            def op(vm: object) -> int:
                vm.vars.pop(slot, None)  # type: ignore[attr-defined]
                return nxt
            return op
        self.emit(s.line, clean)

    def case_test(self, slot: str, test: tuple) -> Callable[[object], bool]:
        def subject(vm: object) -> object:
            try:
                return vm.vars[slot]  # type: ignore[attr-defined]
            except KeyError:
                raise _headless("CASE", 0) from None

        if test[0] == "eq":
            ev = self.expr(test[1])
            return lambda vm: V.equals(subject(vm), ev(vm))
        if test[0] == "range":
            lo, hi = self.expr(test[1]), self.expr(test[2])
            return _lenient(lambda vm: V.less_eq(lo(vm), subject(vm)) and V.less_eq(subject(vm), hi(vm)))
        op, ev = test[1], self.expr(test[2])
        fn = _COMPARE[op]
        return _lenient(lambda vm: fn(subject(vm), ev(vm)))

    def s_Exit(self, s: n.Exit) -> None:
        if s.what in ("SUB", "FUNCTION", "SCRIPT"):
            if s.what != "SCRIPT" and self.unit.name == "main":
                raise CompileError(f"EXIT {s.what} outside a {s.what}", s.line, s.col)
            self.emit(s.line, lambda nxt: _return_none)
            return
        wanted = {"FOR": ("FOR",), "DO": ("DO", "WHILE"), "WHILE": ("WHILE", "DO"), "SELECT": ("SELECT",)}[s.what]
        for kind, lab in reversed(self.loops):
            if kind in wanted:
                self.jump(lab, s.line)
                return
        raise CompileError(f"EXIT {s.what} outside a {s.what} block", s.line, s.col)

    def s_Return(self, s: n.Return) -> None:
        if s.value is None:
            self.emit(s.line, lambda nxt: _return_none)
            return
        ev = self.expr(s.value)

        def factory(nxt: int) -> Op:
            def op(vm: object) -> int:
                vm.return_value = ev(vm)  # type: ignore[attr-defined]
                return RETURN
            return op
        self.emit(s.line, factory)

    def s_End(self, s: n.End) -> None:
        self.emit(s.line, lambda nxt: _halt)

    def s_Goto(self, s: n.Goto) -> None:
        self.note_jump(s.label, s.line, s.col, "GOTO")
        self.jump(self.label(s.label, s.line), s.line)

    def s_Label(self, s: n.Label) -> None:
        lab = self.label(s.name, s.line)
        if lab.pc >= 0:
            raise CompileError(f"label '{s.name}' is defined twice", s.line, s.col)
        self.label_blocks[s.name] = tuple(self.slot_blocks)
        self.mark(lab)

    def s_OnError(self, s: n.OnError) -> None:
        mode = s.mode
        lab = self.label(s.label, s.line) if s.label else None

        def factory(nxt: int) -> Op:
            def op(vm: object) -> int:
                vm.set_error_mode(mode, lab.pc if lab is not None else None)  # type: ignore[attr-defined]
                return nxt
            return op
        self.emit(s.line, factory)

    def s_Resume(self, s: n.Resume) -> None:
        kind = s.target if s.target in (None, "NEXT") else "LABEL"
        lab = self.label(s.target, s.line) if kind == "LABEL" else None  # type: ignore[arg-type]
        if kind == "LABEL":
            self.note_jump(s.target, s.line, s.col, "RESUME")  # type: ignore[arg-type]
        line = s.line

        def factory(nxt: int) -> Op:
            def op(vm: object) -> int:
                return vm.resume_after_error(kind, lab.pc if lab is not None else None, line)  # type: ignore[attr-defined]
            return op
        self.emit(s.line, factory)

    def s_Try(self, s: n.Try) -> None:
        handler, end, body_end = _Label(), _Label(), _Label()
        var = s.var
        start = self.here()

        def push(nxt: int) -> Op:
            def op(vm: object) -> int:
                # [catch pc, variable, body from, body to]: EXIT FOR or GOTO can leave the body without
                # reaching the pop below, so the VM only uses an entry while the failing pc is in its body.
                stack = vm.frame.setdefault("try", [])  # type: ignore[attr-defined]
                for k, entry in enumerate(stack):
                    if entry[0] == handler.pc:  # this TRY entered again (a loop): the old entry is stale
                        del stack[k:]
                        break
                stack.append([handler.pc, var, start, body_end.pc])
                return nxt
            return op
        self.emit(s.line, push)
        self.block(s.body)
        self.mark(body_end)

        def pop(nxt: int) -> Op:
            def op(vm: object) -> int:
                stack = vm.frame.get("try")  # type: ignore[attr-defined]
                if stack:
                    stack.pop()
                return end.pc
            return op
        self.emit(s.line, pop)
        self.mark(handler)
        self.block(s.handler)
        self.mark(end)

    def s_Throw(self, s: n.Throw) -> None:
        ev = self.expr(s.value)
        line = s.line

        def factory(nxt: int) -> Op:
            def op(vm: object) -> int:
                raise BasicRuntimeError(V.value_to_text(ev(vm)), line)
            return op
        self.emit(s.line, factory)

    def s_Hear(self, s: n.Hear) -> None:
        self.meta["uses_hear"] = True
        pc = self.here()
        if isinstance(s.options, list):
            opts = [self.expr(o) for o in s.options]

            def options_ev(vm: object) -> object:
                return [o(vm) for o in opts]
        elif s.options is not None:
            options_ev = self.expr(s.options)
        else:
            options_ev = None
        spec = {
            "kind": s.kind, "options": options_ev, "store": self.assigner(s.target),
            "prompt": self.expr(s.prompt) if s.prompt is not None else None,
            "default": self.expr(s.default) if s.default is not None else None,
        }
        self.unit.hears[pc] = spec

        def factory(nxt: int) -> Op:
            def op(vm: object) -> int:
                return vm.start_hear(pc, spec)  # type: ignore[attr-defined]
            return op
        self.emit(s.line, factory)

    def s_Wait(self, s: n.Wait) -> None:
        ev = self.expr(s.seconds)

        def factory(nxt: int) -> Op:
            def op(vm: object) -> int:
                return vm.start_wait(ev(vm), nxt)  # type: ignore[attr-defined]
            return op
        self.emit(s.line, factory)

    def s_With(self, s: n.With) -> None:
        target = self.container(s.target)
        store = self.assigner(s.target)

        def factory(nxt: int) -> Op:
            def op(vm: object) -> int:
                value = target(vm)
                if not isinstance(value, dict):
                    store(vm, {})
                return nxt
            return op
        self.emit(s.line, factory)
        self.block(s.body)

    def s_Block(self, s: n.Block) -> None:
        lines = [self.expr(x) for x in s.lines]
        text = V.value_to_text
        if s.kind == "TALK":
            def talk_block(vm: object) -> object:
                return vm.keyword("TALK", ["\n".join(text(x(vm)) for x in lines)], {})  # type: ignore[attr-defined]
            self.emit(s.line, lambda nxt: _effect(talk_block, nxt))
        elif s.kind == "SYSTEM PROMPT":
            def prompt_block(vm: object) -> object:
                return vm.keyword("SYSTEM PROMPT", ["\n".join(text(x(vm)) for x in lines)], {})  # type: ignore[attr-defined]
            self.emit(s.line, lambda nxt: _effect(prompt_block, nxt))
        else:
            to = self.expr(s.header) if s.header is not None else None

            def mail_block(vm: object) -> object:
                body = [text(x(vm)) for x in lines]
                subject = ""
                if body and body[0].strip().lower().startswith("subject:"):
                    subject = body.pop(0).strip()[len("subject:"):].strip()
                    while body and not body[0].strip():
                        body.pop(0)
                return vm.keyword("SEND MAIL", [to(vm) if to else "", subject, "\n".join(body)], {})  # type: ignore[attr-defined]
            self.emit(s.line, lambda nxt: _effect(mail_block, nxt))

    def s_Schedule(self, s: n.Schedule) -> None:
        first = s.args[0]
        if len(s.args) == 1 and isinstance(first, n.Lit) and isinstance(first.value, str):
            try:
                cron = to_cron(first.value)
            except ScheduleError as exc:
                raise CompileError(str(exc), s.line, s.col) from None
            same = next((item for item in self.meta["schedules"] if item["cron"] == cron), None)
            if same is not None:  # the same cron twice would run the script twice each time: it runs once
                if same["line"] not in self.schedule_repeats:
                    self.schedule_repeats.add(same["line"])
                    self.meta["warnings"].append({"line": s.line, "message": (
                        f"SET SCHEDULE repeats the schedule of line {same['line']} ({cron}); the script runs once")})
                return
            if len(self.meta["schedules"]) >= MAX_SCHEDULES:
                raise CompileError(f"too many schedules: a script may have at most {MAX_SCHEDULES} different "
                                   f"SET SCHEDULE times (MAX_SCHEDULES)", s.line, s.col)
            self.meta["schedules"].append({"expression": first.value, "cron": cron, "line": s.line})
            return  # compile-time only (spec 3.8): the line is not part of the run
        self.s_ExprStmt(n.ExprStmt(s.line, s.col, n.KwCall(s.line, s.col, "SET SCHEDULE", s.args, {})))

    def s_Meta(self, s: n.Meta) -> None:
        d = s.data
        if s.kind == "PARAM":
            if any(p["name"] == d["name"] for p in self.meta["params"]):
                # several upstream files declare the same PARAM for different tools; first one wins
                self.meta["warnings"].append({"line": s.line, "message": f"PARAM {d['name']} is declared twice"})
            else:
                self.meta["params"].append(d)
        elif s.kind == "DESCRIPTION":
            self.meta["description"] = d["text"]
            for value in self.enum_values:
                text = V.value_to_text(value)
                self.emit(s.line, lambda nxt, t=text: _effect(
                    lambda vm: vm.host.add_suggestion("text", t, t), nxt))
            self.enum_values = []
        elif s.kind == "TABLE":
            self.meta["tables"].append({"definition": d["header"], "columns": d["columns"], "line": s.line})
        elif s.kind == "WEBHOOK":
            self.meta["webhooks"].append(d["name"])
        elif s.kind == "ON":
            self.meta["triggers"].append({"trigger": d["trigger"], "line": s.line,
                                          "args": [_const_or_none(a) for a in d["args"]]})
        elif s.kind == "INDEX":
            self.meta["tables"].append({"index": d["sql"], "line": s.line})

    # -- expressions --------------------------------------------------------------------------
    def expr(self, e: n.Expr) -> Ev:
        return getattr(self, "e_" + type(e).__name__)(e)

    def e_Lit(self, e: n.Lit) -> Ev:
        value = e.value
        return lambda vm: value

    def e_Interp(self, e: n.Interp) -> Ev:
        parts = [(p if isinstance(p, str) else self.expr(p)) for p in e.parts]  # type: ignore[arg-type]
        join = V.join_text  # refuses as soon as the pieces pass the string limit, not after joining them all

        def ev(vm: object) -> object:
            return join(p if type(p) is str else p(vm) for p in parts)  # type: ignore[operator]
        return ev

    def e_Var(self, e: n.Var) -> Ev:
        name = e.name

        def ev(vm: object) -> object:
            try:
                return vm.vars[name]  # type: ignore[attr-defined]
            except KeyError:
                return vm.read_missing(name)  # type: ignore[attr-defined]
        return ev

    def e_Member(self, e: n.Member) -> Ev:
        name = e.name
        if isinstance(e.obj, n.Var) and e.obj.name == "err":  # ERR is a number; ERR.description etc. read the error
            return lambda vm: vm.err_member(name)  # type: ignore[attr-defined]
        obj = self.expr(e.obj)
        get = V.get_member

        def ev(vm: object) -> object:
            o = obj(vm)
            if type(o) is dict and name in o:
                return o[name]
            return get(o, name)
        return ev

    def e_Index(self, e: n.Index) -> Ev:
        obj, idx = self.expr(e.obj), self.expr(e.index)
        get = V.get_index
        return lambda vm: get(obj(vm), idx(vm))

    def e_ArrayLit(self, e: n.ArrayLit) -> Ev:
        items = [self.expr(x) for x in e.items]
        return lambda vm: [x(vm) for x in items]

    def e_MapLit(self, e: n.MapLit) -> Ev:
        pairs = [(k, self.expr(v)) for k, v in e.pairs]
        return lambda vm: {k: v(vm) for k, v in pairs}

    def e_Unary(self, e: n.Unary) -> Ev:
        x = self.expr(e.operand)
        if e.op == "NOT":
            truthy = V.is_truthy
            return lambda vm: not truthy(x(vm))
        neg = V.neg
        return lambda vm: neg(x(vm))

    def e_Binary(self, e: n.Binary) -> Ev:
        if isinstance(e.left, n.Binary) and isinstance(e.left.left, n.Binary):
            links = _left_spine(e)
            if len(links) >= _CHAIN_MIN_LINKS:
                return self.binary_chain(links)
        op = e.op
        left, right = self.expr(e.left), self.expr(e.right)
        truthy = V.is_truthy
        if op == "AND":
            return lambda vm: truthy(left(vm)) and truthy(right(vm))
        if op == "OR":
            return lambda vm: truthy(left(vm)) or truthy(right(vm))
        if op == "XOR":
            return lambda vm: truthy(left(vm)) != truthy(right(vm))
        if op == "??":
            def coalesce(vm: object) -> object:
                v = left(vm)
                return right(vm) if v is None else v
            return coalesce
        const = e.right.value if isinstance(e.right, n.Lit) else _NO_CONST
        if op == "+":
            add, int_bound = V.add, V.INT_BOUND
            if type(const) is int:
                def add_const(vm: object) -> object:
                    a = left(vm)
                    if type(a) is int:
                        r = a + const  # type: ignore[operator]
                        return r if -int_bound < r < int_bound else add(a, const)
                    return add(a, const)
                return add_const

            def add_ev(vm: object) -> object:
                a, b = left(vm), right(vm)
                if type(a) is int and type(b) is int:
                    r = a + b
                    return r if -int_bound < r < int_bound else add(a, b)
                return add(a, b)
            return add_ev
        if op in ("<", "<=", ">", ">=") and (type(const) is int or type(const) is float):
            fn = _COMPARE[op]
            pyop = _PYCMP[op]

            def cmp_const(vm: object) -> object:
                a = left(vm)
                if type(a) is int or type(a) is float:
                    return pyop(a, const)
                return fn(a, const)
            return cmp_const
        if op in ("<", "<=", ">", ">="):
            fn = _COMPARE[op]
            pyop = _PYCMP[op]

            def cmp_ev(vm: object) -> object:
                a, b = left(vm), right(vm)
                if type(a) is int and type(b) is int:
                    return pyop(a, b)
                return fn(a, b)
            return cmp_ev
        fn2 = _BINARY.get(op)
        if fn2 is None:
            raise CompileError(f"unknown operator {op}", e.line, e.col)
        return lambda vm: fn2(left(vm), right(vm))

    def binary_chain(self, links: list[n.Binary]) -> Ev:
        """A long left-to-right chain `t0 op1 t1 op2 t2 ...` (`links` outermost first) as one loop: each link
        is compiled by e_Binary with a left operand that reads the value so far, so every operator keeps its
        own rules and fast paths. The value so far is kept on the VM running the chain (`vm.chain_value`), never
        in the compiled program: a Program is shared by the threads of a process (apps/bots/runtime.py caches it),
        and a cell of the program let one run read another's intermediate value (another user's data). One slot
        per VM is enough: every link reads its left operand before evaluating its right one, so the slot is
        read before anything in the same run (a nested chain, a recursive FUNCTION call in a right operand)
        can reuse it."""
        base = self.expr(links[-1].left)
        held = _Held(links[-1].line, links[-1].col)
        steps = [self.e_Binary(n.Binary(link.line, link.col, link.op, held, link.right)) for link in reversed(links)]

        def chain(vm: object) -> object:
            value = base(vm)
            try:
                for step in steps:
                    vm.chain_value = value  # type: ignore[attr-defined]
                    value = step(vm)
            finally:
                vm.chain_value = None  # type: ignore[attr-defined]  # not keeping an intermediate value alive
            return value
        return chain

    def e__Held(self, e: _Held) -> Ev:
        return _read_chain_value

    def e_Call(self, e: n.Call) -> Ev:
        name = e.name
        up = name.upper()
        line = e.line
        args = [self.expr(a) for a in e.args]
        if up == "IF" and len(args) == 3 and "if" not in self.procs:
            name = "$iif"  # `IF(cond, a, b)` written inline in templates
        if up in ("FIRST", "LAST") and len(args) == 2 and name not in self.procs:
            up = "TAKE" if up == "FIRST" else "TAIL"  # FIRST(list, n) / LAST(list, n)
        if up == "JSON" and "json" not in self.procs:
            up = "TOJSON"
        if up == "JOIN" and len(args) == 3 and name not in self.procs:
            # `JOIN orders, customers, "customer_id"`: the join of two arrays of rows (spec 3.5.7), not JOIN(arr, sep)
            return self.e_KwCall(n.KwCall(e.line, e.col, "JOIN", e.args, {}))
        if name == "$iif":
            c, a, b = args
            truthy = V.is_truthy
            return lambda vm: a(vm) if truthy(c(vm)) else b(vm)
        if name in self.procs:
            proc = self.procs[name]
            if len(args) > len(proc.params):
                raise CompileError(f"{name} takes {len(proc.params)} arguments, got {len(args)}", e.line, e.col)
            params = proc.params
            shown = e.written or name
            return lambda vm: vm.call_nested(name, params, [a(vm) for a in args], line, shown)
        if up in BUILTINS:
            b = BUILTINS[up]
            if len(args) < b.min_args or (b.max_args is not None and len(args) > b.max_args):
                want = str(b.min_args) if b.max_args == b.min_args else (
                    f"{b.min_args} or more" if b.max_args is None else f"{b.min_args} to {b.max_args}")
                message = f"{up} takes {want} arguments, got {len(args)}"
                if not e.loose:
                    raise CompileError(message, e.line, e.col)
                self.meta["warnings"].append({"line": e.line, "message": message})

                def arity_error(vm: object) -> object:
                    raise BasicRuntimeError(message, line)
                return arity_error
            fn = b.fn
            if len(args) == 1:
                a0 = args[0]
                return lambda vm: fn(vm.ctx, a0(vm))
            if len(args) == 2:
                a0, a1 = args
                return lambda vm: fn(vm.ctx, a0(vm), a1(vm))
            return lambda vm: fn(vm.ctx, *[a(vm) for a in args])
        if up in KEYWORDS or up in PURE_KEYWORDS:
            return self.e_KwCall(n.KwCall(e.line, e.col, up, e.args, {}))
        if up in _VM_FUNCTIONS:
            vm_name = _VM_FUNCTIONS[up]
            return lambda vm: getattr(vm, vm_name)(*[a(vm) for a in args])
        # Upstream resolves functions when they are called (Rhai: "Function not found"), so a name that
        # is neither a builtin, a keyword nor a SUB/FUNCTION of this script compiles with a warning and
        # fails when (and only if) the call runs. Templates call helpers nobody defines (IS_ACTIVE,
        # DAYS, CSV) in branches that rarely run.
        message = f"unknown function {up}"
        self.meta["warnings"].append({"line": e.line, "message": message})

        def unknown_function(vm: object) -> object:
            raise BasicRuntimeError(message, line)
        return unknown_function

    def e_KwCall(self, e: n.KwCall) -> Ev:
        kw = e.keyword
        self.note_keyword(e)
        args = [self.expr(a) for a in e.args]
        opts = {k: (self.where_filter(v) if k == "WHERE" else self.expr(v)) for k, v in e.opts.items()}
        if kw == "SAVE":
            # positional SAVE (spec 3.5.7): each value's variable name picks its column (`save_row`)
            names = [a.name if isinstance(a, n.Var | n.Member) else None for a in e.args]
            if any(names):
                opts[SAVE_NAMES] = lambda vm: names
        return lambda vm: vm.keyword(kw, [a(vm) for a in args], {k: v(vm) for k, v in opts.items()})

    def where_filter(self, e: n.Expr) -> Ev:
        """`WHERE field = value` becomes the filter text "field=value" that FIND/UPDATE/DELETE take."""
        if isinstance(e, n.Binary) and e.op == "==" and isinstance(e.left, n.Var):
            field_name = e.left.name
            value = self.expr(e.right)
            return lambda vm: f"{field_name}={V.value_to_text(value(vm))}"
        return self.expr(e)

    def note_keyword(self, e: n.KwCall) -> None:
        """Record literal KB/tool/website names the script references (deploy-time metadata)."""
        first = e.args[0] if e.args else None
        value = first.value if isinstance(first, n.Lit) else None
        if not isinstance(value, str):
            return
        if e.keyword in ("USE KB", "USE_KB", "ADD KB", "ADD_KB"):
            _add_once(self.meta["kbs"], value)
        elif e.keyword in ("USE TOOL", "USE_TOOL", "ADD TOOL"):
            _add_once(self.meta["tools"], tool_name(value))
        elif e.keyword in ("USE WEBSITE", "USE_WEBSITE"):
            _add_once(self.meta["websites"], value)


def _add_once(items: list, value: object) -> None:
    if value not in items:
        items.append(value)


def tool_name(value: str) -> str:
    """`"bot.gbdialog/name.bas"` -> `"name"` (spec 3.5.4)."""
    name = value.strip().replace("\\", "/").rsplit("/", 1)[-1]
    return name[:-4] if name.lower().endswith(".bas") else name


# The option under which a SAVE passes the variable name of each argument (None for other expressions).
SAVE_NAMES = "#names"
# Left-to-right operator chains (`x = 1 + 1 + ... + 1`, `a & b & ...`) of at least this many operators compile
# to one loop (`Compiler.binary_chain`) instead of nested closures: compiling, and then running, one nested
# closure per operator ran out of Python stack at a few hundred terms ("script is nested too deeply").
_CHAIN_MIN_LINKS = 32


@dataclass(slots=True)
class _Held(n.Expr):
    """The left operand of one link of a compiled chain: the chain's value so far (`VM.chain_value`)."""


def _read_chain_value(vm: object) -> object:
    return vm.chain_value  # type: ignore[attr-defined]


def _left_spine(e: n.Binary) -> list[n.Binary]:
    """`e` and the binary operators down its left operands (outermost first)."""
    links = [e]
    while isinstance(links[-1].left, n.Binary):
        links.append(links[-1].left)  # type: ignore[arg-type]
    return links


def _is_lvalue(e: n.Expr) -> bool:
    return isinstance(e, n.Var | n.Member | n.Index)


def _const_or_none(e: n.Expr) -> object:
    return e.value if isinstance(e, n.Lit) else None


_NO_CONST = object()


def _gt(a: object, b: object) -> bool:
    return V.less(b, a)


def _ge(a: object, b: object) -> bool:
    return V.less_eq(b, a)


_COMPARE = {"<": V.less, "<=": V.less_eq, ">": _gt, ">=": _ge, "==": V.equals,
            "!=": lambda a, b: not V.equals(a, b)}
_PYCMP = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_BINARY: dict[str, Callable[[object, object], object]] = {
    "-": V.sub, "*": V.mul, "/": V.div, "\\": V.intdiv, "MOD": V.mod, "^": V.power, "&": V.concat,
    "==": V.equals, "!=": lambda a, b: not V.equals(a, b),
    "IN": lambda a, b: V.contains(b, a), "NOT IN": lambda a, b: not V.contains(b, a),
    "CONTAINS": V.contains, "LIKE": V.like,
    "STARTS WITH": lambda a, b: V.value_to_text(a).startswith(V.value_to_text(b)),
    "ENDS WITH": lambda a, b: V.value_to_text(a).endswith(V.value_to_text(b)),
}
# Functions the VM itself provides (they need run state, not just the builtin context).
_VM_FUNCTIONS = {"CLEAR_ERROR": "clear_error", "ISERROR": "is_error"}


class _HeadlessBlock(BasicRuntimeError):
    """NEXT or CASE reached without its FOR/SELECT header having run (not a non-match for _lenient)."""


def _headless(word: str, line: int) -> BasicRuntimeError:
    return _HeadlessBlock(f"{word} reached without its FOR/SELECT line having run (a jump into the block?)", line)


def _skips_block_on_error(op: Op, after: _Label) -> Op:
    """A FOR / FOR EACH / SELECT header that fails: ON ERROR RESUME NEXT (or RESUME NEXT) continues after
    the whole block, not inside a body whose header never ran (FOR EACH x IN 5 looped forever, SELECT
    CASE 1/0 ran the first CASE)."""
    def guarded(vm: object) -> int:
        try:
            return op(vm)
        except LimitExceeded:
            raise
        except Exception as exc:
            exc.resume_at = after.pc  # type: ignore[attr-defined]
            raise
    return guarded


def _lenient(test: Callable[[object], bool]) -> Callable[[object], bool]:
    """A CASE test on values of another type (text vs a number range) is a non-match, not an error. A limit
    error (a value too large, the budget or the clock) ends the run as everywhere else."""
    def run(vm: object) -> bool:
        try:
            return bool(test(vm))
        except (_HeadlessBlock, LimitExceeded):
            raise
        except BasicRuntimeError:
            return False
    return run


def _halt(vm: object) -> int:
    return HALT


def _return_none(vm: object) -> int:
    vm.return_value = None  # type: ignore[attr-defined]
    return RETURN


def _jump_to(lab: _Label) -> Op:
    target = lab.pc
    return lambda vm: target


def _const_jump(target: int) -> Op:
    return lambda vm: target


def _branch(test: Callable[[object], bool], lab: _Label, nxt: int) -> Op:
    target = lab.pc
    return lambda vm: nxt if test(vm) else target


def _effect(fn: Callable[[object], object], nxt: int) -> Op:
    def op(vm: object) -> int:
        fn(vm)
        return nxt
    return op


def tool_schema(meta: dict) -> dict:
    """The tool's function definition in OpenAI format (spec 3.6), honouring OPTIONAL/REQUIRED/ENUM."""
    properties: dict[str, dict] = {}
    required: list[str] = []
    for p in meta["params"]:
        raw_type = str(p.get("type") or "string").lower()
        prop: dict = {"type": _PARAM_TYPES.get(raw_type, "string"), "description": p.get("description") or ""}
        if raw_type == "date":
            prop["format"] = "date"
        elif raw_type == "datetime":
            prop["format"] = "date-time"
        if p.get("example") is not None:
            prop["example"] = p["example"]
        if p.get("enum"):
            prop["enum"] = p["enum"]
        if p.get("default") is not None:
            prop["default"] = p["default"]
        properties[p["name"]] = prop
        if p.get("required", True):
            required.append(p["name"])
    return {"type": "function", "function": {
        "name": meta["name"], "description": meta["description"],
        "parameters": {"type": "object", "properties": properties, "required": required}}}


def source_hash(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def compile_source(source: str, name: str = "script") -> Program:
    """Compile BASIC source; raises CompileError with line and column on any problem."""
    try:
        stmts = parse(source)
        return Compiler(stmts, source_hash(source), name).compile()
    except CompileError:
        raise
    except RecursionError:
        raise CompileError("script is nested too deeply", 1, 1) from None
