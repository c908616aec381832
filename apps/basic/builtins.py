"""Expression-level built-in functions of the BASIC dialect (spec §3.5.13).

This module owns every function a script can call inside an expression (``LEN(s)``,
``DATEADD(d, 1, "day")``, ``FORMAT(x, "#,##0.00")``...). It knows nothing about Django,
sessions or the VM: a builtin is a pure function of its arguments plus a small
:class:`BuiltinContext` (clock and random source), so the VM can inject a fixed clock in
tests and the tenant's time zone in production.

Contract with the VM
--------------------
* Values are plain JSON-able Python values: ``None``, ``bool``, ``int``, ``float``,
  ``str``, ``list``, ``dict``. Dates are ISO-8601 strings: ``"YYYY-MM-DD"`` for dates and
  ``"YYYY-MM-DDTHH:MM:SS"`` for date-times (naive, in the context's time zone).
* :data:`BUILTINS` maps the UPPER-CASE name (aliases included) to a :class:`Builtin`;
  the VM calls ``builtin.fn(ctx, *args)`` after checking ``min_args``/``max_args``.
* Bad arguments raise :class:`BuiltinError` with a message naming the function; no other
  exception type escapes a builtin for any JSON input (the registration wrapper converts
  anything unexpected, including ``RecursionError`` and ``OverflowError``).
* Builtins never mutate their arguments: ``PUSH(arr, x)`` returns a new list and scripts
  write ``arr = PUSH(arr, x)``. ``POP``/``SHIFT`` return the element without removing it.
  (Upstream Rhai passes arrays by value, so its in-place forms had no visible effect either.)
* Results are bounded (:data:`MAX_BUILTIN_RESULT_CHARS`, :data:`MAX_BUILTIN_ITEMS`) so a
  script cannot exhaust the worker's memory with ``SPACE(10^12)`` or ``RANGE(1, 10^12)``.
  The text of an array or map (``TOJSON``, ``JOIN``, ``STR``, ``TOYAML``, sort/unique keys) is
  sized before it is built, each shared sub-array once, so ``a = [a, a]`` repeated or a value that
  contains itself is refused at once instead of being encoded.

Choices made where the spec has a [GAP] or is silent
----------------------------------------------------
* ``UBOUND(a)`` follows VB/upstream code: ``len(a) - 1`` and ``-1`` for an empty array
  (§3.11 #6). ``COUNT``/``LEN``/``SIZE`` give the element count.
* ``DATEADD`` accepts the three argument orders seen in docs and templates:
  ``(date, n, unit)``, ``(date, unit, n)`` and ``(unit, n, date)``; the unit is recognised
  by name. Units follow upstream code: ``"m"`` is minutes, ``"y"``/``"yyyy"`` years,
  ``"w"`` weeks, ``"n"`` minutes (VB), ``"q"`` quarters. A date-only input gives a date.
* ``DATEDIFF(unit, d1, d2)`` and ``DATEDIFF(d1, d2, unit)`` return ``d2 - d1`` in whole
  units (truncated toward zero); the two-argument form ``DATEDIFF(d1, d2)`` returns
  ``d1 - d2`` in days, as the templates use it (``DATEDIFF(NOW(), due_date)`` = days overdue).
* ``FORMAT`` with one argument is "to string"; moment-style ``YYYY``/``DD`` tokens and
  ``#,##0.00`` masks are accepted (§3.11 #8). Date tokens are parsed as tokens (not chained
  replacements), English month/day names, ``'quoted'`` text is literal. In text patterns
  ``@`` inserts the value, ``&`` lower-cased, ``>``/``!`` upper-cased, and a ``!`` right
  after another placeholder is a literal ``!`` (so the documented ``"Hello @!"`` works).
  A mask whose integer part would be empty (``"#.##"`` on 0.5) still prints ``0``.
* ``NOW()`` returns the ISO string ``"YYYY-MM-DDTHH:MM:SS"`` (the VM contract), not the
  upstream map; ``NOW_STR()`` gives the upstream ``"YYYY-MM-DD HH:MM:SS"`` text.
* ``ROUND`` rounds half away from zero on the decimal text of the number
  (``ROUND(2.5) = 3``, ``ROUND(1.005, 2) = 1.01``), which is what users expect. Upstream
  agrees on halves of whole numbers (``f64::round``) but rounds ``n * 10^d`` in binary, so its
  ``ROUND(1.005, 2)`` is ``1.0`` (1.005 is stored as 1.00499...); ours differs on purpose.
  ``CINT`` uses the same rule. ``VAL`` reads the leading number of a text
  (``VAL("12abc") = 12``), 0 when there is none, an int for integer text.
* ``RANDOM(max)`` is an integer in ``[0, max)``, ``RANDOM(min, max)`` in ``[min, max]``
  (upstream code).
* ``NVL``/``IFNULL`` replace null and the empty string (upstream code); ``COALESCE``
  returns the first non-null argument.
* ``TYPEOF`` names: null, boolean, integer, float, string, array, object (upstream code).
* ``CONTAINS`` is case-sensitive; on arrays it compares scalars as text too
  (``CONTAINS(SPLIT("1,2", ","), 1)`` is true). ``FIRST``/``LAST`` of an object return the
  object (a FIND that returned one record), ``COUNT`` of an object counts its keys.
  ``HEAD(arr)`` is the first element and ``TAIL(arr)`` the rest (upstream); with a count
  they return the first/last n elements.
* ``value_to_text`` (also used for ``STR``/``JOIN``/``CONCAT``) writes null as ``""``,
  booleans as ``true``/``false``, integral floats without ``.0`` and containers as JSON; the
  VM can reuse it for ``+`` concatenation so both agree.
* Template-only helpers implemented: ``UUID``/``GUID``, ``TOJSON``, ``TOYAML``,
  ``JSON_PARSE``, ``DATEVALUE``, ``DAYS_BETWEEN``/``HOURS_BETWEEN``/``SECONDS_BETWEEN``,
  ``ADD_DAYS``, ``CURDATE``, ``CAPITALIZE``, ``LENGTH``, ``LOWERCASE``, ``TO_NUMBER``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import logging
import math
import random as _random
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any, Protocol

from apps.basic import meter
from apps.basic.errors import LimitExceeded, out_of_memory
from apps.basic.limits import MAX_INTEGER_BITS, MAX_LOG_MESSAGE_CHARS, MIN_CHARGED_STEPS, SORT_COMPARISONS_PER_UNIT

logger = logging.getLogger("apps.basic.script")

# A bot reply or a stored field rarely exceeds a few kilobytes; one million characters is
# far above any legitimate use and still small enough that a runaway loop cannot exhaust
# the worker's memory.
MAX_BUILTIN_RESULT_CHARS = 1_000_000
# Same reasoning for arrays (RANGE, FILL, SPLIT, CONCAT...): 100k items is more than any
# table page a script handles, and bounded memory.
MAX_BUILTIN_ITEMS = 100_000
# A float carries ~15-17 significant digits; asking for more decimals only prints noise
# and huge values would make Decimal quantisation slow.
MAX_DECIMALS = 15
# Integer results of POW stay exact only while they fit a 64-bit integer (as upstream i64);
# beyond that the result is a float, so a script cannot build a million-digit integer.
MAX_EXACT_POW_BITS = 63
# Decimal precision for rounding/formatting: a float has at most 309 integer digits and we
# keep at most MAX_DECIMALS decimals, so 400 digits never lose precision.
_DECIMAL_CONTEXT = Context(prec=400)
# Python refuses str() of integers above 4300 digits; such values are printed in scientific
# notation instead (well below the limit, 10_000 bits is about 3000 digits).
MAX_EXACT_INT_TEXT_BITS = 10_000
# Number text longer than this is not a number anyone typed; reading it as a float (and
# rejecting infinity) avoids Python's integer-conversion limit and slow big-int parsing.
MAX_NUMBER_TEXT_CHARS = 400
# Container elements one equality test (`=`, IN, CONTAINS, INDEX_OF) may visit. Sub-arrays shared by
# both sides are compared once, so only genuinely huge values get here (two separately built
# `a = [a, a]` towers were compared element by element, 2^levels steps); about half a second.
MAX_COMPARE_STEPS = 2_000_000
# Characters of JSON text one SORT/UNIQUE may write to order or deduplicate arrays and maps by value
# (each distinct container is written once); about a quarter of a second of encoding.
MAX_KEY_TEXT_CHARS = 20_000_000
# Years outside Python's datetime range cannot be represented.
_MIN_YEAR, _MAX_YEAR = dt.MINYEAR, dt.MAXYEAR

Value = Any  # None | bool | int | float | str | list | dict


class BuiltinError(Exception):
    """A script called a builtin with arguments it cannot handle; message names the function."""


class BuiltinLimitError(BuiltinError, LimitExceeded):
    """A builtin would do more work than its named bound allows. It is a LimitExceeded, so the VM ends
    the run instead of letting ON ERROR retry an expensive call thousands of times before the clock
    is next looked at."""


class _UnnamedError(BuiltinError):
    """Raised by shared helpers that do not know which builtin called them; the registration
    wrapper puts the builtin's name in front."""


class BuiltinContext(Protocol):
    """What a builtin may ask of its surroundings: the clock and a random source."""

    def now(self) -> dt.datetime:
        """Current time, timezone-aware, in the zone dates should be expressed in."""
        ...

    def random(self) -> float:
        """A float in [0, 1)."""
        ...


class SystemContext:
    """Real clock (UTC or the given zone) and the process random generator."""

    def __init__(self, tz: dt.tzinfo | None = None) -> None:
        self._tz = tz or dt.UTC

    def now(self) -> dt.datetime:
        return dt.datetime.now(self._tz)

    def random(self) -> float:
        return _random.random()


class FixedContext:
    """Frozen clock and seeded random source, for tests and reproducible runs."""

    def __init__(self, now: dt.datetime, seed: int = 0) -> None:
        # A naive datetime is taken as UTC so now() always honours the aware contract.
        self._now = now if now.tzinfo is not None else now.replace(tzinfo=dt.UTC)
        self._rng = _random.Random(seed)

    def now(self) -> dt.datetime:
        return self._now

    def random(self) -> float:
        return self._rng.random()


@dataclass(frozen=True)
class Builtin:
    """One callable builtin: ``fn(ctx, *args)`` with ``min_args..max_args`` arguments."""

    name: str
    fn: Callable[..., Value]
    min_args: int
    max_args: int | None


BUILTINS: dict[str, Builtin] = {}


def _register(names: str, min_args: int, max_args: int | None) -> Callable[[Callable[..., Value]], Callable]:
    """Register a function under one or more space-separated names.

    The stored callable is wrapped so the message carries the name the script used and so
    that no exception other than BuiltinError can escape (the VM relies on this).
    """

    def decorator(func: Callable[..., Value]) -> Callable[..., Value]:
        for name in names.split():
            BUILTINS[name] = Builtin(name, _guarded(name, func), min_args, max_args)
        return func

    return decorator


def _guarded(name: str, func: Callable[..., Value]) -> Callable[..., Value]:
    def call(ctx: BuiltinContext, *args: Value) -> Value:
        try:
            result = func(_Call(name, ctx), *args)
        except _UnnamedError as exc:
            raise BuiltinError(f"{name}: {exc}") from None
        except (BuiltinError, LimitExceeded):  # a limit (the run's budget or clock, charged inside) ends the run
            raise
        except RecursionError:
            raise BuiltinError(f"{name}: value is nested too deeply") from None
        except OverflowError:
            raise BuiltinError(f"{name}: number is too large") from None
        except MemoryError:  # the process is out of memory: the run ends (as at the memory limit), not trappable
            raise out_of_memory(name) from None
        except Exception as exc:  # contract: only BuiltinError leaves a builtin
            raise BuiltinError(f"{name}: invalid arguments ({exc})") from exc
        # Building the result was work in proportion to its size (refused or not); explicit charges cover the
        # rest (scans, comparisons, encoding).
        result_type = type(result)
        if result_type is str:
            meter.charge_chars(len(result))
        elif result_type is list or result_type is dict:
            meter.charge_items(len(result))
        else:
            return result  # a number, a date, nothing: no size to check or to hold
        _check_size(name, result)
        meter.hold(result)  # a large result counts in the run's memory while it exists (apps/basic/memory.py)
        return result

    call.__name__ = f"builtin_{name.lower()}"
    call.__doc__ = func.__doc__
    return call


class _Call:
    """Context plus the name used by the script, so helpers can word their errors."""

    __slots__ = ("name", "ctx")

    def __init__(self, name: str, ctx: BuiltinContext) -> None:
        self.name = name
        self.ctx = ctx

    def error(self, message: str) -> BuiltinError:
        return BuiltinError(f"{self.name}: {message}")


def _check_size(name: str, result: Value) -> None:
    if isinstance(result, str) and len(result) > MAX_BUILTIN_RESULT_CHARS:
        raise BuiltinError(f"{name}: result longer than {MAX_BUILTIN_RESULT_CHARS} characters")
    if isinstance(result, list | dict) and len(result) > MAX_BUILTIN_ITEMS:
        raise BuiltinError(f"{name}: result has more than {MAX_BUILTIN_ITEMS} items")


def _ensure_chars(c: _Call, length: int) -> None:
    """Refuse before allocating a string longer than the limit."""
    if length > MAX_BUILTIN_RESULT_CHARS:
        raise c.error(f"result would exceed {MAX_BUILTIN_RESULT_CHARS} characters")


def _ensure_items(c: _Call, count: int) -> None:
    if count > MAX_BUILTIN_ITEMS:
        raise c.error(f"result would exceed {MAX_BUILTIN_ITEMS} items")


# ---------------------------------------------------------------------------------------
# Value conversions shared by the builtins (and usable by the VM).
# ---------------------------------------------------------------------------------------


def value_to_text(value: Value) -> str:
    """BASIC string form of a value: null is "", integral floats drop ".0", containers are JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return _int_text(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value) and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        return value
    return _bounded_json(value)


def _bounded_json(value: Value, sort_keys: bool = False) -> str:
    """JSON text of a value, refused before encoding when it would pass MAX_BUILTIN_RESULT_CHARS.

    Arrays can share elements (`a = [a, a]` repeated) or, within a run, contain themselves, so a small
    value in memory can be enormous or endless as text: the size is computed first, visiting each
    shared container once.
    """
    if _json_size(value, MAX_BUILTIN_RESULT_CHARS, {}, set()) > MAX_BUILTIN_RESULT_CHARS:
        raise _UnnamedError(f"value longer than {MAX_BUILTIN_RESULT_CHARS} characters as text")
    text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=sort_keys)
    meter.charge_text(len(text))
    return text


def _json_size(value: Value, limit: int, seen: dict[int, int], active: set[int]) -> int:
    """Approximate JSON length of a value, stopping once past `limit`; a container inside itself is
    an error (json.dumps would fail on it anyway, after a long walk)."""
    if isinstance(value, str):
        return len(value) + 2
    if not isinstance(value, list | dict):
        return 24
    key = id(value)
    if key in active:
        raise _UnnamedError("value contains itself and cannot be written as text")
    if key in seen:
        return seen[key]
    active.add(key)
    total = 2
    if isinstance(value, dict):
        for k, v in value.items():
            total += len(str(k)) + 4 + _json_size(v, limit, seen, active)
            if total > limit:
                break
    else:
        for v in value:
            total += 2 + _json_size(v, limit, seen, active)
            if total > limit:
                break
    active.discard(key)
    seen[key] = total
    return total


def _int_text(value: int) -> str:
    """Decimal text of an integer; beyond Python's 4300-digit str() limit, scientific notation."""
    if value.bit_length() < MAX_EXACT_INT_TEXT_BITS:
        return str(value)
    magnitude = abs(value)
    exponent = int(magnitude.bit_length() * math.log10(2)) - 17
    lead = magnitude // 10**exponent  # about 17 significant digits
    mantissa = lead / 10 ** (len(str(lead)) - 1)
    return f"{'-' if value < 0 else ''}{mantissa:.15g}e+{exponent + len(str(lead)) - 1}"


def is_truthy(value: Value) -> bool:
    """Spec §3.2: empty string, null, 0, false and the empty array are falsy."""
    if value is None or value is False:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, str | list):
        return len(value) > 0
    return True


def _describe(value: Value) -> str:
    text = value_to_text(value) if not isinstance(value, str) else value
    if value is None:
        return "null"
    if len(text) > 40:
        text = text[:37] + "..."
    return repr(text) if isinstance(value, str) else text


# ASCII digits only: int() would also accept other scripts' digits and "1_000".
_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _parse_number_text(text: str) -> int | float | None:
    """Whole-text number parse; integer text gives an int."""
    stripped = text.strip()
    if len(stripped) > MAX_NUMBER_TEXT_CHARS or not _NUMBER_RE.fullmatch(stripped):
        return None
    if re.fullmatch(r"[+-]?[0-9]+", stripped):
        return int(stripped)
    number = float(stripped)
    return number if math.isfinite(number) else None


def _num(c: _Call, value: Value, what: str = "argument") -> int | float:
    """A numeric argument: numbers, booleans (1/0) and numeric text are accepted."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise c.error(f"{what} must be a finite number, got {value!r}")
        return value
    if isinstance(value, str):
        parsed = _parse_number_text(value)
        if parsed is not None:
            return parsed
    raise c.error(f"{what} must be a number, got {_describe(value)}")


def _int(c: _Call, value: Value, what: str = "argument") -> int:
    """An integer argument; floats are truncated toward zero as BASIC does."""
    number = _num(c, value, what)
    return int(number)


def _text(value: Value) -> str:
    return value_to_text(value)


def _list(c: _Call, value: Value, what: str = "array") -> list:
    """An array argument; null counts as the empty array (unset variables are null)."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    raise c.error(f"{what} must be an array, got {_describe(value)}")


def _same(a: Value, b: Value, budget: list[int] | None = None) -> bool:
    """BASIC equality used by CONTAINS/INDEX_OF: exact, or equal as text for scalars."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        return deep_equal(a, b, budget)
    if a == b:
        return True
    if a is None or b is None:
        return False
    return value_to_text(a) == value_to_text(b)


def deep_equal(a: Value, b: Value, budget: list[int] | None = None) -> bool:
    """Python's `==` on JSON values with bounded work: a pair of containers is compared once (shared
    sub-arrays cost one visit; a container inside itself ends the walk) and at most MAX_COMPARE_STEPS
    elements are visited. Pass one `budget` (`[steps]`) to bound a series of comparisons (IN a list)."""
    if type(a) not in (list, dict) or type(b) not in (list, dict):
        return a == b
    steps = budget if budget is not None else [MAX_COMPARE_STEPS]
    before = steps[0]
    equal = _deep_equal(a, b, steps, set())  # past MAX_COMPARE_STEPS a limit error ends the run anyway
    if before - steps[0] >= MIN_CHARGED_STEPS:  # elements compared, one by one
        meter.charge_steps(before - steps[0])
    return equal


def _deep_equal(a: Value, b: Value, budget: list[int], assumed: set[tuple[int, int]]) -> bool:
    if a is b:
        return True
    ta, tb = type(a), type(b)
    if ta is not tb or (ta is not list and ta is not dict):
        return a == b
    if len(a) != len(b):
        return False
    pair = (id(a), id(b))
    if pair in assumed:  # compared already, or being compared further up (equal unless shown otherwise)
        return True
    budget[0] -= len(a)
    if budget[0] < 0:
        raise BuiltinLimitError(f"values too large to compare (more than {MAX_COMPARE_STEPS} elements)")
    assumed.add(pair)
    if ta is list:
        return all(_deep_equal(x, y, budget, assumed) for x, y in zip(a, b, strict=True))
    return all(k in b and _deep_equal(v, b[k], budget, assumed) for k, v in a.items())


class _KeyText:
    """JSON text of arrays and maps for SORT/UNIQUE, each distinct container written once, at most
    MAX_KEY_TEXT_CHARS in all."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.left = MAX_KEY_TEXT_CHARS
        self.cache: dict[int, str] = {}

    def __call__(self, value: list | dict) -> str:
        text = self.cache.get(id(value))
        if text is None:
            text = _bounded_json(value, sort_keys=True)
            self.left -= len(text)
            if self.left < 0:
                raise BuiltinLimitError(f"{self.name}: arrays or maps too large to compare (more than "
                                        f"{MAX_KEY_TEXT_CHARS} characters as text)")
            self.cache[id(value)] = text
        return text


def _sort_key(value: Value, key_text: _KeyText) -> tuple:
    """Total order across mixed JSON values: null < bool < number < text < array < object."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (2, 0) if value != value else (2, value)  # NaN sorts as 0 instead of breaking order
    if isinstance(value, str):
        return (3, value)
    return (4 if isinstance(value, list) else 5, key_text(value))


# ---------------------------------------------------------------------------------------
# Strings
# ---------------------------------------------------------------------------------------


@_register("LEN LENGTH", 1, 1)
def _len(c: _Call, value: Value) -> int:
    """Characters of a text, items of an array/object; null is 0."""
    if value is None:
        return 0
    if isinstance(value, str | list | dict):
        return len(value)
    return len(_text(value))


@_register("LEFT", 2, 2)
def _left(c: _Call, s: Value, n: Value) -> str:
    count = _int(c, n, "length")
    if count < 0:
        raise c.error(f"length must not be negative, got {count}")
    return _text(s)[:count]


@_register("RIGHT", 2, 2)
def _right(c: _Call, s: Value, n: Value) -> str:
    count = _int(c, n, "length")
    if count < 0:
        raise c.error(f"length must not be negative, got {count}")
    text = _text(s)
    return text[len(text) - count :] if count < len(text) else text


@_register("MID SUBSTRING SUBSTR", 2, 3)
def _mid(c: _Call, s: Value, start: Value, length: Value = None) -> str:
    """1-based start, optional length (VB MID)."""
    begin = _int(c, start, "start")
    if begin < 1:
        raise c.error(f"start must be 1 or more, got {begin}")
    text = _text(s)
    if length is None:
        return text[begin - 1 :]
    count = _int(c, length, "length")
    if count < 0:
        raise c.error(f"length must not be negative, got {count}")
    return text[begin - 1 : begin - 1 + count]


@_register("INSTR", 2, 3)
def _instr(c: _Call, *args: Value) -> int:
    """INSTR([start,] text, search): 1-based position, 0 when absent."""
    if len(args) == 3:
        start = _int(c, args[0], "start")
        if start < 1:
            raise c.error(f"start must be 1 or more, got {start}")
        text, search = _text(args[1]), _text(args[2])
    else:
        start, text, search = 1, _text(args[0]), _text(args[1])
    if start > len(text) + 1:
        return 0
    meter.charge_chars(len(text))
    return text.find(search, start - 1) + 1


@_register("UCASE UPPER", 1, 1)
def _ucase(c: _Call, s: Value) -> str:
    return _text(s).upper()


@_register("LCASE LOWER LOWERCASE", 1, 1)
def _lcase(c: _Call, s: Value) -> str:
    return _text(s).lower()


@_register("CAPITALIZE PROPER", 1, 1)
def _capitalize(c: _Call, s: Value) -> str:
    """Upper-case the first letter of every word, keep the rest as typed."""
    words = _text(s).split(" ")
    meter.charge_steps(len(words))  # one by one
    return " ".join(word[:1].upper() + word[1:] for word in words)


@_register("TRIM", 1, 1)
def _trim(c: _Call, s: Value) -> str:
    return _text(s).strip()


@_register("LTRIM", 1, 1)
def _ltrim(c: _Call, s: Value) -> str:
    return _text(s).lstrip()


@_register("RTRIM", 1, 1)
def _rtrim(c: _Call, s: Value) -> str:
    return _text(s).rstrip()


@_register("REPLACE", 3, 3)
def _replace(c: _Call, s: Value, old: Value, new: Value) -> str:
    """Replace every occurrence; an empty search text leaves the text unchanged (VB)."""
    text, search, replacement = _text(s), _text(old), _text(new)
    if not search:
        return text
    _ensure_chars(c, len(text) + text.count(search) * (len(replacement) - len(search)))
    return text.replace(search, replacement)


@_register("SPLIT", 1, 2)
def _split(c: _Call, s: Value, delimiter: Value = " ") -> list[str]:
    """Split text; an empty delimiter gives the characters, null text the empty array."""
    if s is None:
        return []
    text, sep = _text(s), _text(delimiter)
    meter.charge_chars(len(text))  # scanned and copied into the pieces (the result's charge counts pieces only)
    if sep == "":
        _ensure_items(c, len(text))
        return list(text)
    _ensure_items(c, text.count(sep) + 1)
    return text.split(sep)


@_register("JOIN", 1, 2)
def _join(c: _Call, arr: Value, separator: Value = ",") -> str:
    sep = _text(separator)
    items: list[str] = []
    total = -len(sep)
    for item in _list(c, arr):  # each item's text is bounded; stop as soon as the whole would be too long
        text = _text(item)
        total += len(text) + len(sep)
        _ensure_chars(c, total)
        items.append(text)
    meter.charge_steps(len(items))  # one by one
    return sep.join(items)


@_register("STR CSTR", 1, 1)
def _str(c: _Call, value: Value) -> str:
    return _text(value)


@_register("VAL", 1, 1)
def _val(c: _Call, value: Value) -> int | float:
    """Leading number of a text (VB VAL); 0 when there is none."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else 0
    match = _NUMBER_RE.match(_text(value).strip())
    if not match:
        return 0
    parsed = _parse_number_text(match.group(0))
    return 0 if parsed is None else parsed


@_register("TO_NUMBER CDBL", 1, 1)
def _cdbl(c: _Call, value: Value) -> int | float:
    """Strict conversion to a number (CDBL returns a float)."""
    number = _num(c, value, "value")
    return float(number) if c.name == "CDBL" else number


@_register("CINT CLNG", 1, 1)
def _cint(c: _Call, value: Value) -> int:
    number = int(_round_half_up(_num(c, value, "value"), 0))
    if number.bit_length() > MAX_INTEGER_BITS:  # VB: Overflow
        raise c.error(f"number too large for an integer ({_describe(value)})")
    return number


@_register("ISNUMERIC IS_NUMERIC", 1, 1)
def _isnumeric(c: _Call, value: Value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and _parse_number_text(value) is not None


@_register("SPACE", 1, 1)
def _space(c: _Call, n: Value) -> str:
    count = max(_int(c, n, "count"), 0)
    _ensure_chars(c, count)
    return " " * count


@_register("REPEAT STRING", 2, 2)
def _repeat(c: _Call, a: Value, b: Value) -> str:
    """REPEAT(text, n); STRING(n, text) keeps the VB argument order."""
    text, count_value = (_text(b), a) if c.name == "STRING" else (_text(a), b)
    count = max(_int(c, count_value, "count"), 0)
    _ensure_chars(c, len(text) * count)
    return text * count


@_register("CHR", 1, 1)
def _chr(c: _Call, code: Value) -> str:
    number = _int(c, code, "code")
    if not 0 <= number <= 0x10FFFF:
        raise c.error(f"code must be between 0 and 1114111, got {number}")
    # PostgreSQL cannot store NUL in text or jsonb, nor a lone surrogate (not a character in UTF-8):
    # a value holding one would make saving the chat message or the suspended dialog fail later.
    if number == 0:
        raise c.error("CHR(0) (NUL) is not allowed: text with NUL cannot be stored")
    if 0xD800 <= number <= 0xDFFF:
        raise c.error(f"code {number} is a UTF-16 surrogate, not a character")
    return chr(number)


@_register("ASC", 1, 1)
def _asc(c: _Call, s: Value) -> int:
    text = _text(s)
    if not text:
        raise c.error("text must not be empty")
    return ord(text[0])


# ---------------------------------------------------------------------------------------
# Math
# ---------------------------------------------------------------------------------------


def _round_half_up(number: int | float, digits: int) -> int | float:
    """Round half away from zero on the decimal text, so 1.005 -> 1.01 as users expect."""
    digits = max(-MAX_DECIMALS, min(MAX_DECIMALS, digits))
    if isinstance(number, int):
        if digits >= 0:
            return number
        step = 10**-digits
        magnitude = (abs(number) + step // 2) // step * step
        return magnitude if number >= 0 else -magnitude
    quantum = Decimal(1).scaleb(-digits)
    rounded = Decimal(repr(number)).quantize(quantum, rounding=ROUND_HALF_UP, context=_DECIMAL_CONTEXT)
    if digits <= 0:
        return int(rounded)
    return float(rounded)


def _whole(number: int) -> int | float:
    """An integer result of INT/FIX/FLOOR/CEIL/ROUND: past MAX_INTEGER_BITS the float it stands for (exact:
    floats that large are whole numbers), as the arithmetic operators do."""
    return float(number) if number.bit_length() > MAX_INTEGER_BITS else number


def _result(number: float) -> float:
    """Refuse infinities/NaN: they are not JSON values and only confuse scripts."""
    if not math.isfinite(number):
        raise OverflowError
    return number


@_register("ABS", 1, 1)
def _abs(c: _Call, x: Value) -> int | float:
    return abs(_num(c, x))


@_register("INT", 1, 1)
def _int_fn(c: _Call, x: Value) -> int:
    """Largest integer <= x (VB INT)."""
    return _whole(math.floor(_num(c, x)))


@_register("FIX", 1, 1)
def _fix(c: _Call, x: Value) -> int:
    """Integer part, truncated toward zero."""
    return _whole(math.trunc(_num(c, x)))


@_register("ROUND", 1, 2)
def _round(c: _Call, x: Value, digits: Value = 0) -> int | float:
    rounded = _round_half_up(_num(c, x), _int(c, digits, "digits"))
    return _whole(rounded) if type(rounded) is int else rounded


@_register("FLOOR", 1, 1)
def _floor(c: _Call, x: Value) -> int:
    return _whole(math.floor(_num(c, x)))


@_register("CEIL CEILING", 1, 1)
def _ceil(c: _Call, x: Value) -> int:
    return _whole(math.ceil(_num(c, x)))


@_register("SGN SIGN", 1, 1)
def _sgn(c: _Call, x: Value) -> int:
    number = _num(c, x)
    return (number > 0) - (number < 0)


@_register("SQR SQRT", 1, 1)
def _sqrt(c: _Call, x: Value) -> float:
    number = _num(c, x)
    if number < 0:
        raise c.error(f"cannot take the square root of a negative number ({number})")
    return math.sqrt(number)


@_register("POW POWER", 2, 2)
def _pow(c: _Call, base: Value, exponent: Value) -> int | float:
    b, e = _num(c, base, "base"), _num(c, exponent, "exponent")
    exact = isinstance(b, int) and isinstance(e, int) and e >= 0
    if exact and (abs(b) <= 1 or e * math.log2(abs(b)) <= MAX_EXACT_POW_BITS):
        return b**e
    if b == 0 and e < 0:
        raise c.error("division by zero (0 raised to a negative power)")
    if b < 0 and not float(e).is_integer():
        raise c.error(f"negative base {b} with fractional exponent {e}")
    return _result(math.pow(b, e))


@_register("MOD", 2, 2)
def _mod(c: _Call, a: Value, b: Value) -> int | float:
    """Remainder with the sign of the dividend (VB/Rust semantics)."""
    x, y = _num(c, a), _num(c, b, "divisor")
    if y == 0:
        raise c.error("division by zero")
    if isinstance(x, int) and isinstance(y, int):
        remainder = abs(x) % abs(y)
        return remainder if x >= 0 else -remainder
    return math.fmod(x, y)


def _numbers_of(c: _Call, args: tuple[Value, ...]) -> list[int | float]:
    """Numbers from ``(list)``, ``(list_of_objects, "field")`` or ``(a, b, c...)``.

    The field form is how templates aggregate FIND results: ``SUM(messages, "count")``.
    Nulls inside arrays are skipped (missing cells), other non-numbers are errors.
    """
    if len(args) == 2 and isinstance(args[0], list) and isinstance(args[1], str):
        field = args[1]
        values = [item.get(field) if isinstance(item, dict) else None for item in args[0]]
    elif len(args) == 1 and isinstance(args[0], list | type(None)):
        values = args[0] or []
    else:
        values = list(args)
    meter.charge_steps(len(values))  # one by one
    return [_num(c, v, "item") for v in values if v is not None]


@_register("MIN", 1, None)
def _min(c: _Call, *args: Value) -> Value:
    return _extreme(c, args, min)


@_register("MAX", 1, None)
def _max(c: _Call, *args: Value) -> Value:
    return _extreme(c, args, max)


def _extreme(c: _Call, args: tuple[Value, ...], pick: Callable) -> Value:
    items = args[0] if len(args) == 1 and isinstance(args[0], list) else None
    if items is not None and items and all(isinstance(v, str) for v in items):
        return pick(items)
    if len(args) > 1 and all(isinstance(v, str) for v in args) and not any(
        _parse_number_text(v) is not None for v in args
    ):
        return pick(args)
    numbers = _numbers_of(c, args)
    if not numbers:
        return None
    return pick(numbers)


@_register("SUM", 1, None)
def _sum(c: _Call, *args: Value) -> int | float:
    return _result_sum(_numbers_of(c, args))


def _result_sum(numbers: list[int | float]) -> int | float:
    total = math.fsum(numbers) if any(isinstance(n, float) for n in numbers) else sum(numbers)
    if isinstance(total, float) and not math.isfinite(total):
        raise OverflowError
    return total


@_register("AVG AVERAGE", 1, None)
def _avg(c: _Call, *args: Value) -> float:
    numbers = _numbers_of(c, args)
    if not numbers:
        return 0
    return _result(math.fsum(numbers) / len(numbers))


@_register("COUNT SIZE", 1, 1)
def _count(c: _Call, value: Value) -> int:
    """Items of an array or keys of an object; null is 0."""
    if value is None:
        return 0
    if isinstance(value, list | dict | str):
        return len(value)
    raise c.error(f"expected an array, got {_describe(value)}")


@_register("RANDOM", 0, 2)
def _random_fn(c: _Call, *args: Value) -> int | float:
    """RANDOM() in [0,1); RANDOM(max) integer in [0,max); RANDOM(min,max) integer in [min,max]."""
    r = c.ctx.random()
    if not args:
        return r
    if len(args) == 1:
        top = _int(c, args[0], "max")
        return 0 if top <= 0 else min(int(r * top), top - 1)
    low, high = _int(c, args[0], "min"), _int(c, args[1], "max")
    if low >= high:
        return low
    span = high - low + 1
    return low + min(int(r * span), span - 1)


@_register("RND", 0, 1)
def _rnd(c: _Call, _ignored: Value = None) -> float:
    """VB RND: a float in [0, 1); the argument is accepted and ignored."""
    return c.ctx.random()


@_register("PI", 0, 0)
def _pi(c: _Call) -> float:
    return math.pi


def _unary_math(names: str, func: Callable[[float], float], domain: Callable[[float], bool] | None = None,
                domain_error: str = "") -> None:
    def builtin(c: _Call, x: Value) -> float:
        number = float(_num(c, x))
        if domain is not None and not domain(number):
            raise c.error(f"{domain_error}, got {value_to_text(x)}")
        return _result(func(number))

    _register(names, 1, 1)(builtin)


_unary_math("SIN", math.sin)
_unary_math("COS", math.cos)
_unary_math("TAN", math.tan)
_unary_math("ATN ATAN", math.atan)
_unary_math("ASIN", math.asin, lambda x: -1 <= x <= 1, "argument must be between -1 and 1")
_unary_math("ACOS", math.acos, lambda x: -1 <= x <= 1, "argument must be between -1 and 1")
_unary_math("LOG LN", math.log, lambda x: x > 0, "argument must be greater than 0")
_unary_math("LOG10", math.log10, lambda x: x > 0, "argument must be greater than 0")
_unary_math("EXP", math.exp)


# ---------------------------------------------------------------------------------------
# Dates and times
# ---------------------------------------------------------------------------------------

_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%d/%m/%Y", "%m/%d/%Y", "%d-%m-%Y", "%d.%m.%Y",
                 "%d %b %Y", "%d %B %Y", "%b %d, %Y", "%B %d, %Y", "%Y%m%d")
_DATETIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
                     "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M")
# Long text cannot be a date; refusing early keeps strptime off megabyte strings.
_MAX_DATE_TEXT = 64


@dataclass(frozen=True)
class _Moment:
    """A parsed date value and whether it carried a time of day."""

    value: dt.datetime
    has_time: bool


def _parse_moment(value: Value, tz: dt.tzinfo | None = None) -> _Moment | None:
    """Lenient date parse: ISO date/date-time (T or space, Z/offset), d/m/Y, m/d/Y, month names.

    An aware input is converted to ``tz`` (the context zone) and made naive, so every
    date value in a script is naive local time.
    """
    if isinstance(value, dict):
        formatted = value.get("formatted")
        if isinstance(formatted, str):
            return _parse_moment(formatted, tz)
        try:
            return _Moment(dt.datetime(int(value["year"]), int(value["month"]), int(value["day"])), False)
        except (KeyError, TypeError, ValueError, OverflowError):
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > _MAX_DATE_TEXT or text.isdigit() and len(text) != 8:
        return None
    for fmt in _DATE_FORMATS:
        try:
            return _Moment(dt.datetime.strptime(text, fmt), False)
        except ValueError:
            continue
    for fmt in _DATETIME_FORMATS:
        try:
            return _Moment(dt.datetime.strptime(text, fmt), True)
        except ValueError:
            continue
    try:
        parsed = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(tz or dt.UTC).replace(tzinfo=None)
        except (OverflowError, ValueError):
            return None
    return _Moment(parsed, True)


def _moment(c: _Call, value: Value, what: str = "date") -> _Moment:
    parsed = _parse_moment(value, c.ctx.now().tzinfo)
    if parsed is None:
        raise c.error(f"{what} must be a date such as 2024-12-25, got {_describe(value)}")
    return parsed


def _local_now(c: _Call) -> dt.datetime:
    return c.ctx.now().replace(microsecond=0, tzinfo=None)


def _iso(moment: dt.datetime, has_time: bool) -> str:
    if has_time:
        return moment.replace(microsecond=0).isoformat(timespec="seconds")
    return moment.date().isoformat()


@_register("NOW", 0, 0)
def _now(c: _Call) -> str:
    return _iso(_local_now(c), True)


@_register("NOW_UTC", 0, 0)
def _now_utc(c: _Call) -> str:
    return _iso(c.ctx.now().astimezone(dt.UTC).replace(tzinfo=None), True)


@_register("NOW_STR", 0, 0)
def _now_str(c: _Call) -> str:
    return _local_now(c).strftime("%Y-%m-%d %H:%M:%S")


@_register("TODAY CURDATE", 0, 0)
def _today(c: _Call) -> str:
    return _local_now(c).date().isoformat()


@_register("TIME", 0, 0)
def _time(c: _Call) -> str:
    return _local_now(c).strftime("%H:%M:%S")


@_register("TIMESTAMP", 0, 0)
def _timestamp(c: _Call) -> str:
    """Full ISO-8601 instant with the zone offset, for logs and external APIs."""
    return c.ctx.now().replace(microsecond=0).isoformat()


@_register("UNIX_TIMESTAMP", 0, 0)
def _unix_timestamp(c: _Call) -> int:
    return int(c.ctx.now().timestamp())


def _part(names: str, extract: Callable[[dt.datetime], int]) -> None:
    def builtin(c: _Call, *value: Value) -> int:
        # No argument means "now"; an explicit null is an error, not a silent "now".
        moment = _local_now(c) if not value else _moment(c, value[0]).value
        return extract(moment)

    _register(names, 0, 1)(builtin)


_part("YEAR", lambda m: m.year)
_part("MONTH", lambda m: m.month)
_part("DAY", lambda m: m.day)
_part("HOUR", lambda m: m.hour)
_part("MINUTE", lambda m: m.minute)
_part("SECOND", lambda m: m.second)
# VB WEEKDAY and upstream NOW().weekday: Sunday = 1 ... Saturday = 7.
_part("WEEKDAY", lambda m: (m.isoweekday() % 7) + 1)

_UNITS = {
    "year": "year", "years": "year", "yyyy": "year", "yy": "year", "y": "year",
    "quarter": "quarter", "quarters": "quarter", "q": "quarter",
    "month": "month", "months": "month", "mm": "month",
    "week": "week", "weeks": "week", "w": "week", "ww": "week",
    "day": "day", "days": "day", "d": "day", "dd": "day",
    "hour": "hour", "hours": "hour", "h": "hour", "hh": "hour",
    "minute": "minute", "minutes": "minute", "min": "minute", "mi": "minute", "m": "minute", "n": "minute",
    "second": "second", "seconds": "second", "sec": "second", "s": "second", "ss": "second",
}
_FIXED_UNIT_SECONDS = {"week": 604_800, "day": 86_400, "hour": 3_600, "minute": 60, "second": 1}


def _unit_of(value: Value) -> str | None:
    return _UNITS.get(value.strip().lower()) if isinstance(value, str) else None


def _add_months(moment: dt.datetime, months: int) -> dt.datetime:
    """Calendar month arithmetic, clamping the day (Jan 31 + 1 month = Feb 28/29)."""
    index = moment.year * 12 + (moment.month - 1) + months
    year, month = divmod(index, 12)
    if not _MIN_YEAR <= year <= _MAX_YEAR:
        raise OverflowError
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _shift(moment: dt.datetime, amount: int | float, unit: str) -> dt.datetime:
    if unit in ("year", "quarter", "month"):
        months = int(amount) * {"year": 12, "quarter": 3, "month": 1}[unit]
        return _add_months(moment, months)
    return moment + dt.timedelta(seconds=amount * _FIXED_UNIT_SECONDS[unit])


@_register("DATEADD", 3, 3)
def _dateadd(c: _Call, a: Value, b: Value, d: Value) -> str:
    """DATEADD(date, n, unit) | DATEADD(date, unit, n) | DATEADD(unit, n, date)."""
    if _unit_of(a) and _parse_moment(a) is None:
        unit_value, amount_value, date_value = a, b, d
    elif _unit_of(b):
        date_value, unit_value, amount_value = a, b, d
    elif _unit_of(d):
        date_value, amount_value, unit_value = a, b, d
    else:
        raise c.error('unit must be one of year, quarter, month, week, day, hour, minute, second; '
                      f"got {_describe(d)}")
    unit = _unit_of(unit_value) or ""
    amount = _num(c, amount_value, "amount")
    moment = _moment(c, date_value)
    shifted = _shift(moment.value, amount, unit)
    has_time = moment.has_time or unit in ("hour", "minute", "second") or shifted.time() != dt.time()
    return _iso(shifted, has_time)


@_register("ADD_DAYS", 2, 2)
def _add_days(c: _Call, date_value: Value, days: Value) -> str:
    moment = _moment(c, date_value)
    return _iso(_shift(moment.value, _num(c, days, "days"), "day"), moment.has_time)


def _difference(a: dt.datetime, b: dt.datetime, unit: str) -> int:
    """Whole units from a to b (b - a), truncated toward zero; months/years by calendar."""
    if unit in ("year", "quarter", "month"):
        months = (b.year - a.year) * 12 + (b.month - a.month)
        # A month only counts once the day/time of month has been reached.
        if months > 0 and (b.day, b.time()) < (a.day, a.time()):
            months -= 1
        elif months < 0 and (b.day, b.time()) > (a.day, a.time()):
            months += 1
        return int(months / {"year": 12, "quarter": 3, "month": 1}[unit])
    seconds = (b - a).total_seconds()
    return int(seconds / _FIXED_UNIT_SECONDS[unit])


@_register("DATEDIFF", 2, 3)
def _datediff(c: _Call, *args: Value) -> int:
    """DATEDIFF(unit, d1, d2) / DATEDIFF(d1, d2, unit) = d2 - d1; DATEDIFF(d1, d2) = d1 - d2 days."""
    if len(args) == 2:
        first, second = _moment(c, args[0], "first date"), _moment(c, args[1], "second date")
        return _difference(second.value, first.value, "day")
    if _unit_of(args[0]) and _parse_moment(args[0]) is None:
        unit_value, d1, d2 = args
    elif _unit_of(args[2]):
        d1, d2, unit_value = args
    else:
        raise c.error('unit must be one of year, quarter, month, week, day, hour, minute, second; '
                      f"got {_describe(args[0])}")
    first, second = _moment(c, d1, "first date"), _moment(c, d2, "second date")
    return _difference(first.value, second.value, _unit_of(unit_value) or "day")


def _between(names: str, unit: str) -> None:
    def builtin(c: _Call, start: Value, end: Value) -> int:
        return _difference(_moment(c, start, "start").value, _moment(c, end, "end").value, unit)

    _register(names, 2, 2)(builtin)


_between("DAYS_BETWEEN", "day")
_between("HOURS_BETWEEN", "hour")
_between("MINUTES_BETWEEN", "minute")
_between("SECONDS_BETWEEN", "second")


@_register("DATEVALUE", 1, 1)
def _datevalue(c: _Call, value: Value) -> str:
    """Date part of any accepted date text, as YYYY-MM-DD."""
    return _moment(c, value).value.date().isoformat()


@_register("ISDATE IS_DATE", 1, 1)
def _isdate(c: _Call, value: Value) -> bool:
    return _parse_moment(value) is not None


@_register("FORMAT_DATE", 2, 2)
def _format_date(c: _Call, value: Value, pattern: Value) -> str:
    mask = _text(pattern)
    meter.charge_steps(len(mask))  # token by token
    return _format_moment(_moment(c, value).value, mask)


# ---------------------------------------------------------------------------------------
# FORMAT
# ---------------------------------------------------------------------------------------

# Longest tokens first so "MMMM" is not read as "MM" + "MM". Quoted text and \x are literal.
_DATE_TOKEN_RE = re.compile(
    r"'[^']*'|\\.|yyyy|YYYY|yy|YY|MMMM|MMM|MM|M|dddd|ddd|dd|DD|d|D|HH|H|hh|h|mm|m|ss|s|fff|tt|t"
)
_DATE_TOKEN_HINT = re.compile(r"yy|YY|MM|dd|DD|HH|hh|mm|ss")


# Fixed English names: calendar.month_name follows the process locale, which differs per host.
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December")
_DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _format_moment(moment: dt.datetime, pattern: str) -> str:
    hour12 = moment.hour % 12 or 12

    def render(match: re.Match[str]) -> str:
        token = match.group(0)
        if token.startswith("'"):
            return token[1:-1]
        if token.startswith("\\"):
            return token[1:]
        table: dict[str, Callable[[], str]] = {
            "yyyy": lambda: f"{moment.year:04d}", "YYYY": lambda: f"{moment.year:04d}",
            "yy": lambda: f"{moment.year % 100:02d}", "YY": lambda: f"{moment.year % 100:02d}",
            "MMMM": lambda: _MONTH_NAMES[moment.month - 1], "MMM": lambda: _MONTH_NAMES[moment.month - 1][:3],
            "MM": lambda: f"{moment.month:02d}", "M": lambda: str(moment.month),
            "dddd": lambda: _DAY_NAMES[moment.weekday()], "ddd": lambda: _DAY_NAMES[moment.weekday()][:3],
            "dd": lambda: f"{moment.day:02d}", "DD": lambda: f"{moment.day:02d}",
            "d": lambda: str(moment.day), "D": lambda: str(moment.day),
            "HH": lambda: f"{moment.hour:02d}", "H": lambda: str(moment.hour),
            "hh": lambda: f"{hour12:02d}", "h": lambda: str(hour12),
            "mm": lambda: f"{moment.minute:02d}", "m": lambda: str(moment.minute),
            "ss": lambda: f"{moment.second:02d}", "s": lambda: str(moment.second),
            "fff": lambda: f"{moment.microsecond // 1000:03d}",
            "tt": lambda: "AM" if moment.hour < 12 else "PM", "t": lambda: "A" if moment.hour < 12 else "P",
        }
        return table[token]()

    return _DATE_TOKEN_RE.sub(render, pattern)


_STANDARD_NUMBER_RE = re.compile(r"([NC])(\d{0,3})(?:\[([A-Za-z]{2})\])?")
# (thousands separator, decimal separator, currency prefix) per locale tag (upstream set).
_LOCALES = {
    "en": (",", ".", "$"),
    "pt": (".", ",", "R$ "),
    "es": (".", ",", "€"),
    "it": (".", ",", "€"),
    "de": (".", ",", "€"),
    "fr": ("\u202f", ",", "€"),
}
_MASK_RE = re.compile(r"[#0][#0,]*(?:\.[#0]*)?|\.[#0]+")


def _group(digits: str, separator: str) -> str:
    head = len(digits) % 3 or 3
    parts = [digits[:head]] + [digits[i : i + 3] for i in range(head, len(digits), 3)]
    return separator.join(parts)


def _fixed(number: int | float, decimals: int) -> tuple[bool, str, str]:
    """(negative, integer digits, decimal digits) rounded half away from zero."""
    decimals = max(0, min(MAX_DECIMALS, decimals))
    if isinstance(number, int):
        return number < 0, str(abs(number)), "0" * decimals
    quantum = Decimal(1).scaleb(-decimals)
    rounded = Decimal(repr(number)).quantize(quantum, rounding=ROUND_HALF_UP, context=_DECIMAL_CONTEXT)
    text = f"{abs(rounded):f}"
    integer, _, fraction = text.partition(".")
    return rounded < 0, integer, fraction


def _format_standard(number: int | float, kind: str, decimals_text: str, locale: str) -> str:
    thousands, point, symbol = _LOCALES.get(locale.lower(), _LOCALES["en"])
    decimals = int(decimals_text) if decimals_text else 2
    negative, integer, fraction = _fixed(number, decimals)
    body = _group(integer, thousands) + (point + fraction if fraction else "")
    return ("-" if negative else "") + (symbol if kind == "C" else "") + body


def _format_mask(number: int | float, pattern: str) -> str | None:
    """Excel/.NET style mask: ``#,##0.00``, ``$#,###``, ``0%``, ``R$ #,##0.00``."""
    match = _MASK_RE.search(pattern)
    if match is None:
        return None
    prefix, mask, suffix = pattern[: match.start()], match.group(0), pattern[match.end() :]
    if "%" in prefix + suffix:
        number = number * 100
    integer_mask, _, decimal_mask = mask.partition(".")
    negative, integer, fraction = _fixed(number, len(decimal_mask))
    minimum_decimals = decimal_mask.count("0")  # "0.0#": one decimal always, a second if needed
    fraction = fraction.rstrip("0").ljust(minimum_decimals, "0") if fraction else ""
    integer = integer.lstrip("0").rjust(max(integer_mask.count("0"), 1), "0")
    if "," in integer_mask:
        integer = _group(integer, ",")
    body = integer + ("." + fraction if fraction else "")
    if negative and not (set(body) <= {"0", ".", ","}):
        return "-" + prefix + body + suffix
    return prefix + body + suffix


def _format_text(value: str, pattern: str) -> str:
    out: list[str] = []
    previous_placeholder = False
    for char in pattern:
        if char == "!" and previous_placeholder:
            out.append("!")
            previous_placeholder = False
            continue
        if char == "@":
            out.append(value)
        elif char == "&":
            out.append(value.lower())
        elif char in ">!":
            out.append(value.upper())
        else:
            out.append(char)
            previous_placeholder = False
            continue
        previous_placeholder = True
    return "".join(out)


def _as_number(value: Value) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return _parse_number_text(value)
    return None


@_register("FORMAT", 1, 2)
def _format(c: _Call, value: Value, pattern: Value = None) -> str:
    """Numbers (N2, C2[pt], n, F, f, #,##0.00, 0%), dates (yyyy-MM-dd, YYYYMMDD) or text (@ & > !)."""
    if pattern is None:
        return _text(value)
    mask = _text(pattern)
    number = _as_number(value)
    if number is not None:
        standard = _STANDARD_NUMBER_RE.fullmatch(mask)
        if standard:
            return _format_standard(number, standard.group(1), standard.group(2), standard.group(3) or "en")
        if mask in ("n", "F"):
            return _format_standard(number, "N", "2", "en").replace(",", "")
        if mask == "f":  # documented as the integer part: FORMAT(1234.5, "f") = "1234"
            return _format_standard(math.trunc(number), "N", "0", "en").replace(",", "")
        if not _DATE_TOKEN_HINT.search(mask) and not re.search(r"[@&>!]", mask):
            masked = _format_mask(number, mask)
            if masked is not None:
                _ensure_chars(c, len(masked))
                return masked
    placeholders = sum(mask.count(ch) for ch in "@&>!")
    moment = _parse_moment(value, c.ctx.now().tzinfo) if number is None and not placeholders else None
    if moment is not None:
        meter.charge_steps(len(mask))  # token by token
        return _format_moment(moment.value, mask)
    text = _text(value)
    if placeholders == 0:
        return text if number is not None else mask
    _ensure_chars(c, len(mask) + placeholders * len(text))
    meter.charge_steps(len(mask))  # character by character
    return _format_text(text, mask)


# ---------------------------------------------------------------------------------------
# Arrays
# ---------------------------------------------------------------------------------------


@_register("UBOUND", 1, 1)
def _ubound(c: _Call, arr: Value) -> int:
    """Last valid index (VB): len - 1, -1 when empty."""
    if isinstance(arr, str | dict):
        return len(arr) - 1
    return len(_list(c, arr)) - 1


@_register("LBOUND", 1, 1)
def _lbound(c: _Call, arr: Value) -> int:
    if not isinstance(arr, str | dict):
        _list(c, arr)  # still reject numbers/booleans with a clear message
    return 0


@_register("PUSH APPEND ARRAY_PUSH", 2, 2)
def _push(c: _Call, arr: Value, value: Value) -> list:
    items = _list(c, arr)
    _ensure_items(c, len(items) + 1)
    return [*items, value]


@_register("UNSHIFT PREPEND", 2, 2)
def _unshift(c: _Call, arr: Value, value: Value) -> list:
    items = _list(c, arr)
    _ensure_items(c, len(items) + 1)
    return [value, *items]


@_register("POP LAST", 1, 1)
def _last(c: _Call, arr: Value) -> Value:
    """Last element (null when empty); an object is its own "last record"."""
    if isinstance(arr, dict):
        return arr
    if isinstance(arr, str):
        return arr[-1:]
    items = _list(c, arr)
    return items[-1] if items else None


@_register("SHIFT FIRST", 1, 1)
def _first(c: _Call, arr: Value) -> Value:
    """First element (null when empty). A FIND that returned one record (an object) yields it."""
    if isinstance(arr, dict):
        return arr
    if isinstance(arr, str):
        return arr[:1]
    items = _list(c, arr)
    return items[0] if items else None


def _sorted(items: list, descending: bool, name: str = "SORT") -> list:
    # Refused before sorting (the result is as long as the input): sorted, then refused, a million items took
    # a second per call, again and again under ON ERROR RESUME NEXT.
    if len(items) > MAX_BUILTIN_ITEMS:
        raise BuiltinError(f"{name}: result would exceed {MAX_BUILTIN_ITEMS} items")
    # Keyed one by one, then about n*log2(n) comparisons.
    meter.charge_steps(len(items) + len(items) * len(items).bit_length() // SORT_COMPARISONS_PER_UNIT)
    key_text = _KeyText(name)
    return sorted(items, key=lambda v: _sort_key(v, key_text), reverse=descending)


@_register("SORT", 1, 2)
def _sort(c: _Call, arr: Value, order: Value = "ASC") -> list:
    """SORT(arr[, "ASC"|"DESC"]); mixed types order null < bool < number < text < array < object."""
    direction = _text(order).strip().upper()
    if direction not in ("ASC", "DESC"):
        raise c.error(f'order must be "ASC" or "DESC", got {_describe(order)}')
    return _sorted(_list(c, arr), direction == "DESC", c.name)


@_register("SORT_ASC", 1, 1)
def _sort_asc(c: _Call, arr: Value) -> list:
    return _sorted(_list(c, arr), False, c.name)


@_register("SORT_DESC", 1, 1)
def _sort_desc(c: _Call, arr: Value) -> list:
    return _sorted(_list(c, arr), True, c.name)


@_register("UNIQUE DISTINCT", 1, 1)
def _unique(c: _Call, arr: Value) -> list:
    """Distinct values, first occurrence order kept (1 and 1.0 and "1" are distinct)."""
    seen: set[tuple] = set()
    result = []
    key_text = _KeyText(c.name)
    meter.charge_steps(len(_list(c, arr)))  # keyed one by one
    for item in _list(c, arr):
        if isinstance(item, list | dict):
            key: tuple = ("json", key_text(item))
        elif isinstance(item, float):
            key = ("float", repr(item))  # NaN equals NaN, -0.0 is not 0.0 (as their JSON text)
        else:
            key = (type(item).__name__, item)  # text by value: hashing a string is linear and cached
        if key not in seen:
            seen.add(key)
            result.append(item)
    return result


@_register("REVERSE", 1, 1)
def _reverse(c: _Call, value: Value) -> Value:
    if isinstance(value, str):
        return value[::-1]
    items = _list(c, value)
    _ensure_items(c, len(items))  # before the copy
    return list(reversed(items))


@_register("SLICE", 2, 3)
def _slice(c: _Call, value: Value, start: Value, end: Value = None) -> Value:
    """0-based [start, end) slice; negative indexes count from the end."""
    begin = _int(c, start, "start")
    stop = None if end is None else _int(c, end, "end")
    if isinstance(value, str):
        return value[begin:stop]
    return _list(c, value)[begin:stop]


@_register("SPLICE", 2, None)
def _splice(c: _Call, arr: Value, start: Value, count: Value = None, *insert: Value) -> list:
    """SPLICE(arr, start[, count[, item...]]): the array without `count` elements from `start`
    (all of them when count is omitted), with the items inserted there; negative start counts from
    the end. As a statement (`list.splice(k, 1)`) it updates the variable, like PUSH."""
    items = _list(c, arr)
    begin = _int(c, start, "start")
    if begin < 0:
        begin = max(len(items) + begin, 0)
    begin = min(begin, len(items))
    removed = len(items) - begin if count is None else max(_int(c, count, "count"), 0)
    _ensure_items(c, len(items) + len(insert))
    return [*items[:begin], *insert, *items[begin + removed:]]


@_register("HEAD", 1, 2)
def _head(c: _Call, arr: Value, n: Value = None) -> Value:
    """HEAD(arr) = first element (upstream); HEAD(arr, n) = first n elements."""
    items = _list(c, arr)
    if n is None:
        return items[0] if items else None
    return items[: max(_int(c, n, "count"), 0)]


@_register("TAKE", 2, 2)
def _take(c: _Call, arr: Value, n: Value) -> list:
    return _list(c, arr)[: max(_int(c, n, "count"), 0)]


@_register("TAIL", 1, 2)
def _tail(c: _Call, arr: Value, n: Value = None) -> list:
    """TAIL(arr) = all but the first element; TAIL(arr, n) = last n elements."""
    items = _list(c, arr)
    if n is None:
        return items[1:]
    count = max(_int(c, n, "count"), 0)
    return items[len(items) - count :] if count < len(items) else list(items)


@_register("DROP", 2, 2)
def _drop(c: _Call, arr: Value, n: Value) -> list:
    return _list(c, arr)[max(_int(c, n, "count"), 0) :]


@_register("FLATTEN", 1, 1)
def _flatten(c: _Call, arr: Value) -> list:
    """One level of nesting removed (upstream)."""
    result: list = []
    meter.charge_steps(len(_list(c, arr)))  # one by one
    for item in _list(c, arr):
        if isinstance(item, list):
            _ensure_items(c, len(result) + len(item))
            result.extend(item)
        else:
            result.append(item)
    return result


@_register("CONCAT", 1, None)
def _concat(c: _Call, *args: Value) -> Value:
    """Arrays are joined into one array; otherwise the values are concatenated as text."""
    if all(isinstance(a, list) or a is None for a in args) and any(isinstance(a, list) for a in args):
        _ensure_items(c, sum(len(a) for a in args if a))
        return [item for a in args if a for item in a]
    parts = [_text(a) for a in args]
    _ensure_chars(c, sum(len(p) for p in parts))
    return "".join(parts)


@_register("INDEX_OF", 2, 2)
def _index_of(c: _Call, container: Value, value: Value) -> int:
    """0-based index of the value (or substring), -1 when absent."""
    if isinstance(container, str):
        meter.charge_chars(len(container))
        return container.find(_text(value))
    budget = [MAX_COMPARE_STEPS]
    items = _list(c, container)
    for index, item in enumerate(items):
        if _same(item, value, budget):
            meter.charge_steps(index + 1)  # compared one by one
            return index
    meter.charge_steps(len(items))
    return -1


@_register("CONTAINS HAS INCLUDES IN_ARRAY", 2, 2)
def _contains(c: _Call, container: Value, value: Value) -> bool:
    """Array membership, substring of a text (case-sensitive), or key of an object."""
    if container is None:
        return False
    if isinstance(container, list):
        return _index_of(c, container, value) >= 0
    if isinstance(container, dict):
        return _text(value) in container
    text = _text(container)
    meter.charge_chars(len(text))
    return _text(value) in text


@_register("RANGE", 2, 3)
def _range(c: _Call, start: Value, end: Value, step: Value = 1) -> list[int]:
    """Inclusive integer range with optional step (upstream); step 0 gives []."""
    first, last, increment = _int(c, start, "start"), _int(c, end, "end"), _int(c, step, "step")
    if increment == 0:
        return []
    count = max((last - first) // increment + 1, 0)
    _ensure_items(c, count)
    return list(range(first, last + (1 if increment > 0 else -1), increment))


@_register("CHUNK BATCH", 2, 2)
def _chunk(c: _Call, arr: Value, size: Value) -> list[list]:
    items, width = _list(c, arr), _int(c, size, "size")
    if width < 1:
        raise c.error(f"size must be 1 or more, got {width}")
    _ensure_items(c, -(-len(items) // width))  # before the copies
    meter.charge_items(len(items))
    return [items[i : i + width] for i in range(0, len(items), width)]


@_register("FILL", 2, 2)
def _fill(c: _Call, value: Value, count: Value) -> list:
    """FILL(value, count): `count` copies; FILL(rows, template) (a map), written with parentheses, is the data
    transform (apps.basic.dataops.fill), as `FILL rows, template` is."""
    if isinstance(count, dict):
        from apps.basic import dataops  # it imports this module

        return dataops.fill(value, count)
    total = max(_int(c, count, "count"), 0)
    _ensure_items(c, total)
    return [value] * total


# ---------------------------------------------------------------------------------------
# Validation and type tests
# ---------------------------------------------------------------------------------------


@_register("ISEMPTY IS_EMPTY", 1, 1)
def _isempty(c: _Call, value: Value) -> bool:
    """Null, empty text, empty array or empty object."""
    return value is None or (isinstance(value, str | list | dict) and len(value) == 0)


@_register("ISNULL IS_NULL", 1, 1)
def _isnull(c: _Call, value: Value) -> bool:
    return value is None


@_register("NVL IFNULL", 2, 2)
def _nvl(c: _Call, value: Value, default: Value) -> Value:
    """The default when the value is null or the empty text (upstream)."""
    return default if value is None or value == "" else value


@_register("COALESCE", 1, None)
def _coalesce(c: _Call, *args: Value) -> Value:
    return next((a for a in args if a is not None), None)


@_register("IIF", 3, 3)
def _iif(c: _Call, condition: Value, if_true: Value, if_false: Value) -> Value:
    return if_true if is_truthy(condition) else if_false


@_register("CHOOSE", 2, None)
def _choose(c: _Call, index: Value, *choices: Value) -> Value:
    """1-based pick among the choices; null when out of range (VB)."""
    position = _int(c, index, "index")
    return choices[position - 1] if 1 <= position <= len(choices) else None


@_register("TYPEOF TYPENAME", 1, 1)
def _typeof(c: _Call, value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


@_register("ISARRAY IS_ARRAY", 1, 1)
def _isarray(c: _Call, value: Value) -> bool:
    return isinstance(value, list)


@_register("ISOBJECT IS_OBJECT", 1, 1)
def _isobject(c: _Call, value: Value) -> bool:
    return isinstance(value, dict)


@_register("ISSTRING IS_STRING", 1, 1)
def _isstring(c: _Call, value: Value) -> bool:
    return isinstance(value, str)


@_register("ISNUMBER IS_NUMBER", 1, 1)
def _isnumber(c: _Call, value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@_register("ISBOOL IS_BOOL", 1, 1)
def _isbool(c: _Call, value: Value) -> bool:
    return isinstance(value, bool)


# ---------------------------------------------------------------------------------------
# Serialisation, identifiers, logging
# ---------------------------------------------------------------------------------------


@_register("UUID GUID", 0, 0)
def _uuid(c: _Call) -> str:
    """Random version-4 UUID drawn from the context random source (reproducible in tests)."""
    bits = 0
    for _ in range(3):  # 3 x 48 bits from random() cover the 128 bits of a UUID
        bits = (bits << 48) | int(c.ctx.random() * (1 << 48))
    return str(uuid.UUID(int=bits & ((1 << 128) - 1), version=4))


def _check_json(c: _Call, value: Value) -> None:
    """Only JSON values can be serialised (NaN/Infinity are not valid JSON), a value containing
    itself cannot be, and the text must stay within MAX_BUILTIN_RESULT_CHARS."""
    if _json_size(value, MAX_BUILTIN_RESULT_CHARS, {}, set()) > MAX_BUILTIN_RESULT_CHARS:
        raise c.error(f"result would exceed {MAX_BUILTIN_RESULT_CHARS} characters")
    seen: set[int] = set()
    stack = [value]
    walked = 0
    while stack:
        walked += 1
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise c.error(f"cannot encode {item!r} as JSON")
        if isinstance(item, list | dict):
            if id(item) in seen:
                continue  # shared sub-arrays are checked once
            seen.add(id(item))
            stack.extend(item if isinstance(item, list) else item.values())
    meter.charge_steps(walked)  # one by one


@_register("TOJSON TO_JSON JSON_STRINGIFY", 1, 1)
def _tojson(c: _Call, value: Value) -> str:
    _check_json(c, value)
    text = json.dumps(value, ensure_ascii=False, default=str)
    meter.charge_text(len(text))
    return text


@_register("JSON_PARSE PARSE_JSON FROMJSON", 1, 1)
def _json_parse(c: _Call, text: Value) -> Value:
    if not isinstance(text, str):
        return text  # already a value: parsing is the identity, convenient after GET
    meter.charge_text(len(text))
    try:
        return parse_json_text(text)
    except ValueError as exc:
        raise c.error(f"text is not valid JSON ({exc})") from None


def _finite_or_null(text: str) -> float | None:
    number = float(text)
    return number if math.isfinite(number) else None


# A UTF-16 surrogate code point: JSON text may write one as an escape (`"\\ud800"`), and json.loads turns a
# lone one (not half of a pair) into a string that cannot be encoded as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_HINT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")


def parse_json_text(text: str) -> Value:
    """json.loads for script values (JSON_PARSE and the JSON PARSE keyword): NaN, Infinity and numbers past
    the float range (1e999) are not JSON values a database accepts, so they read as null. A lone surrogate
    (`"\\ud800"`) is refused (ValueError): it is not a character, and PostgreSQL cannot store text holding
    one (the saved dialog, a table row), so the failure would come later and elsewhere."""
    value = json.loads(text, parse_constant=lambda name: None, parse_float=_finite_or_null)
    if _SURROGATE_HINT.search(text) and _holds_surrogate(value):
        raise ValueError("it holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not a character")
    return value


def _holds_surrogate(value: Value) -> bool:
    """Does any string (value or key) in the parsed value hold a surrogate? Escaped pairs were joined by
    json.loads, so every one left is lone."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


_YAML_PLAIN_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_ .\-/@()]*")
_YAML_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "~", ""}


def _yaml_scalar(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return value_to_text(value)
    text = str(value)
    if _YAML_PLAIN_RE.fullmatch(text) and text.lower() not in _YAML_RESERVED and text == text.strip():
        return text
    return json.dumps(text, ensure_ascii=False)


class _YamlText:
    """Lines of TOYAML's text, refused as soon as they pass MAX_BUILTIN_RESULT_CHARS. The JSON size checked
    first does not bound the YAML: indentation grows with depth (800 levels of 300 empty strings are 1 MB of
    JSON and 190 MB of YAML), so the text is measured as it is written."""

    def __init__(self, c: _Call) -> None:
        self.c = c
        self.lines: list[str] = []
        self.size = -1  # no newline before the first line

    def add(self, line: str) -> None:
        self.size += len(line) + 1
        if self.size > MAX_BUILTIN_RESULT_CHARS:
            raise self.c.error(f"result would exceed {MAX_BUILTIN_RESULT_CHARS} characters")
        self.lines.append(line)


def _yaml_inline(value: Value) -> str:
    """A scalar or an empty container, on its key's or dash's line."""
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    return _yaml_scalar(value)


def _yaml_write(out: _YamlText, value: Value, indent: int, first: str | None = None) -> None:
    """Write `value` at `indent`; its first line starts with `first` instead (after a list's dash)."""
    head = first if first is not None else "  " * indent
    if isinstance(value, dict | list) and value:
        pad = "  " * indent
        if isinstance(value, dict):
            for key, item in value.items():
                label = _yaml_scalar(str(key))
                if isinstance(item, dict | list) and item:
                    out.add(f"{head}{label}:")
                    _yaml_write(out, item, indent + 1)
                else:
                    out.add(f"{head}{label}: {_yaml_inline(item)}")
                head = pad
        else:
            for item in value:
                if isinstance(item, dict | list) and item:
                    _yaml_write(out, item, indent + 1, f"{head}- ")
                else:
                    out.add(f"{head}- {_yaml_inline(item)}")
                head = pad
        return
    out.add(head + _yaml_inline(value))


@_register("TOYAML TO_YAML", 1, 1)
def _toyaml(c: _Call, value: Value) -> str:
    """Block-style YAML, used by templates to put records into prompts readably."""
    _check_json(c, value)
    out = _YamlText(c)
    try:
        _yaml_write(out, value, 0)
    finally:
        meter.charge_steps(len(out.lines))  # written line by line
    return "\n".join(out.lines)


def clipped_text(values: Iterable[Value], separator: str, limit: int,
                 text: Callable[[Value], str] = value_to_text) -> str:
    """`separator.join(text(v) for v in values)[:limit]`, converting and copying only what fits: a log line of
    150 arguments of 8 million characters was joined whole (a second and a gigabyte) and then cut."""
    pieces: list[str] = []
    room = limit
    for index, value in enumerate(values):
        if index:
            pieces.append(separator[:room])
            room -= len(separator)
        if room <= 0:
            break
        piece = text(value)
        pieces.append(piece[:room])
        room -= len(piece)
    return "".join(pieces)


def _logger(level: int) -> Callable[..., None]:
    def builtin(c: _Call, *args: Value) -> None:
        logger.log(level, "script: %s", clipped_text(args, " ", MAX_LOG_MESSAGE_CHARS))

    return builtin


_register("LOG_DEBUG", 1, None)(_logger(logging.DEBUG))
_register("LOG_INFO", 1, None)(_logger(logging.INFO))
_register("LOG_WARN LOG_WARNING", 1, None)(_logger(logging.WARNING))
_register("LOG_ERROR", 1, None)(_logger(logging.ERROR))


def builtin_names() -> Iterable[str]:
    """Every registered name, sorted (handy for the compiler's "unknown function" message)."""
    return sorted(BUILTINS)
