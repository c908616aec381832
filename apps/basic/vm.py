"""The VM: runs a compiled `Program` as a resumable machine whose whole state is plain JSON.

State = call frames (unit name, pc, variables, error-handling mode, TRY stack), the pending wait
(HEAR or WAIT), headers set by SET HEADER and output counters. `HEAR`/`WAIT` end the run slice with
status "waiting" and the state; `VM.resume(state, text)` in any process (after any restart)
recompiles the same source, checks the hash and continues exactly after the HEAR.

A run slice is bounded by the instruction budget and wall time of `apps.basic.limits`, and the run by the
memory its values hold (`apps.basic.memory`); exceeding any ends the run with an error that ON ERROR cannot trap.
"""

from __future__ import annotations

import json
import re
import sys
import time
from dataclasses import dataclass

from apps.basic import dataops, limits, memory, meter, ssrf
from apps.basic import values as V
from apps.basic.builtins import BUILTINS, BuiltinContext, BuiltinError, SystemContext, clipped_text, parse_json_text
from apps.basic.compiler import HALT, PSEUDO_VARIABLES, RELOAD, RETURN, SAVE_NAMES, SUSPEND, Program, tool_name
from apps.basic.errors import BasicRuntimeError, LimitExceeded, MemoryLimitExceeded, StateError, out_of_memory
from apps.basic.hear_types import HEAR_KINDS, SECRET_HEAR_KINDS, hear_validate
from apps.basic.host import Host, HostError, save_is_positional, save_row, table_columns_from_metadata
from apps.basic.keywords import KEYWORDS

STATE_VERSION = 1
# ERR / ERR_NUMBER after a run-time error (VB's generic "application-defined error" is 1 too; the
# engine's errors carry a message, not a VB code).
ERROR_NUMBER = 1
# Container levels of a saved state above a variable's value (state, frames, frame, vars): the script's
# values may nest MAX_VALUE_DEPTH levels below them.
_STATE_WRAPPING = 4


@dataclass
class RunResult:
    """Outcome of one run slice."""

    status: str  # "done", "waiting" or "error"
    value: object = None  # RETURN value when done
    error: dict | None = None  # {"line", "message"} when status is "error"
    state: dict | None = None  # JSON state when waiting
    waiting_for: str | None = None  # "hear" or "wait"
    wait_seconds: float = 0.0
    instructions: int = 0


class _Halt(Exception):
    """END (or a HALT) reached inside a nested function call."""


class VM:
    """Executes one program against one host. Create a VM per run slice (cheap)."""

    def __init__(self, program: Program, host: Host, *, ctx: BuiltinContext | None = None,
                 max_instructions: int = limits.MAX_INSTRUCTIONS,
                 max_seconds: float = limits.MAX_WALL_SECONDS,
                 max_memory: int | None = None) -> None:
        self.program = program
        self.units = program.units
        self.host = host
        self.ctx = ctx or SystemContext()
        self.max_instructions = max_instructions
        self.max_seconds = max_seconds
        # Bytes of values the run may hold (a CALLed script: at most its caller's); limits.MAX_HELD_BYTES when the
        # VM is made, unless given.
        self.max_memory = limits.MAX_HELD_BYTES if max_memory is None else max_memory
        self.gauge: memory.Gauge | None = None  # during a slice: what the run holds (apps/basic/memory.py)
        self.meter: meter.Meter | None = None
        self.frames: list[dict] = []
        self.waiting: dict | None = None
        self.headers: dict[str, str] = {}
        self.output_chars = 0
        self.message_count = 0
        self.return_value: object = None
        self.steps = 0
        self.charged = 0  # work units charged since the limits were last looked at (charge)
        self.work = 0  # work units charged in all (the budget error says when they, not a loop, used it up)
        self.last_error: BasicRuntimeError | None = None
        self.chain_value: object = None  # a long operator chain's value so far (compiler.Compiler.binary_chain)

    # -- public API ----------------------------------------------------------------------------
    def start(self, args: dict | None = None, entry: str = "main") -> RunResult:
        """Run from the first line; `args` pre-assigns tool parameters (case-insensitive names)."""
        if entry not in self.units:
            raise StateError(f"no code unit named {entry!r}")
        variables = {str(k).lower(): v for k, v in (args or {}).items()}
        self.frames = [{"unit": entry, "pc": 0, "vars": variables}]
        self._enter(self.frames[0])
        self.pc = 0
        return self._slice()

    def resume(self, state: dict, text: str | None = None) -> RunResult:
        """Continue a suspended run; `text` answers a pending HEAR (ignored for WAIT)."""
        self._load(state)
        # Output limits count per run slice (apps/basic/README.md): a long menu loop of TALK + HEAR must not
        # run out of output over a whole conversation.
        self.output_chars = self.message_count = 0
        waiting = self.waiting
        if waiting is None:
            raise StateError("this run is not waiting")
        self.waiting = None
        frame = self.frames[-1]
        self._enter(frame)
        if waiting["type"] == "wait":
            self.pc = frame["pc"]
            return self._slice()
        pc = waiting["pc"]
        spec = self.unit.hears.get(pc)
        if spec is None:
            raise StateError("saved state does not match the program (no HEAR at the saved position)")
        answer = "" if text is None else str(text)
        try:
            value, retry = self._validate(waiting, answer)
        except BasicRuntimeError as exc:
            return self._error_result(exc, pc)
        if retry is not None:
            waiting["tries"] = waiting.get("tries", 0) + 1
            if waiting["tries"] < limits.MAX_HEAR_TRIES:
                self.host.talk(retry)
                self.waiting = waiting
                return self._suspended()
            value = ""  # spec 3.5.1: after 3 failures continue with an empty value
        self.pc = pc + 1
        try:
            spec["store"](self, value)
        except LimitExceeded as exc:
            return self._error_result(exc, pc)
        except MemoryError:
            return self._error_result(out_of_memory(), pc)
        except Exception as exc:  # noqa: BLE001 - `HEAR a[i]` stores through any index: a BASIC error, not a crash
            # An error of the HEAR line, like `a[5] = 1` failing there: TRY and ON ERROR of the script handle it.
            try:
                self.pc = self._handle_error(exc, pc, 0)
            except BasicRuntimeError as err:
                return self._error_result(err, pc)
        return self._slice()

    # -- state ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"version": STATE_VERSION, "program": self.program.source_hash, "frames": self.frames,
                "waiting": self.waiting, "headers": self.headers, "output_chars": self.output_chars,
                "message_count": self.message_count}

    def _load(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise StateError("unknown state format")
        try:
            state = _unpack_nul(state)
        except (ValueError, TypeError, AttributeError):
            raise StateError("saved state has a damaged packed field") from None
        if state.get("program") != self.program.source_hash:
            raise StateError("the script changed since this run was suspended")
        frames = state.get("frames")
        if not isinstance(frames, list) or not frames or any(
                not isinstance(f, dict) or f.get("unit") not in self.units for f in frames):
            raise StateError("saved frames do not match the program")
        self.frames = frames
        self.waiting = state.get("waiting")
        self.headers = dict(state.get("headers") or {})
        self.output_chars = int(state.get("output_chars", 0))
        self.message_count = int(state.get("message_count", 0))

    def _suspended(self) -> RunResult:
        state = self.state()
        problem = None
        try:
            text = V.bounded_json(state, limits.MAX_STATE_BYTES, wrapping=_STATE_WRAPPING, strict=True)
            # The limit is on bytes as the state is stored (UTF-8 jsonb): an emoji is one character but four
            # bytes. A character is at least one byte, so the character bound above refuses sooner.
            size = len(text.encode("utf-8", "surrogatepass"))
            state = _pack_nul(state, text)
        except V.ValueTooDeep as exc:
            problem = f"cannot save the suspended state: {exc.message}"
        except ValueError:  # from an HTTP response parsed as JSON, say; arithmetic and JSON PARSE refuse them
            problem = "cannot save the suspended state: a variable holds a number that is NaN or infinite"
        except (LimitExceeded, RecursionError):
            size = limits.MAX_STATE_BYTES + 1
        if problem is None and size > limits.MAX_STATE_BYTES:
            problem = f"suspended state too large ({size} bytes)"
        if problem is not None:
            return RunResult("error", error={"line": self._line(self.frames[-1]["pc"]), "message": problem},
                             instructions=self.steps)
        kind = self.waiting["type"] if self.waiting else None
        return RunResult("waiting", state=state, waiting_for=kind,
                         wait_seconds=float(self.waiting.get("seconds", 0)) if self.waiting else 0.0,
                         instructions=self.steps)

    # -- frames --------------------------------------------------------------------------------
    def _enter(self, frame: dict) -> None:
        self.frame = frame
        self.vars = frame["vars"]
        self.globals = self.frames[0]["vars"]
        self.unit = self.units[frame["unit"]]
        self.code = self.unit.ops

    def push_frame(self, name: str, params: list[str], args: list, return_pc: int, want: bool = True) -> None:
        if len(self.frames) >= limits.MAX_CALL_DEPTH:
            raise BasicRuntimeError(f"too many nested calls (limit {limits.MAX_CALL_DEPTH})")
        self.frame["pc"] = return_pc
        variables = dict(zip(params, args, strict=False))
        for p in params[len(args):]:
            variables[p] = None
        frame = {"unit": name, "pc": 0, "vars": variables}
        if want:
            frame["ret"] = True  # the caller assigns the RETURN value (x = F(...))
        self.frames.append(frame)
        self._enter(frame)

    def call_nested(self, name: str, params: list[str], args: list, line: int, shown: str = "") -> object:
        """A FUNCTION called inside an expression: run it to completion right here (`shown`: its name as the
        call spells it)."""
        depth = len(self.frames)
        saved_pc = self.frame.get("pc", 0)
        self.push_frame(name, params, args, saved_pc, want=False)
        try:
            outcome, value = self._loop(0, depth)
        except Exception as exc:
            # Where RESUME NEXT would go after a failing FOR/SELECT header is a position in the function's
            # code: the caller handles the error at its own call site, not there (it jumped into the void).
            if hasattr(exc, "resume_at"):
                del exc.resume_at
            raise
        # Each _loop counts its own instructions locally and only looks at the limits when that local
        # count runs out, so a caller whose loop runs a few instructions per call would never look while
        # the calls it makes run millions. The nested loop has added its work to self.steps by now:
        # check the one shared budget and the clock at every return (at most CLOCK_CHECK_INTERVAL
        # instructions per enclosing loop are not yet counted).
        self._check_limits()
        if outcome == "suspend":
            # The function stopped at its HEAR/WAIT with its frames (and any it called) still on the stack and
            # the wait recorded. An expression cannot be resumed halfway, so that suspension is abandoned: back
            # to the caller's frame, no pending wait, and the error is raised at the call site like any other
            # (TRY/ON ERROR there catch it; left on the stack, the caller's stale pc re-ran the script from an
            # earlier line).
            del self.frames[depth:]
            self.waiting = None
            self._enter(self.frames[-1])
            shown = shown or name
            raise BasicRuntimeError(
                f"{shown} waits for input (HEAR/WAIT) but was called inside an expression; "
                f"call it as a statement: x = {shown}(...)", line)
        return value

    # -- the loop ------------------------------------------------------------------------------
    def _slice(self) -> RunResult:
        outer = meter.current()  # a script run by CALL inside another run: the memory bound is the run's
        self.gauge = memory.Gauge(self.max_memory, self._memory_roots, outer.gauge if outer is not None else None)
        # Values and builtins charge their work to this run, and tell it about the large values they build.
        self.meter = meter.Meter(self.charge, self.hold, self.gauge, self)
        token = meter.install(self.meter)
        try:
            caller = outer.run if outer is not None else None
            if caller is not None:
                return self._run_called(caller)  # type: ignore[arg-type]
            return self._run_slice()
        finally:
            meter.uninstall(token)
            self.gauge.release()
            self.gauge = self.meter = None  # (the meter refers back to this VM)

    def charge(self, units: int) -> None:
        """Work of an operation beyond its instruction (apps/basic/meter.py): counted in the budget, and the
        limits are looked at once CLOCK_CHECK_INTERVAL units have been charged since they last were."""
        self.steps += units
        self.work += units
        self.charged += units
        if self.charged >= limits.CLOCK_CHECK_INTERVAL:
            self.charged = 0
            self._check_limits()

    def _run_called(self, caller: VM) -> RunResult:
        """A script run by CALL inside `caller`'s run (the host's call_script made this VM): it runs on the
        caller's instruction budget and clock, so the whole run, caller and every script it calls, is bounded
        by one budget and one deadline (each CALL used to get a fresh budget and time limit of its own, and a
        loop of CALLs was bounded by neither). It counts on from the caller's instructions and work units,
        under the smaller of the two budgets and the earlier of the two deadlines; what it did is added to the
        caller's counts when it ends (VM.call_script then looks at the caller's limits)."""
        self.deadline = time.monotonic() + self.max_seconds
        if caller.deadline < self.deadline:
            self.deadline, self.max_seconds = caller.deadline, caller.max_seconds
        self.max_instructions = min(self.max_instructions, caller.max_instructions)
        steps, work = self.steps, self.work = caller.steps, caller.work
        self.gauge.measured(steps, work)  # type: ignore[union-attr]  # (the memory estimate grows from here)
        try:
            return self._finish_slice()
        except MemoryError:
            self._let_go()
            return self._error_result(out_of_memory(), None)
        finally:
            caller.steps += self.steps - steps
            caller.work += self.work - work

    def _run_slice(self) -> RunResult:
        self.deadline = time.monotonic() + self.max_seconds
        try:
            return self._finish_slice()
        except MemoryError:  # outside the script's code (saving the state, checking the RETURN value)
            self._let_go()
            return self._error_result(out_of_memory(), None)

    def _finish_slice(self) -> RunResult:
        try:
            outcome, value = self._loop(self.pc, 0)
        except _Halt:
            return RunResult("done", value=None, instructions=self.steps)
        except MemoryLimitExceeded as exc:
            self._let_go()
            return self._error_result(exc, None)
        except BasicRuntimeError as exc:
            return self._error_result(exc, None)
        if outcome == "suspend":
            return self._suspended()
        try:
            V.check_depth(value)  # the caller turns the RETURN value into JSON or text
        except LimitExceeded as exc:
            return RunResult("error", error={"line": self._line(self.frame.get("pc", 0)),
                                             "message": f"RETURN value refused: {exc.message}"},
                             instructions=self.steps)
        return RunResult("done", value=value, instructions=self.steps)

    def _let_go(self) -> None:
        """The run ended at the memory limit: drop its values now rather than when the caller drops this VM (a
        turn still has its transcript to write)."""
        for frame in self.frames:
            frame["vars"].clear()
        self.return_value = None
        self.waiting = None
        if self.gauge is not None:
            self.gauge.release()
        if self.meter is not None:
            self.meter.lower_keys.clear()

    def _error_result(self, exc: BasicRuntimeError, pc: int | None) -> RunResult:
        line = exc.line or (self._line(pc) if pc is not None else 0)
        return RunResult("error", error={"line": line, "message": exc.message}, instructions=self.steps)

    def _line(self, pc: int) -> int:
        lines = self.unit.lines
        return lines[pc] if 0 <= pc < len(lines) else (lines[-1] if lines else 0)

    def _loop(self, pc: int, stop_depth: int) -> tuple[str, object]:
        code = self.code
        n = limits.CLOCK_CHECK_INTERVAL
        while True:
            try:
                while pc >= 0:
                    pc = code[pc](self)
                    n -= 1
                    if n <= 0:
                        n = self._tick()
            except LimitExceeded as exc:
                if not exc.line:
                    exc.line = self._line(pc)
                raise
            except _Halt:
                raise
            except MemoryError:
                # Not a script error to trap: the process could not allocate. The run ends and lets go of its
                # values (_finish_slice); the process and the other runs in it carry on.
                error = out_of_memory()
                error.line = self._line(pc)
                raise error from None
            except Exception as exc:  # noqa: BLE001 - every failure becomes a BASIC error
                pc = self._handle_error(exc, pc, stop_depth)
                code = self.code
                continue
            finally:
                self.steps += limits.CLOCK_CHECK_INTERVAL - n
                n = limits.CLOCK_CHECK_INTERVAL
            if pc == RELOAD:
                code = self.code
                pc = 0
                continue
            if pc == RETURN:
                value = self.return_value
                frame = self.frames.pop()
                if len(self.frames) == stop_depth or not self.frames:
                    if self.frames:
                        self._enter(self.frames[-1])
                    return "return", value
                caller = self.frames[-1]
                self._enter(caller)
                if frame.get("ret"):
                    caller["vars"]["#ret"] = value
                code = self.code
                pc = caller["pc"]
                continue
            if pc == HALT:
                if stop_depth:
                    raise _Halt()
                return "halt", None
            if pc == SUSPEND:
                return "suspend", None
            raise BasicRuntimeError(f"internal error: bad jump {pc}")

    def _tick(self) -> int:
        self.steps += limits.CLOCK_CHECK_INTERVAL
        self._check_limits()
        return limits.CLOCK_CHECK_INTERVAL

    def _check_limits(self) -> None:
        if self.steps > self.max_instructions:
            if self.work * 2 > self.steps:
                raise LimitExceeded(f"instruction budget of {self.max_instructions} exceeded, mostly by work on large "
                                    "values (sorting, searching, joining or copying big texts, arrays or maps)")
            raise LimitExceeded(f"instruction budget of {self.max_instructions} exceeded (endless loop?)")
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"run took longer than {self.max_seconds:g} seconds")
        gauge = self.gauge
        if gauge is not None and gauge.estimate(self.steps, self.work) > gauge.limit:
            self._check_memory()

    # -- memory (apps/basic/memory.py) ----------------------------------------------------------------
    def hold(self, value: object) -> None:
        """A large value the engine just built (meter.hold): counted while it exists."""
        gauge = self.gauge
        gauge.track(value, memory.text_bytes(value) if type(value) is str else sys.getsizeof(value))
        if gauge.estimate(self.steps, self.work) > gauge.limit:
            self._check_memory()

    def _from_host(self, value: object) -> object:
        """A value from the host (a keyword's result, a CALLed script's RETURN): measured whole, as no work charged
        to this run built it (a FIND's rows, a 10 MB HTTP response)."""
        gauge = self.gauge
        if gauge is None or value is None or type(value) is bool:  # (no gauge: a HEAR's target before the slice)
            return value
        size, visited = memory.value_bytes(value, gauge.limit)
        self._charge_walk(visited)
        if memory.is_large(value, size):
            gauge.track(value, size)
        else:
            gauge.add(size)
        if gauge.estimate(self.steps, self.work) > gauge.limit:
            self._check_memory()
        return value

    def _check_memory(self) -> None:
        """The estimate passed the limit: let go of dropped values, and measure if it still does."""
        gauge = self.gauge
        gauge.prune()
        if gauge.estimate(self.steps, self.work) <= gauge.limit:
            return
        held, visited = gauge.measure()
        self._charge_walk(visited)
        gauge.measured(self.steps, self.work)
        if held > gauge.limit:
            raise MemoryLimitExceeded(f"memory limit: this script holds more than {gauge.limit / 2**20:g} MiB of "
                                      "values (texts, arrays and maps)")

    def _charge_walk(self, visited: int) -> None:
        units = visited // limits.HELD_WALK_ITEMS_PER_UNIT
        self.steps += units  # looked at with the next check, like other work (not from here: _check_limits calls)
        self.work += units
        self.charged += units

    def _memory_roots(self) -> list:
        """Everything of the run's own that holds values (frames hold the variables, FOR EACH copies, SELECT
        subjects and pending RETURN values; the meter's key indexes hold maps)."""
        roots = [self.frames, self.return_value, self.waiting, self.headers]
        if self.meter is not None:
            for cached, _size, _last, index in self.meter.lower_keys.values():
                roots.append(cached)
                roots.append(index)
        return roots

    # -- errors --------------------------------------------------------------------------------
    def _handle_error(self, exc: Exception, pc: int, stop_depth: int) -> int:
        err = _basic_error(exc)
        if not err.line:
            err.line = self._line(pc)
        self.last_error = err
        # ERR is the error number (0 when there is none: `IF ERR <> 0`), as in VB; ERR.description,
        # ERR.message and ERR.line read the rest (err_member).
        self.globals["err"] = self.globals["err_number"] = ERROR_NUMBER
        self.globals["err_description"] = err.message
        self.globals["err_line"] = err.line
        # Where RESUME NEXT continues: after the failing op, or after a whole FOR/SELECT whose header failed.
        resume_at = getattr(exc, "resume_at", None)
        first = True
        while len(self.frames) > stop_depth:
            f = self.frames[-1]
            self._enter(f)
            at = pc if first else f["pc"] - 1  # the failing op, or the CALL op in a caller
            tries = f.get("try")
            while tries:
                entry = tries.pop()
                if len(entry) > 2 and not entry[2] <= at < entry[3]:
                    continue  # a TRY left by EXIT FOR / GOTO: its CATCH no longer applies
                if entry[1]:
                    f["vars"][entry[1]] = err.message
                return entry[0]
            after = (resume_at if resume_at is not None else pc + 1) if first else f["pc"]
            mode = f.get("onerr")
            if mode == "NEXT":
                return after
            if isinstance(mode, int):
                # While the handler runs, an error in it goes to the caller (it must not loop on its own
                # error); RESUME arms the handler again (VB).
                f["onerr"] = None
                f["inhandler"] = mode
                f["errpc"] = after
                f["errretry"] = at
                return mode
            if len(self.frames) == 1:
                break
            self.frames.pop()
            first = False
        if self.frames:
            self._enter(self.frames[-1])
        raise err

    def set_error_mode(self, mode: str, target: int | None) -> None:
        self.frame.pop("inhandler", None)  # an ON ERROR inside a handler replaces the handler RESUME would re-arm
        if mode == "CLEAR":
            self.clear_error()
        elif mode == "NEXT":
            self.frame["onerr"] = "NEXT"
        elif mode == "OFF":
            self.frame["onerr"] = None
        else:
            self.frame["onerr"] = target

    def resume_after_error(self, kind: str | None, target: int | None, line: int) -> int:
        """RESUME (retry the failing statement), RESUME NEXT (the one after it) or RESUME label, from an
        ON ERROR GOTO handler: re-arms the handler and clears ERR (VB)."""
        f = self.frame
        if "errpc" not in f:
            raise BasicRuntimeError("RESUME without an error (RESUME belongs in an ON ERROR GOTO handler)", line)
        nxt, retry = f.pop("errpc"), f.pop("errretry", None)
        handler = f.pop("inhandler", None)
        if handler is not None:
            f["onerr"] = handler
        self.clear_error()
        if kind == "NEXT":
            return nxt
        if kind == "LABEL":
            return target  # type: ignore[return-value]
        return retry if retry is not None else nxt

    def clear_error(self) -> None:
        for key in ("err", "err_number", "err_description", "err_line"):
            self.globals.pop(key, None)
        return None

    def err_member(self, name: str) -> object:
        """`ERR.number`, `ERR.description` / `ERR.message`, `ERR.line`; a script's own map named err keeps
        its fields."""
        own = self.vars.get("err", self.globals.get("err"))
        if type(own) is dict:
            return V.get_member(own, name)
        if name == "number":
            return self.globals.get("err_number", 0)
        if name in ("description", "message"):
            return self.globals.get("err_description", "")
        if name == "line":
            return self.globals.get("err_line", 0)
        raise BasicRuntimeError(f"ERR has no field '{name}' (number, description, message, line)")

    def is_error(self, value: object = None) -> bool:
        return "err" in self.globals

    # -- variables -----------------------------------------------------------------------------
    def read_missing(self, name: str) -> object:
        if self.vars is not self.globals and name in self.globals:
            return self.globals[name]
        if name in PSEUDO_VARIABLES:
            return self.host.context().get(name)
        if name == "error_message" or name == "err_description":
            return self.globals.get("err_description", "")
        if name in ("err", "err_number", "err_line"):
            return 0  # no error
        b = BUILTINS.get(name.upper())
        if b is not None and b.min_args == 0:
            return b.fn(self.ctx)  # NOW, TODAY, PI... used without parentheses
        return None

    # -- suspension ----------------------------------------------------------------------------
    def start_hear(self, pc: int, spec: dict) -> int:
        if spec["prompt"] is not None:
            self._talk(V.value_to_text(spec["prompt"](self)))
        kind = spec["kind"].upper()
        options = None
        if spec["options"] is not None:
            raw = spec["options"](self)
            if not isinstance(raw, list):
                raise BasicRuntimeError("HEAR ... AS needs a list of options")
            options = [V.value_to_text(o) for o in raw]
            for o in options:
                self.host.add_suggestion("text", o, o)
        default = spec["default"](self) if spec["default"] is not None else None
        self.waiting = {"type": "hear", "pc": pc, "kind": kind, "options": options, "default": default,
                        "tries": 0, "secret": kind in SECRET_HEAR_KINDS}
        self.frame["pc"] = pc
        return SUSPEND

    def _validate(self, waiting: dict, answer: str) -> tuple[object, str | None]:
        if not answer.strip() and waiting.get("default") is not None:
            return waiting["default"], None
        kind = waiting["kind"]
        if kind not in HEAR_KINDS:
            kind = "STRING"  # spec 3.5.1: an unknown type accepts any text
        if kind == "MENU" and not waiting.get("options"):
            return answer.strip(), None
        result = hear_validate(kind, answer, ctx=self.ctx, options=waiting.get("options"))
        if result.ok:
            return result.value, None
        return None, result.error

    def start_wait(self, seconds: object, nxt: int) -> int:
        s = V.as_number(seconds, "WAIT")
        if s <= 0:
            return nxt
        s = min(float(s), limits.MAX_WAIT_SECONDS)
        self.waiting = {"type": "wait", "seconds": s}
        self.frame["pc"] = nxt
        return SUSPEND

    # -- keywords ------------------------------------------------------------------------------
    def call_script(self, name: str, args: list, line: int) -> object:
        try:
            return self._from_host(self.host.call_script(name, args))
        finally:
            # The called script ran on this run's budget and clock (_run_called) and its instructions are in
            # self.steps now: a script that ran them out ends this run with the limit error (not a HostError
            # that ON ERROR could trap and loop on), whatever the host made of the called script's error.
            self._check_limits()

    def keyword(self, name: str, args: list, opts: dict) -> object:
        method = _SPECIAL.get(name) or KEYWORDS.get(name, "keyword")
        adapter = getattr(self, "kw_" + method, None)
        try:
            if adapter is not None:
                result = adapter(name, args, opts)
            elif method != "keyword" and hasattr(self.host, method) and method not in _GENERIC_ONLY:
                result = getattr(self.host, method)(args)
            else:
                result = self.host.keyword(name, args, opts)
        except (HostError, BasicRuntimeError):
            raise
        except ssrf.SSRFError as exc:
            raise BasicRuntimeError(f"{name} refused: {exc}") from None
        except BuiltinError as exc:
            raise BasicRuntimeError(str(exc)) from None
        if method in _ENGINE_RESULTS:
            meter.hold(result)  # built from the script's own values as charged work, like a builtin's result
            return result
        return self._from_host(result)

    def _talk(self, text: str) -> None:
        self.output_chars += len(text)
        self.message_count += 1
        if self.output_chars > limits.MAX_OUTPUT_CHARS or self.message_count > limits.MAX_MESSAGES:
            raise LimitExceeded("too much output from this script")
        self.host.talk(text)

    def kw_talk(self, name: str, args: list, opts: dict) -> object:
        # The output limit is checked piece by piece: `TALK s, s, s, ...` of 8-million-character texts was joined
        # whole (a gigabyte) before _talk refused it.
        pieces = []
        total = self.output_chars
        for a in args:
            piece = V.value_to_text(a)
            total += len(piece)
            if total > limits.MAX_OUTPUT_CHARS:
                raise LimitExceeded("too much output from this script")
            pieces.append(piece)
        self._talk("".join(pieces))
        return None

    def kw_talk_to(self, name: str, args: list, opts: dict) -> object:
        if len(args) < 2:
            raise BasicRuntimeError(f"{name} needs a recipient and a message")
        self.host.talk_to(V.value_to_text(args[0]), V.value_to_text(args[1]))
        return None

    def kw_log(self, name: str, args: list, opts: dict) -> object:
        """PRINT: one server-log line, cut at MAX_LOG_MESSAGE_CHARS like LOG_* (before joining its pieces)."""
        self.host.log(clipped_text(args, " ", limits.MAX_LOG_MESSAGE_CHARS, V.value_to_text))
        return None

    def kw_set_system_prompt(self, name: str, args: list, opts: dict) -> object:
        self.host.set_system_prompt(V.value_to_text(args[0]))
        return None

    def kw_llm(self, name: str, args: list, opts: dict) -> object:
        return self.host.llm(V.join_text(args, " "))

    def kw_set_context(self, name: str, args: list, opts: dict) -> object:
        if "AS" in opts:
            self.host.set_context(V.value_to_text(args[0]) if args else None, V.value_to_text(opts["AS"]))
        elif len(args) >= 2:
            self.host.set_context(V.value_to_text(args[0]), V.value_to_text(args[1]))
        elif args:
            self.host.set_context(None, V.value_to_text(args[0]))  # one-argument form (spec 3.5.2 GAP)
        return None

    def kw_add_suggestion(self, name: str, args: list, opts: dict) -> object:
        if not args:
            raise BasicRuntimeError(f"{name} needs a text")
        value = V.value_to_text(args[0])
        label = V.value_to_text(opts["AS"]) if "AS" in opts else (V.value_to_text(args[1]) if len(args) > 1 else value)
        if name.endswith("TOOL"):
            kind = "tool"
        elif name.endswith("TEXT") or "AS" not in opts:
            kind = "text"
        else:
            kind = "context"
        self.host.add_suggestion(kind, value, label)
        return None

    def kw_clear_suggestions(self, name: str, args: list, opts: dict) -> object:
        self.host.clear_suggestions()
        return None

    def kw_add_switcher(self, name: str, args: list, opts: dict) -> object:
        """ADD SWITCHER "tables" AS "Tables": a built-in format id, or any other text as its own prompt."""
        if not args or not V.value_to_text(args[0]).strip():
            raise BasicRuntimeError(f"{name} needs an id")
        switcher_id = V.value_to_text(args[0]).strip()
        label = V.value_to_text(opts["AS"]) if "AS" in opts else (V.value_to_text(args[1]) if len(args) > 1 else "")
        self.host.add_switcher(switcher_id, label.strip() or switcher_id)
        return None

    def kw_clear_switchers(self, name: str, args: list, opts: dict) -> object:
        self.host.clear_switchers()
        return None

    def kw_use_kb(self, name: str, args: list, opts: dict) -> object:
        for a in args:
            self.host.use_kb(V.value_to_text(a))
        return None

    def kw_clear_kb(self, name: str, args: list, opts: dict) -> object:
        target = V.value_to_text(args[0]) if args else None
        self.host.clear_kb(None if target in (None, "", "ALL", "all") else target)
        return True

    def kw_think_kb(self, name: str, args: list, opts: dict) -> object:
        return self.host.think_kb(V.value_to_text(args[0]) if args else "")

    def kw_use_website(self, name: str, args: list, opts: dict) -> object:
        refresh = opts.get("REFRESH", args[1] if len(args) > 1 else None)
        self.host.use_website(V.value_to_text(args[0]), None if refresh is None else V.value_to_text(refresh))
        return None

    def kw_clear_websites(self, name: str, args: list, opts: dict) -> object:
        self.host.clear_websites()
        return None

    def kw_use_tool(self, name: str, args: list, opts: dict) -> object:
        result = None
        for a in args:
            result = self.host.use_tool(tool_name(V.value_to_text(a)))
        return result

    def kw_clear_tools(self, name: str, args: list, opts: dict) -> object:
        self.host.clear_tools()
        return None

    def _key_value(self, name: str, args: list, opts: dict) -> tuple[str, object]:
        if len(args) >= 2:
            return V.value_to_text(args[0]), args[1]
        if args and "AS" in opts:
            return V.value_to_text(args[0]), opts["AS"]
        raise BasicRuntimeError(f"{name} needs a key and a value")

    def kw_set_bot_memory(self, name: str, args: list, opts: dict) -> object:
        self.host.set_bot_memory(*self._key_value(name, args, opts))
        return None

    def kw_get_bot_memory(self, name: str, args: list, opts: dict) -> object:
        return self.host.get_bot_memory(V.value_to_text(args[0]) if args else "")

    def kw_set_user_memory(self, name: str, args: list, opts: dict) -> object:
        self.host.set_user_memory(*self._key_value(name, args, opts))
        return None

    def kw_get_user_memory(self, name: str, args: list, opts: dict) -> object:
        return self.host.get_user_memory(V.value_to_text(args[0]) if args else "")

    def kw_remember(self, name: str, args: list, opts: dict) -> object:
        key, value = self._key_value(name, args, opts)
        self.host.remember(key, value, V.value_to_text(args[2]) if len(args) > 2 else None)
        return None

    def kw_recall(self, name: str, args: list, opts: dict) -> object:
        return self.host.recall(V.value_to_text(args[0]) if args else "")

    def _table_arg(self, name: str, args: list, opts: dict, connector: str) -> tuple[str, list]:
        if connector in opts:
            return V.value_to_text(opts[connector]), list(args)
        if not args:
            raise BasicRuntimeError(f"{name} needs a table name")
        return V.value_to_text(args[0]), list(args[1:])

    def kw_find(self, name: str, args: list, opts: dict) -> object:
        table, rest = self._table_arg(name, args, opts, "FROM")
        filter_value = opts.get("WHERE", opts.get("WITH", rest[0] if rest else ""))  # `FIND "t" WITH "a=1"` too
        return self.host.find(table, V.value_to_text(filter_value) if filter_value is not True else "")

    def kw_save(self, name: str, args: list, opts: dict) -> object:
        table, rest = self._table_arg(name, args, opts, "INTO")
        names = opts.get(SAVE_NAMES)
        if names is not None and "INTO" not in opts:
            names = names[1:]  # the first argument was the table
        if "WITH" in opts:
            rest.append(opts["WITH"])
        if save_is_positional(rest):
            # The row is built here, where the variable names are known: by the columns of this script's TABLE
            # definition of the table, else those the host knows (spec 3.5.7 SAVE form 2).
            columns = table_columns_from_metadata(self.program.metadata.get("tables"), table)
            ordered = True
            if not columns:
                columns, ordered = self.host.table_columns(table)
            rest = [save_row(rest, names, columns, ordered)]
        return self.host.save(table, rest)

    def kw_insert(self, name: str, args: list, opts: dict) -> object:
        table, rest = self._table_arg(name, args, opts, "INTO")
        data = opts.get("VALUES", opts.get("WITH", rest[0] if rest else None))
        if not isinstance(data, dict):
            raise BasicRuntimeError(f"{name} needs a map of column values")
        return self.host.insert(table, data)

    def kw_update(self, name: str, args: list, opts: dict) -> object:
        table, rest = self._table_arg(name, args, opts, "INTO")
        filter_value = opts.get("WHERE", rest[0] if rest else "")
        data = opts.get("SET", opts.get("WITH", rest[1] if len(rest) > 1 else None))
        if isinstance(data, str):
            data = _parse_assignments(data)
        if not isinstance(data, dict):
            raise BasicRuntimeError(f"{name} needs a map of column values")
        return self.host.update(table, V.value_to_text(filter_value), data)

    def kw_set_table(self, name: str, args: list, opts: dict) -> object:
        if len(args) < 3:
            raise BasicRuntimeError('SET "table", "filter", "field=value,..." needs three arguments')
        return self.host.update(V.value_to_text(args[0]), V.value_to_text(args[1]),
                                _parse_assignments(V.value_to_text(args[2])))

    def kw_delete(self, name: str, args: list, opts: dict) -> object:
        if "FROM" in opts:
            return self.host.delete(V.value_to_text(opts["FROM"]), V.value_to_text(opts.get("WHERE", "")))
        if not args:
            raise BasicRuntimeError("DELETE needs a table, a URL or a file path")
        first = V.value_to_text(args[0])
        if first.lower().startswith(("http://", "https://")):
            return self._http("DELETE", first, None)
        if len(args) >= 2 or "WHERE" in opts:
            return self.host.delete(first, V.value_to_text(opts.get("WHERE", args[1] if len(args) > 1 else "")))
        return self.host.delete_file(first)

    def kw_merge(self, name: str, args: list, opts: dict) -> object:
        table = V.value_to_text(args[0]) if args else ""
        rows = opts.get("WITH", args[1] if len(args) > 1 else [])
        key = opts.get("BY", args[2] if len(args) > 2 else "id")
        if isinstance(rows, dict):
            rows = [rows]
        if not isinstance(rows, list):
            raise BasicRuntimeError("MERGE needs an array of rows")
        return self.host.merge(table, rows, V.value_to_text(key))

    def kw_filter(self, name: str, args: list, opts: dict) -> object:
        """FILTER data, "field op value [AND ...]": in-memory filtering of an array of maps."""
        if len(args) < 2:
            raise BasicRuntimeError("FILTER needs an array and a condition")
        from apps.basic.host import parse_filter, row_matches_filter

        data = args[0] if isinstance(args[0], list) else []
        conditions = parse_filter(V.value_to_text(args[1]))
        meter.charge_steps(len(data) * len(conditions))  # row by row, condition by condition
        return [row for row in data if isinstance(row, dict) and row_matches_filter(row, conditions)]

    # -- in-memory data transforms (spec 3.5.7; apps.basic.dataops) -------------------------------------------
    def kw_aggregate(self, name: str, args: list, opts: dict) -> object:
        def operation(value: object) -> str:
            return value.strip().upper() if isinstance(value, str) else ""

        if args and operation(args[0]) not in dataops.AGGREGATE_OPERATIONS and len(args) >= 2 and \
                operation(args[1]) in dataops.AGGREGATE_OPERATIONS:
            # `AGGREGATE "leads", "COUNT", "email"`: over a stored table, which only a host can read
            return self.host.keyword(name, args, opts)
        if len(args) != 3:
            raise BasicRuntimeError(f'{name} needs an operation, the rows and a field: {name} "SUM", rows, "amount"')
        return dataops.aggregate(*args)

    def kw_join_rows(self, name: str, args: list, opts: dict) -> object:
        if len(args) != 3:
            raise BasicRuntimeError(f'{name} of rows needs two arrays and a key field: {name} orders, customers, "id"')
        return dataops.join(*args)

    def kw_pivot(self, name: str, args: list, opts: dict) -> object:
        if len(args) != 3:
            raise BasicRuntimeError(f'{name} needs the rows, a row field and a value field: {name} rows, "month", '
                                    '"amount"')
        return dataops.pivot(*args)

    def kw_group_by(self, name: str, args: list, opts: dict) -> object:
        if len(args) != 2:
            raise BasicRuntimeError(f'{name} needs the rows and a field: {name} rows, "field"')
        return dataops.group_by(*args)

    def kw_map_rows(self, name: str, args: list, opts: dict) -> object:
        if len(args) != 2:
            raise BasicRuntimeError(f'{name} needs the rows and the renames: {name} rows, "old->new, ..."')
        return dataops.rename(*args)

    def kw_fill(self, name: str, args: list, opts: dict) -> object:
        if len(args) == 2:  # `FILL rows, template` or `FILL value, count`: the builtin tells them apart
            return BUILTINS["FILL"].fn(self.ctx, *args)
        return self.host.keyword(name, args, opts)  # `FILL template` (a document template): the host's

    def _http(self, method: str, url: str, data: object) -> object:
        ssrf.check_url(url)
        return self.host.http(method, url, data, dict(self.headers))

    def kw_get(self, name: str, args: list, opts: dict) -> object:
        if not args:
            raise BasicRuntimeError("GET needs a URL, a path or a session field")
        target = V.value_to_text(args[0]).strip()
        if not target:
            raise BasicRuntimeError("GET needs a URL, a path or a session field, got an empty value")
        if len(args) == 2 and target.lower() == "config":
            return self.host.get_config(V.value_to_text(args[1]))
        if target.lower().startswith(("http://", "https://")):
            result = self._http("GET", target, None)
            if isinstance(result, dict) and "data" in result and "status" in result:
                return result["data"]  # GET returns the body (parsed when JSON, spec 3.5.8 GAP)
            return result
        if target.lower().startswith(("session.", "user.", "bot.")) or target.lower() in ("user", "session", "bot"):
            return self.host.session_value(target)
        if "://" in target:
            raise BasicRuntimeError(f"GET supports only http and https URLs, not '{target}'")
        return self.host.read_file(target)

    def kw_get_session(self, name: str, args: list, opts: dict) -> object:
        return self.host.session_value("session." + V.value_to_text(args[0]) if args else "session")

    def _http_body(self, name: str, method: str, args: list, opts: dict) -> object:
        if not args:
            raise BasicRuntimeError(f"{name} needs a URL")
        data = opts.get("WITH", args[1] if len(args) > 1 else None)
        result = self._http(method, V.value_to_text(args[0]), data)
        if isinstance(result, dict) and isinstance(result.get("data"), dict):
            # templates read body fields straight from the result (spec 3.5.8 GAP)
            return {**result["data"], **{k: v for k, v in result.items() if k not in result["data"]}}
        return result

    def kw_http_post(self, name: str, args: list, opts: dict) -> object:
        return self._http_body(name, "POST", args, opts)

    def kw_http_put(self, name: str, args: list, opts: dict) -> object:
        return self._http_body(name, "PUT", args, opts)

    def kw_http_patch(self, name: str, args: list, opts: dict) -> object:
        return self._http_body(name, "PATCH", args, opts)

    def kw_http_delete(self, name: str, args: list, opts: dict) -> object:
        return self._http("DELETE", V.value_to_text(args[0]) if args else "", None)

    def kw_graphql(self, name: str, args: list, opts: dict) -> object:
        if len(args) < 2:
            raise BasicRuntimeError("GRAPHQL needs a URL and a query")
        body = {"query": V.value_to_text(args[1]), "variables": args[2] if len(args) > 2 else {}}
        return self._http("POST", V.value_to_text(args[0]), body)

    def kw_set_header(self, name: str, args: list, opts: dict) -> object:
        key, value = self._key_value(name, args, opts)
        self.headers[key] = V.value_to_text(value)
        return None

    def kw_clear_headers(self, name: str, args: list, opts: dict) -> object:
        self.headers.clear()
        return None

    def kw_read_file(self, name: str, args: list, opts: dict) -> object:
        return self.host.read_file(V.value_to_text(args[0]) if args else "")

    def kw_write_file(self, name: str, args: list, opts: dict) -> object:
        if "TO" in opts and args:
            path, content = opts["TO"], args[0]
        elif len(args) >= 2:
            path, content = args[0], args[1]
        else:
            raise BasicRuntimeError("WRITE needs a path and content")
        self.host.write_file(V.value_to_text(path), content, bool(opts.get("APPEND")))
        return None

    def kw_list_files(self, name: str, args: list, opts: dict) -> object:
        return self.host.list_files(V.value_to_text(args[0]) if args else "")

    def kw_copy_file(self, name: str, args: list, opts: dict) -> object:
        dest = opts.get("TO", args[1] if len(args) > 1 else None)
        if not args or dest is None:
            raise BasicRuntimeError(f"{name} needs a source and a destination")
        self.host.copy_file(V.value_to_text(args[0]), V.value_to_text(dest))
        return True

    def kw_move_file(self, name: str, args: list, opts: dict) -> object:
        dest = opts.get("TO", args[1] if len(args) > 1 else None)
        if not args or dest is None:
            raise BasicRuntimeError(f"{name} needs a source and a destination")
        self.host.move_file(V.value_to_text(args[0]), V.value_to_text(dest))
        return True

    def kw_delete_file(self, name: str, args: list, opts: dict) -> object:
        return self.host.delete_file(V.value_to_text(args[0]) if args else "")

    def kw_send_mail(self, name: str, args: list, opts: dict) -> object:
        rest = list(args)
        missing = object()
        to = opts["TO"] if "TO" in opts else (rest.pop(0) if rest else missing)
        subject = opts["SUBJECT"] if "SUBJECT" in opts else (rest.pop(0) if rest else missing)
        body = opts["BODY"] if "BODY" in opts else (rest.pop(0) if rest else missing)
        if to is missing or subject is missing:
            raise BasicRuntimeError(f"{name} needs a recipient, a subject and a body")
        if not V.value_to_text(to).strip():
            raise BasicRuntimeError(f"{name}: the recipient is empty")
        if body is missing:  # `SEND EMAIL admin, "text"` (templates): the text is subject and body
            body = subject
        attachments = rest[0] if rest else opts.get("ATTACHMENT", [])
        if isinstance(attachments, str):
            attachments = [attachments] if attachments else []
        return self.host.send_mail(V.value_to_text(to), V.value_to_text(subject), V.value_to_text(body),
                                   attachments or [])

    def kw_send_file(self, name: str, args: list, opts: dict) -> object:
        to = V.value_to_text(opts["TO"]) if "TO" in opts else None
        path = V.value_to_text(args[0]) if args else ""
        caption = V.value_to_text(args[1]) if len(args) > 1 else ""
        return self.host.send_file(to, path, caption)

    def kw_set_schedule(self, name: str, args: list, opts: dict) -> object:
        return self.host.set_schedule(list(args))

    def kw_create_task(self, name: str, args: list, opts: dict) -> object:
        return self.host.create_task(list(args))

    def kw_book(self, name: str, args: list, opts: dict) -> object:
        return self.host.book(list(args))

    def kw_transfer_to_human(self, name: str, args: list, opts: dict) -> object:
        return self.host.transfer_to_human(V.value_to_text(args[0]) if args else "")

    def kw_pure(self, name: str, args: list, opts: dict) -> object:
        if name in ("NEW OBJECT", "CREATE OBJECT"):
            return {}
        if name == "NEW ARRAY":
            return list(args)
        try:
            return parse_json_text(V.value_to_text(args[0])) if args else None
        except ValueError as exc:
            raise BasicRuntimeError(f"JSON PARSE: invalid JSON ({exc})") from None


# Suffix of a state field saved as JSON text because its value holds NUL: PostgreSQL's jsonb refuses the
# escape \u0000 (and text columns refuse NUL), while JSON text *inside* a string keeps it as six plain
# characters. Only the fields where script values live are packed (frame variables, headers, the HEAR's
# options and default); positions stay readable for the callers that look at them.
_PACKED = "#json"


def _pack_nul(state: dict, text: str) -> dict:
    """`state` with every field that holds NUL packed; `text` is its JSON (NUL shows as \\u0000 in it)."""
    if "\\u0000" not in text:
        return state

    def pack(holder: dict, key: str) -> dict:
        dumped = json.dumps(holder.get(key), ensure_ascii=False)
        if "\\u0000" not in dumped:
            return holder
        packed = {k: v for k, v in holder.items() if k != key}
        packed[key + _PACKED] = dumped
        return packed

    state = pack({**state, "frames": [pack(f, "vars") for f in state["frames"]]}, "headers")
    if state.get("waiting"):
        state["waiting"] = pack(pack(state["waiting"], "options"), "default")
    return state


def _unpack_nul(state: dict) -> dict:
    def unpack(holder: object) -> object:
        if not isinstance(holder, dict) or not any(k.endswith(_PACKED) for k in holder):
            return holder
        return {k.removesuffix(_PACKED): json.loads(v) if k.endswith(_PACKED) else v for k, v in holder.items()}

    state = unpack(state)  # type: ignore[assignment]
    if isinstance(state.get("frames"), list):
        state["frames"] = [unpack(f) for f in state["frames"]]
    state["waiting"] = unpack(state.get("waiting"))
    return state


def _basic_error(exc: Exception) -> BasicRuntimeError:
    """The BASIC error a failure inside the script's code stands for."""
    if isinstance(exc, BasicRuntimeError):
        return exc
    if isinstance(exc, BuiltinError):
        return BasicRuntimeError(str(exc))
    if isinstance(exc, RecursionError):
        return BasicRuntimeError("expression nested too deeply")
    if isinstance(exc, ssrf.SSRFError):
        return BasicRuntimeError(f"request refused: {exc}")
    return BasicRuntimeError(f"internal error: {type(exc).__name__}: {exc}")


def _parse_assignments(text: str) -> dict:
    out: dict = {}
    for part in re.split(r",", text):
        if "=" not in part:
            raise BasicRuntimeError(f"expected field=value, got '{part.strip()}'")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


_SPECIAL = {"SYSTEM PROMPT": "set_system_prompt", "SET": "set_table", "NEW OBJECT": "pure",
            "CREATE OBJECT": "pure", "NEW ARRAY": "pure", "JSON PARSE": "pure", "GET SESSION": "get_session",
            "JOIN": "join_rows", "PIVOT": "pivot", "GROUP BY": "group_by", "GROUP_BY": "group_by",
            "MAP": "map_rows", "FILL": "fill"}
# Keywords the engine computes from the script's own values (apps.basic.dataops, FILTER), charging the work: their
# results are told to the memory gauge like builtins' results, not measured whole like the host's.
_ENGINE_RESULTS = frozenset({"filter", "join_rows", "pivot", "group_by", "map_rows"})
# Methods that exist on Host under the same name but need the generic (name, args, opts) form.
_GENERIC_ONLY = frozenset({"keyword"})


def run_source(source: str, host: Host, *, args: dict | None = None, name: str = "script",
               ctx: BuiltinContext | None = None) -> RunResult:
    """Compile and start a script in one call (tests, CLI)."""
    from apps.basic.compiler import compile_source

    return VM(compile_source(source, name), host, ctx=ctx).start(args)
