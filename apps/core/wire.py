"""JSON from clients (REST bodies, WebSocket frames): numbers that are numbers, text that is text.

Python's json module takes `1e400` as infinity and `NaN` / `Infinity` as floats, and keeps `"\\ud800"` as a lone
surrogate: the first reach int() as OverflowError or ValueError far from the parse, the last fails only when
PostgreSQL is asked to store it (UnicodeEncodeError), after part of the work is done. Refused here, at the
parse, as the malformed input they are.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator

_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


class WireError(ValueError):
    """Client JSON that is well-formed but not acceptable (a non-finite number, a lone surrogate)."""


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise WireError(f"number {text[:40]} is out of range")
    return number


def _no_constant(name: str) -> float:
    raise WireError(f"{name} is not a number JSON allows")


def iter_strings(value: object) -> Iterator[str]:
    """Every string in a JSON-like value, dict keys included; iterative, for any depth."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


def contains_nul(value: object) -> bool:
    """Whether a JSON-like value holds a NUL character anywhere (PostgreSQL stores none in text or jsonb)."""
    return any("\x00" in text for text in iter_strings(value))


NUL_REPLACEMENT = "\ufffd"


def nul_replaced(value: object) -> object:
    """`value` (JSON-like) with every NUL character in its strings (keys too) replaced by U+FFFD; the value
    itself when it holds none. The same types as iter_strings walks."""
    if not contains_nul(value):
        return value

    def replaced(item: object) -> object:
        if isinstance(item, str):
            return item.replace("\x00", NUL_REPLACEMENT)
        if isinstance(item, dict):
            return {replaced(k): replaced(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [replaced(v) for v in item]
        return item

    return replaced(value)


def _checked(value: object) -> object:
    """`value` with every string checked for lone surrogates (keys too)."""
    if any(_LONE_SURROGATE.search(text) for text in iter_strings(value)):
        raise WireError("text holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)")
    return value


def json_loads(raw: str | bytes) -> object:
    """json.loads, refusing non-finite numbers and lone surrogates with WireError (a ValueError, as every
    other malformed input raises)."""
    try:
        parsed = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError:  # `[[[[...` thousands deep: the parser gives up; not a crash of the caller
        raise WireError("JSON nested too deeply") from None
    return _checked(parsed)
