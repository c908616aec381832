"""Operators on BASIC values (plain JSON values: None, bool, int, float, str, list, dict).

Semantics chosen from spec 3.2 and what the templates rely on:
* `+` concatenates as soon as one side is a string (`"Total: " + 10`), adds numbers, joins arrays;
  null counts as "" next to a string and 0 next to a number.
* `=` compares a number with numeric text by value (`IF choice = 1` after a HEAR), null equals
  null and "", everything else by type and value (text comparison is case-sensitive, as VB's default).
* Member access is case-insensitive on map keys (identifiers are case-insensitive) and on an array
  reads the first element's field, because FIND returns a list used as a record (spec 3.11 #4).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable

from apps.basic import meter
from apps.basic.builtins import MAX_COMPARE_STEPS, MAX_NUMBER_TEXT_CHARS, deep_equal, is_truthy
from apps.basic.builtins import value_to_text as _scalar_text
from apps.basic.errors import BasicRuntimeError, LimitExceeded
from apps.basic.limits import (
    LIKE_STEPS_PER_UNIT,
    MAX_ARRAY_ITEMS,
    MAX_INTEGER_BITS,
    MAX_MAP_KEYS,
    MAX_STRING_CHARS,
    MAX_VALUE_DEPTH,
    WORK_CHARS_PER_UNIT,
)

__all__ = ["is_truthy", "value_to_text", "bounded_json"]

# Integers beyond this many bits become floats, as in VB (Double); Python ints would grow without bound.
MAX_INT_BITS = MAX_INTEGER_BITS
# Integers strictly between these keep integer arithmetic; beyond, a result becomes a float (see _bounded).
INT_BOUND = 1 << MAX_INT_BITS


class ValueTooDeep(LimitExceeded):
    """A value nests arrays/maps deeper than MAX_VALUE_DEPTH."""

    def __init__(self) -> None:
        super().__init__(f"value nested deeper than {MAX_VALUE_DEPTH} levels")


def bounded_json(value: object, limit: int = MAX_STRING_CHARS, wrapping: int = 0, strict: bool = False) -> str:
    """json.dumps that stops as soon as the text passes `limit` characters.

    Arrays can share elements (`a = [a, a]` twenty times), so a small value in memory can be huge as
    text; encoding lazily and stopping early keeps TALK, interpolation and state saving bounded.
    Nesting past MAX_VALUE_DEPTH is refused (ValueTooDeep) before the encoder recurses; `wrapping` is the
    number of the caller's own container levels above the script's values (a saved state's frames).
    `strict`: NaN and infinite numbers are a ValueError (for JSON that a database must accept).
    """
    if _text_size(value, limit, {}, -wrapping)[0] > limit:
        raise LimitExceeded(f"value larger than {limit} characters as text")
    return json.dumps(value, ensure_ascii=False, default=str, allow_nan=not strict)


# A size no real value reaches: _text_size reports a container inside itself as bigger than its limit.
_UNLIMITED = 1 << 62


def check_depth(value: object) -> None:
    """Refuse a value that cannot leave the VM as JSON: nested deeper than MAX_VALUE_DEPTH (ValueTooDeep) or
    containing itself (LimitExceeded). Its size is not limited here."""
    if _text_size(value, _UNLIMITED, {}, 0)[0] > _UNLIMITED:
        raise LimitExceeded("value contains itself")


def _text_size(value: object, limit: int, seen: dict[int, tuple[int, int]], depth: int) -> tuple[int, int]:
    """Approximate JSON length and nesting height, memoised per container so shared sub-arrays cost one
    visit (their height is kept too: a shared array reached deeper still counts its full depth)."""
    t = type(value)
    if t is str:
        return len(value) + 2, 0  # type: ignore[arg-type]
    if t is list or t is dict:
        key = id(value)
        if key in seen:
            size, height = seen[key]
            if depth + height > MAX_VALUE_DEPTH:
                raise ValueTooDeep()
            return size, height
        if depth >= MAX_VALUE_DEPTH:
            raise ValueTooDeep()
        seen[key] = (limit + 1, 0)  # a container inside itself can never be encoded
        total, height = 2, 0
        items = value.items() if t is dict else ((None, v) for v in value)  # type: ignore[union-attr]
        for k, v in items:
            size, inner = _text_size(v, limit, seen, depth + 1)
            total += (len(k) + 4 if k is not None else 1) + size
            height = max(height, inner)
            if total > limit:
                break
        seen[key] = (total, height + 1)
        return total, height + 1
    return 8, 0


def value_to_text(value: object) -> str:
    """BASIC text of a value (builtins' rules); arrays and maps as bounded JSON."""
    if type(value) is list or type(value) is dict:
        text = bounded_json(value)
        meter.charge_text(len(text))
        meter.hold(text)
        return text
    return _scalar_text(value)

_NUMERIC = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")


def describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value if len(value) <= 30 else value[:27] + "...")
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a map"
    return value_to_text(value)


def as_number(value: object, what: str = "value") -> int | float:
    """Numeric view of a value for arithmetic; numeric text is accepted, anything else is an error."""
    if type(value) is int or type(value) is float:
        return value  # type: ignore[return-value]
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        text = value.strip()
        if len(text) > MAX_NUMBER_TEXT_CHARS:  # as builtins: int() refuses 4300+ digits, and big-int parsing is slow
            raise BasicRuntimeError(f"number text too long in {what} ({len(text)} characters)")
        if not any(c in text for c in ".eE"):
            return int(text)
        number = float(text)
        if not math.isfinite(number):  # "11e308" (a concatenation of numbers) is past the largest float
            raise BasicRuntimeError(f"number too large in {what}: {describe(value)}")
        return number
    raise BasicRuntimeError(f"cannot use {describe(value)} as a number in {what}")


def _numeric_text(value: object) -> int | float | None:
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        text = value.strip()
        if len(text) > MAX_NUMBER_TEXT_CHARS:
            return None  # compared as text, like the builtins
        return float(text) if any(c in text for c in ".eE") else int(text)
    return None


def join_text(values: Iterable[object], separator: str = "") -> str:
    """The values' text joined, refused as soon as the total passes MAX_STRING_CHARS (before joining: a string
    interpolation or LLM prompt of many 8-million-character texts was built whole and then refused)."""
    pieces: list[str] = []
    total = -len(separator)
    for value in values:
        piece = value if type(value) is str else value_to_text(value)
        total += len(piece) + len(separator)
        if total > MAX_STRING_CHARS:
            raise LimitExceeded(f"string longer than {MAX_STRING_CHARS} characters")
        pieces.append(piece)
    return check_text(separator.join(pieces))


def check_text(text: str) -> str:
    if len(text) > MAX_STRING_CHARS:
        raise LimitExceeded(f"string longer than {MAX_STRING_CHARS} characters")
    if len(text) >= WORK_CHARS_PER_UNIT:  # it was just built (tested here: this is on every concatenation)
        meter.charge_chars(len(text))
        meter.hold(text)  # counted in the run's memory while it exists (apps/basic/memory.py)
    return text


def add(a: object, b: object) -> object:
    ta, tb = type(a), type(b)
    if (ta is int or ta is float) and (tb is int or tb is float):
        return bounded(a + b)  # type: ignore[operator]
    if ta is str or tb is str:
        return check_text(value_to_text(a) + value_to_text(b))
    if ta is list and tb is list:
        if len(a) + len(b) > MAX_ARRAY_ITEMS:  # type: ignore[arg-type]
            raise LimitExceeded(f"array longer than {MAX_ARRAY_ITEMS} items")
        meter.charge_items(len(a) + len(b))  # type: ignore[arg-type]
        joined = a + b  # type: ignore[operator]
        meter.hold(joined)
        return joined
    if ta is list:
        _room_in_array(a)  # type: ignore[arg-type]
        meter.charge_items(len(a))  # type: ignore[arg-type]
        joined = [*a, b]  # type: ignore[misc]
        meter.hold(joined)
        return joined
    if ta is dict and tb is dict:
        meter.charge_items(len(a) + len(b))  # type: ignore[arg-type]
        merged = {**a, **b}  # type: ignore[dict-item]
        if len(merged) > MAX_MAP_KEYS:
            raise LimitExceeded(f"map with more than {MAX_MAP_KEYS} keys")
        meter.hold(merged)
        return merged
    if a is None and b is None:
        return None
    return bounded(as_number(a, "'+'") + as_number(b, "'+'"))


def _room_in_array(items: list) -> None:
    if len(items) >= MAX_ARRAY_ITEMS:
        raise LimitExceeded(f"array longer than {MAX_ARRAY_ITEMS} items")


def _room_in_map(mapping: dict) -> None:
    if len(mapping) >= MAX_MAP_KEYS:
        raise LimitExceeded(f"map with more than {MAX_MAP_KEYS} keys")


def concat(a: object, b: object) -> str:
    return check_text(value_to_text(a) + value_to_text(b))


def sub(a: object, b: object) -> object:
    return bounded(as_number(a, "'-'") - as_number(b, "'-'"))


def bounded(n: int | float) -> int | float:
    """An arithmetic result within the language's numbers: an integer past 64 bits becomes a float (repeated
    doubling used to grow integers without end, until saving the state failed in Python), and a float past the
    float range is the error "number too large"."""
    if type(n) is int and n.bit_length() > MAX_INT_BITS:
        try:
            return float(n)
        except OverflowError:  # an integer past the float range (from JSON, say): 10^400 + 1
            raise BasicRuntimeError("number too large") from None
    if type(n) is float and not math.isfinite(n):
        raise BasicRuntimeError("number too large")
    return n


def mul(a: object, b: object) -> object:
    if isinstance(a, str) and type(b) is int and _numeric_text(a) is None:
        raise BasicRuntimeError(f"cannot multiply text {describe(a)}")
    return bounded(as_number(a, "'*'") * as_number(b, "'*'"))


def div(a: object, b: object) -> object:
    x, y = as_number(a, "'/'"), as_number(b, "'/'")
    if y == 0:
        raise BasicRuntimeError("division by zero")
    if type(x) is int and type(y) is int and x % y == 0:
        return x // y
    return x / y


def intdiv(a: object, b: object) -> object:
    x, y = as_number(a, "'\\'"), as_number(b, "'\\'")
    if y == 0:
        raise BasicRuntimeError("division by zero")
    if type(x) is int and type(y) is int:  # exact, however large (x / y would overflow a float)
        quotient = abs(x) // abs(y)
        return quotient if (x < 0) == (y < 0) else -quotient
    result = x / y
    if not math.isfinite(result):
        raise BasicRuntimeError("'\\' result is too large")
    return int(result)


def mod(a: object, b: object) -> object:
    x, y = as_number(a, "MOD"), as_number(b, "MOD")
    if y == 0:
        raise BasicRuntimeError("division by zero in MOD")
    if type(x) is float or type(y) is float:
        return math.fmod(x, y)
    remainder = abs(x) % abs(y)  # exact: math.fmod went through floats (9007199254740993 MOD 2 gave 0)
    return -remainder if x < 0 else remainder  # the sign of the dividend (VB)


# Bits of an integer power past which the result cannot be held even as a float (2^1024 > largest double).
MAX_POWER_BITS = 1024


def power(a: object, b: object) -> object:
    x, y = as_number(a, "'^'"), as_number(b, "'^'")
    # Size the result before computing it: 3 ^ 30000000 is a 48-million-bit integer that took
    # seconds to build, only to be refused afterwards.
    if type(x) is int and type(y) is int and y > 0 and abs(x) > 1 and y * math.log2(abs(x)) > MAX_POWER_BITS + 1:
        raise BasicRuntimeError("'^' result is too large")
    try:
        result = x ** y
    except (OverflowError, ZeroDivisionError) as exc:
        raise BasicRuntimeError(f"'^' cannot compute {x} ^ {y}") from exc
    if isinstance(result, complex):
        raise BasicRuntimeError(f"'^' cannot compute {x} ^ {y}")
    if type(result) is int and result.bit_length() > MAX_POWER_BITS:
        raise BasicRuntimeError("'^' result is too large")
    return bounded(result)


def neg(a: object) -> object:
    return -as_number(a, "'-'")


def equals(a: object, b: object, budget: list[int] | None = None) -> bool:
    """`=`; arrays and maps compare by value with bounded work (`deep_equal`), sharing `budget` if given."""
    if a is None or b is None:
        return (a is None or a == "") and (b is None or b == "")
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        if ta is tb:
            return a == b
        other = b if ta is bool else a
        flag = a if ta is bool else b
        if isinstance(other, str):
            return other.strip().lower() == ("true" if flag else "false")
        return False
    if (ta is int or ta is float) and tb is str:
        n = _numeric_text(b)
        return n is not None and n == a
    if ta is str and (tb is int or tb is float):
        n = _numeric_text(a)
        return n is not None and n == b
    return deep_equal(a, b, budget)


def _ordered(a: object, b: object, op: str) -> tuple[object, object]:
    ta, tb = type(a), type(b)
    if (ta is int or ta is float) and (tb is int or tb is float):
        return a, b
    if a is None:
        a = 0 if (tb is int or tb is float) else ""
    if b is None:
        b = 0 if (ta is int or ta is float) else ""
    ta, tb = type(a), type(b)
    if (ta is int or ta is float) and tb is str:
        n = _numeric_text(b)
        if n is not None:
            return a, n
    if ta is str and (tb is int or tb is float):
        n = _numeric_text(a)
        if n is not None:
            return n, b
    if ta is str and tb is str:
        return a, b
    if ta is bool and tb is bool:
        return int(a), int(b)  # type: ignore[arg-type]
    if (ta is int or ta is float or ta is bool) and (tb is int or tb is float or tb is bool):
        return a, b
    raise BasicRuntimeError(f"cannot compare {describe(a)} {op} {describe(b)}")


def less(a: object, b: object) -> bool:
    x, y = _ordered(a, b, "<")
    return x < y  # type: ignore[operator]


def less_eq(a: object, b: object) -> bool:
    x, y = _ordered(a, b, "<=")
    return x <= y  # type: ignore[operator]


def contains(container: object, item: object) -> bool:
    """`item IN container` / `container CONTAINS item`."""
    if container is None:
        return False
    if isinstance(container, str):
        if len(container) >= WORK_CHARS_PER_UNIT:
            meter.charge_chars(len(container))
        return value_to_text(item) in container
    if isinstance(container, list):
        budget = [MAX_COMPARE_STEPS]  # one bound for the whole membership test
        for visited, x in enumerate(container, 1):
            if equals(x, item, budget):
                meter.charge_steps(visited)  # compared one by one
                return True
        meter.charge_steps(len(container))
        return False
    if isinstance(container, dict):
        key = value_to_text(item)
        low = key.lower()
        return key in container or low in container or meter.key_like(container, low) is not None
    raise BasicRuntimeError(f"IN needs a text, an array or a map, not {describe(container)}")


# Longest LIKE pattern: patterns are written by hand and real ones are a few dozen characters.
MAX_LIKE_PATTERN_CHARS = 1_000

# Character comparisons one LIKE may need in the worst case. A segment between two `%` that contains
# `_` is searched position by position at up to its length per position (`%a_a_a_b%` over "aaaa…"),
# so its length times the text length is refused past this; ~0.5 s of regex matching. Segments
# without `_` use str.find, which is linear.
MAX_LIKE_STEPS = 200_000_000


def like(text: object, pattern: object) -> bool:
    """SQL-style LIKE: `%` any run, `_` one character; case-insensitive.

    Not a regex with `.*` (backtracking is exponential in the number of `%`: 45 characters against
    `%a%a%a%a%a%a%a%a%b` took 39 s). Between two `%` a segment matches a fixed number of characters, so
    taking each segment at its leftmost place after the previous one is enough: if any match exists,
    that one does. The first segment is anchored at the start, the last at the end.
    """
    subject, pat = _fold(value_to_text(text)), _fold(value_to_text(pattern))
    if len(pat) > MAX_LIKE_PATTERN_CHARS:
        raise LimitExceeded(f"LIKE pattern longer than {MAX_LIKE_PATTERN_CHARS} characters")
    meter.charge_chars(len(subject))  # lower-cased and searched
    segments = pat.split("%")
    if len(segments) == 1:
        return len(subject) == len(pat) and _segment_at(subject, pat, 0)
    first, *middle, last = segments
    if len(first) + len(last) > len(subject) or not _segment_at(subject, first, 0):
        return False
    pos, end = len(first), len(subject) - len(last)
    worst = len(subject) * sum(len(seg) for seg in middle if "_" in seg)
    if worst > MAX_LIKE_STEPS:
        raise LimitExceeded(f"LIKE pattern with '_' between '%' is too costly on a text of {len(subject)} "
                            "characters")
    meter.charge(worst // LIKE_STEPS_PER_UNIT)
    for seg in middle:
        if not seg:
            continue
        found = _segment_find(subject, seg, pos, end)
        if found < 0:
            return False
        pos = found + len(seg)
    return pos <= end and _segment_at(subject, last, end)


def _fold(text: str) -> str:
    """Lower case, one character for one character (`_` counts characters, so the length must not change)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _segment_at(subject: str, seg: str, pos: int) -> bool:
    if "_" not in seg:
        return subject.startswith(seg, pos)
    return _segment_regex(seg).match(subject, pos) is not None


def _segment_find(subject: str, seg: str, start: int, end: int) -> int:
    """Leftmost place >= start where `seg` fits before `end`, or -1."""
    if "_" not in seg:
        return subject.find(seg, start, end)
    found = _segment_regex(seg).search(subject, start, end)
    return found.start() if found is not None else -1


def _segment_regex(seg: str) -> re.Pattern[str]:
    # No quantifiers: the regex engine tries each position once, at most len(seg) steps per position.
    return re.compile("".join("." if c == "_" else re.escape(c) for c in seg), re.DOTALL)


def get_member(obj: object, name: str) -> object:
    if type(obj) is dict:
        if name in obj:
            return obj[name]
        key = meter.key_like(obj, name)  # identifiers are case-insensitive
        return None if key is None else obj[key]
    if obj is None:
        return None
    if type(obj) is list:
        if name in ("length", "count", "size"):
            return len(obj)
        return get_member(obj[0], name) if obj else None
    if isinstance(obj, str) and name in ("length", "len"):
        return len(obj)
    raise BasicRuntimeError(f"cannot read field '{name}' of {describe(obj)}")


def set_member(obj: object, name: str, value: object) -> None:
    if type(obj) is list and obj and type(obj[0]) is dict:
        obj = obj[0]
    if type(obj) is not dict:
        raise BasicRuntimeError(f"cannot set field '{name}' on {describe(obj)}")
    if name not in obj:
        key = meter.key_like(obj, name)
        if key is not None:
            obj[key] = value
            return
        _room_in_map(obj)
    obj[name] = value


def _as_index(index: object) -> int:
    number = as_number(index, "an index")
    if type(number) is float and not math.isfinite(number):
        raise BasicRuntimeError(f"index must be a finite number, not {describe(number)}")
    return int(number)


def get_index(obj: object, index: object) -> object:
    if type(obj) is list:
        i = index if type(index) is int else _as_index(index)
        if -len(obj) <= i < len(obj):
            return obj[i]
        return None
    if type(obj) is dict:
        return get_member(obj, value_to_text(index)) if not isinstance(index, str) or index not in obj \
            else obj[index]
    if isinstance(obj, str):
        i = _as_index(index)
        return obj[i] if -len(obj) <= i < len(obj) else ""
    if obj is None:
        return None
    raise BasicRuntimeError(f"cannot index {describe(obj)}")


def set_index(obj: object, index: object, value: object) -> None:
    if type(obj) is list:
        i = _as_index(index)
        if i == len(obj):  # `arr[UBOUND(arr) + 1] = x` appends, as templates expect
            _room_in_array(obj)
            obj.append(value)
            return
        if not -len(obj) <= i < len(obj):
            raise BasicRuntimeError(f"index {i} is outside the array (size {len(obj)})")
        obj[i] = value
        return
    if type(obj) is dict:
        key = value_to_text(index)
        if key not in obj:
            _room_in_map(obj)
        obj[key] = value
        return
    raise BasicRuntimeError(f"cannot set an element of {describe(obj)}")
