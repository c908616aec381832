"""Values a process keeps between requests: a bounded, thread-safe LRU map, and the one rule for what may go in.

Callers key entries by everything that makes them current (tenant schema, row ids, a revision the writers
bump), so an entry is never wrong, only unused; the bound drops the least recently used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from django.db import connection

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ProcessLRU(Generic[K, V]):
    """At most `max_entries` values; reads and writes from any thread."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def forget(self, stale: Callable[[K], bool]) -> None:
        """Drop the entries whose key `stale` accepts."""
        with self._lock:
            for key in [k for k in self._data if stale(k)]:
                del self._data[key]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def in_open_transaction() -> bool:
    """Whether the code runs inside a transaction it opened (a test case's own wrapping one does not count):
    rows read there may still change or roll back, so they must not be kept for other requests, and locks
    released there would free others before the commit."""
    return any(not getattr(block, "_from_testcase", False) for block in connection.atomic_blocks)
