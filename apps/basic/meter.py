"""Work metering: how values and builtins, which know nothing of the VM, charge the run that uses them.

The VM counts instructions and looks at its budget and clock every CLOCK_CHECK_INTERVAL of them, but one
instruction can do a lot of work (a SORT of 100 000 items, `=` on two large arrays, a map lookup that lowers
every key), so 4096 such instructions ran for minutes past the limits. An operation whose cost grows with
its operands calls `charge_*` with the work it does; the running VM adds the units to its instruction count
and looks at the budget and the clock as soon as they add up to CLOCK_CHECK_INTERVAL (`VM.charge`), so the
limit error comes after at most one such operation. Rates are in `limits.py` (WORK_*).

The VM installs its `Meter` for the duration of a run slice in a context variable (per thread and per
asyncio task: concurrent turns of a web process each see their own). Outside a run (compile-time constant
folding, tests calling builtins directly) charging does nothing and nothing is cached.

The same way, `hold(value)` tells the running VM that the engine just built a large value (a long text, a big
array or map), which the VM counts in the memory the run holds while the value exists (apps/basic/memory.py).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar

from apps.basic.limits import (
    HELD_TRACKED_ITEMS,
    HELD_TRACKED_TEXT_CHARS,
    LOWER_KEY_INDEX_MAPS,
    LOWER_KEY_INDEX_MIN_KEYS,
    MIN_CHARGED_STEPS,
    WORK_CHARS_PER_UNIT,
    WORK_ITEMS_PER_UNIT,
    WORK_TEXT_CHARS_PER_UNIT,
)


class Meter:
    """The running VM's side: `charge(units)`, `hold(value)`, the run's memory gauge (a CALLed script's VM
    starts from its caller's), the run itself (`run`: a CALLed script's VM runs on its caller's instruction
    budget and clock) and the per-run cache of lower-case key indexes."""

    __slots__ = ("charge", "hold", "gauge", "run", "lower_keys")

    def __init__(self, charge: Callable[[int], None], hold: Callable[[object], None] | None = None,
                 gauge: object = None, run: object = None) -> None:
        self.charge = charge
        self.hold = hold
        self.gauge = gauge
        self.run = run
        # id(map) -> (map, its length and last key when indexed, {lower-case key: first key}). The map is held
        # so its id cannot be reused while cached; at most LOWER_KEY_INDEX_MAPS maps are.
        self.lower_keys: dict[int, tuple[dict, int, object, dict[str, str]]] = {}


_current: ContextVar[Meter | None] = ContextVar("apps.basic.meter", default=None)


def install(meter: Meter | None) -> object:
    """Make `meter` the current one; returns the token for `uninstall`."""
    return _current.set(meter)


def uninstall(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


def current() -> Meter | None:
    """The running VM's meter (None outside a run)."""
    return _current.get()


def hold(value: object) -> None:
    """`value` was just built by the engine: if it is large (a text of HELD_TRACKED_TEXT_CHARS characters or more,
    an array or map of HELD_TRACKED_ITEMS items or more), the running VM counts it in the memory the run holds for
    as long as it exists, stored or not, and may end the run with the memory limit error."""
    kind = type(value)
    if kind is str:
        if len(value) < HELD_TRACKED_TEXT_CHARS:  # type: ignore[arg-type]
            return
    elif (kind is not list and kind is not dict) or len(value) < HELD_TRACKED_ITEMS:  # type: ignore[arg-type]
        return
    meter = _current.get()
    if meter is not None and meter.hold is not None:
        meter.hold(value)


def charge(units: int) -> None:
    """Charge `units` (one unit is about one simple instruction's work) to the running VM."""
    if units > 0:
        meter = _current.get()
        if meter is not None:
            meter.charge(units)


def charge_steps(count: int) -> None:
    """Elements visited one by one by the engine's own Python code: a unit each (a few are part of the
    instruction's own unit, and not worth a call)."""
    if count >= MIN_CHARGED_STEPS:
        charge(count)


def charge_items(count: int) -> None:
    """Elements copied or scanned by Python's C code (slices, concatenation, list building)."""
    if count >= WORK_ITEMS_PER_UNIT:
        charge(count // WORK_ITEMS_PER_UNIT)


def charge_chars(count: int) -> None:
    """Characters copied or searched at memory speed (string concatenation, find)."""
    if count >= WORK_CHARS_PER_UNIT:
        charge(count // WORK_CHARS_PER_UNIT)


def charge_text(count: int) -> None:
    """Characters of JSON or YAML written or parsed (an encoder's work per character)."""
    if count >= WORK_TEXT_CHARS_PER_UNIT:
        charge(count // WORK_TEXT_CHARS_PER_UNIT)


def key_like(mapping: dict, name: str) -> str | None:
    """The first key of `mapping` (in order) whose lower case is `name`, for the case-insensitive member
    access of maps (identifiers are case-insensitive). Callers have looked `name` up exactly already.

    Scanning every key on each miss made a loop of misses on a map of a million keys take 27 ms per
    instruction; a large map's index (keys that are not lower case already, by their lower case) is built
    once per run and extended when keys were added (maps only grow inside the engine: keys are never
    removed, and new ones come last, so the new keys are the last ones in order)."""
    meter = _current.get() if len(mapping) >= LOWER_KEY_INDEX_MIN_KEYS else None
    if meter is None:
        for key in mapping:
            if key.lower() == name:
                return key
        return None
    return _lower_key_index(meter, mapping).get(name)


def _lower_key_index(meter: Meter, mapping: dict) -> dict[str, str]:
    cache = meter.lower_keys
    size = len(mapping)
    last = next(reversed(mapping))
    entry = cache.get(id(mapping))
    if entry is not None and entry[0] is mapping:
        _, indexed, indexed_last, index = entry
        if indexed == size and indexed_last == last:
            return index
        if indexed < size:
            # The keys added since, newest first; the one before them must be the last key indexed.
            added = []
            keys = reversed(mapping)
            for _ in range(size - indexed):
                added.append(next(keys))
            if next(keys, None) == indexed_last:
                charge_items(len(added))
                for key in reversed(added):
                    low = key.lower()
                    if low != key:
                        index.setdefault(low, key)
                cache[id(mapping)] = (mapping, size, last, index)
                return index
    index = {}
    for key in mapping:
        low = key.lower()
        if low != key:
            index.setdefault(low, key)
    charge_steps(size)  # lower-cased one by one
    cache.pop(id(mapping), None)
    if len(cache) >= LOWER_KEY_INDEX_MAPS:
        del cache[next(iter(cache))]  # the oldest
    cache[id(mapping)] = (mapping, size, last, index)
    return index
