"""The memory a run holds, bounded by limits.MAX_HELD_BYTES (the VM's `max_memory`; apps/basic/README.md).

What is bounded is what the run *holds*, not what it allocated: a loop building and dropping big texts holds
one at a time. Held are the values reachable from the run's frames (variables, FOR EACH copies, SELECT subjects,
RETURN values on their way to the caller), its RETURN value, the pending HEAR, SET HEADER headers and the meter's
per-run key indexes; the large values it built that still exist anywhere (the operands of the statement being
evaluated, an array literal being filled, a value the host keeps); and, for a script run by CALL, its caller's.

Measuring (`held_bytes`) walks those values: every array and map once however many places refer to it, its
`sys.getsizeof` plus its items; a text by its size (a byte a character when ASCII, else `sys.getsizeof`), once
when it has HELD_SHARED_TEXT_CHARS characters or more, else at every place that holds it; a number
NUMBER_BYTES (small integers, which CPython shares, and None and booleans nothing beyond their slot); a map's
keys in every map that has them, at a byte a character. A measure is charged to the run's budget (a unit per
HELD_WALK_ITEMS_PER_UNIT elements visited) and stops as soon as the total passes the limit.

Measuring on every instruction would be far too slow, so the VM keeps an estimate meant never to be below what
the run holds (`Gauge.estimate`) and measures only when the estimate passes the limit: the last measure, plus
the bytes of the values built since that are large enough to be tracked (texts of HELD_TRACKED_TEXT_CHARS
characters or more and arrays/maps of HELD_TRACKED_ITEMS items or more, told by the engine as it builds them:
concatenation, builtins' results, JSON text; values from the host, measured whole when they arrive), plus
HELD_BYTES_PER_INSTRUCTION per instruction and HELD_BYTES_PER_WORK_UNIT per unit of charged work since. Tracked
values are looked at as soon as they are built, the rest at the VM's limit checks (every CLOCK_CHECK_INTERVAL
steps). A script holding little is measured about every (limit / 1 KiB) instructions, in microseconds; a script
holding N elements pays about N / HELD_WALK_ITEMS_PER_UNIT units per measure, at most every (limit - held) / 1 KiB
instructions (a 10 000-row table, 70 000 elements, held through a long loop: ~11% more units).

A tracked value is counted while it exists, stored or not: its entry here holds it, and Python's reference count
tells whether anything else still does (`prune`). Entries nothing else holds are dropped before every measure and
whenever HELD_PRUNE_BYTES (or a quarter of the tracked bytes) more were tracked: the most garbage the gauge keeps
alive.

Error bounds. The run ends at the first measure past the limit; it can hold more only by what the estimate
misses: (1) untracked values built faster than the assumed rates (one statement building many texts just under
HELD_TRACKED_TEXT_CHARS characters, or texts of characters beyond Latin-1 at two or four bytes each, or many
literal maps): the run passes the limit by at most (actual rate / assumed rate - 1) times the room left at the
last measure before it is measured; (2) untracked operands of the statement being evaluated, seen once stored;
(3) the estimated growth between two limit checks (CLOCK_CHECK_INTERVAL instructions and work units: up to
12 MiB); (4) what
`getsizeof` does not say (allocator rounding) and non-ASCII map keys (counted a byte a character); (5) the values
a slice starts with (a resumed state, at most MAX_STATE_BYTES of JSON, and the arguments) count from the first
measure. It may count more than is held: texts under HELD_SHARED_TEXT_CHARS shared by many places (at most ~300
bytes per extra place), a map's keys shared by many maps (a table's rows share their column names), numbers shared
by many places, and tracked values kept alive only by Python's cycle collector not having run yet.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from apps.basic.limits import (
    HELD_BYTES_PER_INSTRUCTION,
    HELD_BYTES_PER_WORK_UNIT,
    HELD_PRUNE_BYTES,
    HELD_SHARED_TEXT_CHARS,
    HELD_TRACKED_ITEMS,
    HELD_TRACKED_TEXT_CHARS,
)

# Bytes counted for a number (a Python int or float object is 24-32 bytes; CPython shares -5..256, not counted).
NUMBER_BYTES = 32
# Bytes of an ASCII text beyond its characters (CPython's header and terminating NUL).
_ASCII_TEXT_OVERHEAD = sys.getsizeof("")

# A host's array or map whose content takes this much is tracked like a large one (a few rows of long texts).
TRACKED_CONTAINER_BYTES = 64 * 1024

_getsizeof = sys.getsizeof
_getrefcount = sys.getrefcount


def text_bytes(text: str) -> int:
    """Memory of a text: one byte a character when ASCII (most text; O(1) to tell), else what CPython says."""
    return _ASCII_TEXT_OVERHEAD + len(text) if text.isascii() else _getsizeof(text)


def held_bytes(roots: list, limit: int) -> tuple[int, int]:
    """Estimated bytes of the values reachable from `roots`, and the elements visited; stops once the total
    passes `limit` (the caller refuses the run then, so the rest need not be walked)."""
    seen: set[int] = set()  # ids of the arrays, maps and long texts counted
    total = visited = 0
    stack = [roots]
    while stack:
        value = stack.pop()
        if value:  # an empty container holds nothing and may be counted at each place
            key = id(value)
            if key in seen:
                continue
            seen.add(key)
        total += _getsizeof(value)
        visited += len(value)
        if type(value) is dict:
            # The keys: texts, counted in every map that has them, at a byte a character (sys.getsizeof of each was
            # most of the time of walking a table of rows).
            try:
                total += len(value) * _ASCII_TEXT_OVERHEAD + sum(map(len, value))
            except TypeError:  # a key that is not a text (not from a script; a host's map)
                total += sum(map(_getsizeof, value))
            value = value.values()
        for item in value:
            kind = type(item)
            if kind is str:
                if len(item) >= HELD_SHARED_TEXT_CHARS:
                    key = id(item)
                    if key in seen:
                        continue
                    seen.add(key)
                total += _ASCII_TEXT_OVERHEAD + len(item) if item.isascii() else _getsizeof(item)
            elif kind is list or kind is dict:
                stack.append(item)
            elif kind is int:
                if not -5 <= item <= 256:  # CPython shares the small ones (FILL(0, n) holds one zero)
                    total += NUMBER_BYTES
            elif kind is float:
                total += NUMBER_BYTES
            # None and booleans are shared objects: their slot in the container is all they take
        if total > limit:
            break
    return total, visited


def value_bytes(value: object, limit: int) -> tuple[int, int]:
    """`held_bytes` of one value of any type."""
    kind = type(value)
    if kind is str:
        return text_bytes(value), 0  # type: ignore[arg-type]
    if kind is list or kind is dict:
        return held_bytes([value], limit)
    if kind is int or kind is float:
        return NUMBER_BYTES, 0
    return 0, 0


def is_large(value: object, size: int) -> bool:
    """Whether a value of `size` bytes is tracked while it exists (rather than counted once)."""
    kind = type(value)
    if kind is str:
        return len(value) >= HELD_TRACKED_TEXT_CHARS  # type: ignore[arg-type]
    return (kind is list or kind is dict) and (len(value) >= HELD_TRACKED_ITEMS  # type: ignore[arg-type]
                                               or size >= TRACKED_CONTAINER_BYTES)


def _refcounts(entries: dict[int, tuple[object, int]]) -> list[tuple[int, int]]:
    return [(key, _getrefcount(value)) for key, (value, _size) in entries.items()]


# The reference count `_refcounts` sees for a value that nothing but its entry holds. Measured rather than
# assumed: how many references the iteration itself takes depends on the interpreter.
_UNREFERENCED = _refcounts({0: (object(), 0)})[0][1]


class Gauge:
    """One run slice's account of the memory it holds (see the module docstring)."""

    __slots__ = ("limit", "roots", "outer", "held", "fresh_bytes", "steps_at", "work_at", "fresh", "kept",
                 "tracked_bytes", "since_prune")

    def __init__(self, limit: int, roots: Callable[[], list], outer: Gauge | None = None) -> None:
        self.roots = roots  # the run's own values (frames, RETURN value, pending HEAR...), as a list
        self.outer = outer  # the calling run's gauge for a script run by CALL
        self.limit = limit if outer is None else min(limit, outer.limit)
        # Bytes the last measure found (a CALLed script starts from its caller's estimate).
        self.held = outer.held + outer.fresh_bytes if outer is not None else 0
        self.fresh_bytes = 0  # bytes of the values tracked (or from the host) since the last measure
        self.steps_at = self.work_at = 0  # the VM's steps and work units at the last measure
        # Large values built in this slice, while something else holds them: id -> (value, bytes). `fresh`: since
        # the last measure (their bytes are in fresh_bytes); `kept`: before it (counted by it if still held).
        self.fresh: dict[int, tuple[object, int]] = {}
        self.kept: dict[int, tuple[object, int]] = {}
        self.tracked_bytes = 0
        self.since_prune = 0

    def estimate(self, steps: int, work: int) -> int:
        """At least what the run holds now (within the error bounds of the module docstring), `steps` and `work`
        being the VM's counts: steps are instructions plus work units."""
        work_since = work - self.work_at
        return (self.held + self.fresh_bytes + (steps - self.steps_at - work_since) * HELD_BYTES_PER_INSTRUCTION
                + work_since * HELD_BYTES_PER_WORK_UNIT)

    def measured(self, steps: int, work: int) -> None:
        """The VM's counts once a measure is charged: growth is estimated from there."""
        self.steps_at, self.work_at = steps, work

    def add(self, size: int) -> None:
        """Bytes that may have been added to what the run holds (a host's result, measured)."""
        self.fresh_bytes += size

    def track(self, value: object, size: int) -> None:
        """`value` of `size` bytes was just built: count it while it exists."""
        key = id(value)
        if key in self.fresh or key in self.kept:
            return  # the same value again (a builtin that returned its argument)
        self.fresh[key] = (value, size)
        self.fresh_bytes += size
        self.tracked_bytes += size
        self.since_prune += size
        if self.since_prune >= max(HELD_PRUNE_BYTES, self.tracked_bytes // 4):
            self.prune()

    def prune(self) -> None:
        """Let go of the tracked values nothing else holds (they are garbage, or soon will be)."""
        for entries in (self.fresh, self.kept):
            for key, count in _refcounts(entries):
                if count <= _UNREFERENCED:
                    _value, size = entries.pop(key)
                    self.tracked_bytes -= size
                    if entries is self.fresh:
                        self.fresh_bytes -= size
        self.since_prune = 0

    def measure(self) -> tuple[int, int]:
        """Walk what the run holds (and its callers'); returns (bytes, elements visited). The caller prunes
        first (VM._check_memory), charges the walk and sets `steps_at`."""
        self.kept.update(self.fresh)
        self.fresh.clear()
        roots: list = []
        gauge: Gauge | None = self
        while gauge is not None:
            roots.append(gauge.roots())
            roots.append([value for value, _size in gauge.kept.values()])
            roots.append([value for value, _size in gauge.fresh.values()])
            gauge = gauge.outer
        held, visited = held_bytes(roots, self.limit)
        self.held = held
        self.fresh_bytes = 0
        return held, visited

    def release(self) -> None:
        """The slice is over: hold nothing."""
        self.fresh.clear()
        self.kept.clear()
        self.tracked_bytes = self.fresh_bytes = 0
