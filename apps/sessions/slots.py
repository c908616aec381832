"""A web process's chat turns shared between tenants: at most CHAT_TURNS_PER_TENANT turns of one tenant run
at once in a process; its further turns wait in the tenant's own line, first come first served, and start as
its running ones end. Other tenants' turns start at once.

The failure mode this prevents: one tenant holding every chat-turn thread of a web process. A turn may take
apps.llm.services.CHAT_DEADLINE_S (10 minutes) when its model is slow or hangs, and a bot's config.csv names
its model's URL and may switch its rate limits off: a few dozen sockets of one tenant, one message each, held
all CHAT_TURN_THREADS threads of a process, and every other tenant's answers queued behind them for minutes.
A REST turn runs in its request's own thread and holds a database connection for the whole answer (the
session's lock, apps.sessions.turns.session_locked): hundreds of them at once used up PostgreSQL's connections.

A waiting turn holds nothing. A socket's or an event stream's turn waits as a future on the event loop (no
thread, no database connection). A REST message waits in its request's thread at most CHAT_TURN_SLOT_WAIT_S
with its database connection closed, then is refused as busy (503, "send it again"), its message not taken.
Both kinds wait in the same line: the order is arrival, whatever the protocol. Turns of one session stay in
their order because each waits for the one before it first (apps.sessions.consumers.turn_dispatch within a
process, the session's advisory lock across processes).

A tenant may borrow beyond its share while the process has room: as long as CHAT_TURNS_PER_TENANT of the
process's CHAT_TURN_THREADS stay free for the others. A tenant alone on a process (a single-tenant install, the
demo) runs up to CHAT_TURN_THREADS - CHAT_TURNS_PER_TENANT turns at once, not a quarter of the pool, and any
other tenant still starts its share at once; with several tenants, those below their share always start.

Per process, not across processes: each web process counts its own turns (no Redis round trip per turn, and
no slot lost by a process that died holding it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator

from django.conf import settings

# Turns of one tenant a web process runs at once: a quarter of its CHAT_TURN_THREADS (32), so a tenant whose
# model hangs takes at most that share and the other tenants' turns keep starting.
# At least 1 (chat.W002 says when the setting is lower): none would start no turn at all.
CHAT_TURNS_PER_TENANT = max(1, int(getattr(settings, "CHAT_TURNS_PER_TENANT", 8)))
# Threads running turns in one web process (apps.sessions.consumers' pool): a turn streaming an LLM answer holds
# one for seconds, so this is the number of answers a process streams at once (each thread keeps its own database
# connection); what a tenant borrows from while CHAT_TURNS_PER_TENANT of them stay free.
CHAT_TURN_THREADS = int(getattr(settings, "CHAT_TURN_THREADS", 32))
# How long a REST message (which runs in its request's thread) waits for one of its tenant's slots before it is
# refused as busy: a burst of the tenant's own turns usually passes by then, and a request cannot wait for ever
# (its client times out; the thread is the web process's).
CHAT_TURN_SLOT_WAIT_S = float(getattr(settings, "CHAT_TURN_SLOT_WAIT_S", 10))


class TurnSlotBusy(Exception):
    """The tenant's turns filled its slots for longer than the caller may wait: send the message again."""


class _Waiter:
    """A turn in its tenant's line; `wake` tells it (from any thread) that a slot was handed to it."""

    __slots__ = ("granted", "wake")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.wake = wake
        self.granted = False


class TenantTurnSlots:
    """Each tenant's running turns (`per_tenant`, more while the process has room: `capacity`) and its line of
    waiting ones. Thread-safe: socket turns take slots on the event loop, REST turns in request threads. A slot
    freed while the tenant has turns waiting goes straight to the first of them (a new arrival cannot overtake
    the line); room freed by another tenant lets waiting tenants borrow.

    `capacity`: the process's turns. A tenant at its share may take one more while fewer than `capacity -
    per_tenant` run in all, so `per_tenant` always stay for the others. None: no borrowing."""

    def __init__(self, per_tenant: int, capacity: int | None = None) -> None:
        if per_tenant < 1:
            raise ValueError(f"turns per tenant must be at least 1, not {per_tenant}")
        self.per_tenant = per_tenant
        self.capacity = capacity
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        self._total = 0
        self._waiting: dict[str, collections.deque[_Waiter]] = {}

    def running(self, tenant: str) -> int:
        with self._lock:
            return self._running.get(tenant, 0)

    def waiting(self, tenant: str) -> int:
        with self._lock:
            return len(self._waiting.get(tenant) or ())

    def _admits(self, tenant: str) -> bool:
        """Whether the tenant may start one more turn (under the lock): below its share, or the process has room
        to lend while `per_tenant` stay free for the others."""
        if self._running.get(tenant, 0) < self.per_tenant:
            return True
        return self.capacity is not None and self._total < self.capacity - self.per_tenant

    def _grant(self, tenant: str) -> None:
        self._running[tenant] = self._running.get(tenant, 0) + 1
        self._total += 1

    def _take(self, tenant: str) -> bool:
        """A free slot taken (under the lock), or False: the tenant is at its cap, or its turns are waiting."""
        if self._waiting.get(tenant) or not self._admits(tenant):
            return False
        self._grant(tenant)
        return True

    def _queue(self, tenant: str, waiter: _Waiter) -> None:
        self._waiting.setdefault(tenant, collections.deque()).append(waiter)

    def _leave_line(self, tenant: str, waiter: _Waiter) -> bool:
        """Take a waiter out of the line (under the lock); False when a slot was handed to it meanwhile."""
        if waiter.granted:
            return False
        line = self._waiting[tenant]
        line.remove(waiter)
        if not line:
            del self._waiting[tenant]
        return True

    def release(self, tenant: str) -> None:
        """A turn of the tenant ended: its slot goes to the tenant's first waiting turn, else it is free (and
        other tenants' waiting turns may borrow the room it leaves)."""
        woken: list[_Waiter] = []
        with self._lock:
            line = self._waiting.get(tenant)
            if line:
                waiter = line.popleft()
                if not line:
                    del self._waiting[tenant]
                waiter.granted = True  # the slot changes hands: the running count stays
                woken.append(waiter)
            else:
                running = self._running.get(tenant, 0) - 1
                if running > 0:
                    self._running[tenant] = running
                else:
                    self._running.pop(tenant, None)
                self._total -= 1
                for other in list(self._waiting):  # lines in the order they formed
                    other_line = self._waiting[other]
                    while other_line and self._admits(other):
                        waiter = other_line.popleft()
                        waiter.granted = True
                        self._grant(other)
                        woken.append(waiter)
                    if not other_line:
                        del self._waiting[other]
        for waiter in woken:
            waiter.wake()

    async def acquire(self, tenant: str) -> None:
        """A slot of the tenant, waiting in its line on the event loop (no thread) when it has none free."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._take(tenant):
                return
            future: asyncio.Future = loop.create_future()
            waiter = _Waiter(lambda: _call_soon(loop, _resolved, future))
            self._queue(tenant, waiter)
        try:
            await future
        except BaseException:  # cancelled while waiting: leave the line, or pass on the slot handed over
            with self._lock:
                left = self._leave_line(tenant, waiter)
            if not left:
                self.release(tenant)
            raise

    def acquire_blocking(self, tenant: str, *, wait_s: float, before_wait: Callable[[], None] | None = None) -> None:
        """A slot of the tenant for a caller on a thread of its own: at once, or after waiting in the line at
        most `wait_s` (`before_wait` runs first, e.g. to close the thread's database connection); else
        TurnSlotBusy."""
        with self._lock:
            if self._take(tenant):
                return
            arrived = threading.Event()
            waiter = _Waiter(arrived.set)
            self._queue(tenant, waiter)
        try:
            if before_wait is not None:
                before_wait()
            arrived.wait(max(0.0, wait_s))
        finally:
            with self._lock:
                left = self._leave_line(tenant, waiter)
        if left:
            raise TurnSlotBusy(f"{self.per_tenant} turns of this tenant are running")

    @contextlib.asynccontextmanager
    async def held(self, tenant: str) -> AsyncIterator[None]:
        await self.acquire(tenant)
        try:
            yield
        finally:
            self.release(tenant)

    @contextlib.contextmanager
    def held_blocking(self, tenant: str, *, wait_s: float = CHAT_TURN_SLOT_WAIT_S,
                      before_wait: Callable[[], None] | None = None) -> Iterator[None]:
        self.acquire_blocking(tenant, wait_s=wait_s, before_wait=before_wait)
        try:
            yield
        finally:
            self.release(tenant)


def _resolved(future: asyncio.Future) -> None:
    if not future.done():  # a waiter cancelled meanwhile passes the slot on itself
        future.set_result(None)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable, *args: object) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed (the process is stopping): nobody is waiting
        loop.call_soon_threadsafe(fn, *args)


# The web process's slots: every chat turn it runs takes one (apps.sessions.consumers, apps.sessions.api).
turn_slots = TenantTurnSlots(CHAT_TURNS_PER_TENANT, capacity=CHAT_TURN_THREADS)
