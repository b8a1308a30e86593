"""Judge capacity shared fairly between tenants: N slots handed out by stride scheduling over API keys.

Each tenant with calls waiting has a `pass` value; a freed slot goes to the waiting tenant with the lowest
pass, whose pass then grows by 1 / weight. A tenant that was idle re-enters at the current virtual time, so
it cannot hoard credit, and a lone tenant gets every slot (work-conserving: no capacity is held back).
One judge call is one unit of work, so two tenants of equal weight get equal shares of the engine whatever
their batch sizes; a 64-item batch behind four 512-item batches of another tenant waits for its share,
not for all of them.

A tenant that holds fewer slots than its weighted share of the capacity (among the tenants with calls held or
waiting) does not wait for another tenant's calls to finish: it takes a slot at once, past the capacity if need
be, and the slots so lent are paid back before any waiting call gets one. Lending stops at `max_in_flight`
(twice the capacity), however many tenants arrive, so a lab's batch starts at once beside another lab's burst
and the judge's connection pool, sized to `max_in_flight`, always has a connection for a call that holds a slot.

The same order continues inside the judge engine: each call carries a priority, its tenant's calls already in
the engine at dispatch divided by the tenant's weight (0 for a tenant with nothing there), which a vLLM engine
with priority scheduling uses to order its waiting queue. A call of a tenant that just arrived thus overtakes
the waiting calls of a tenant that already fills the engine, instead of queueing behind all of them there.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar

# The priority of the judge call the current task makes (lower is served first): set while a judge slot is held,
# sent by the backends to an engine that schedules by priority.
CALL_PRIORITY: ContextVar[int] = ContextVar("medix_call_priority", default=0)

# What the current task's judge call shares with other calls (the verdict prompt up to the candidate: the fixed
# instructions and what its GRPO group shares), or None: a judge with several replicas sends calls that share it
# to the same replica, whose prefix cache then holds it (service/backends/judge_openai.py).
CALL_AFFINITY: ContextVar[str | None] = ContextVar("medix_call_affinity", default=None)

# The tenant of requests without an API key (none configured): one shared bucket, one fair share.
ANONYMOUS = "anonymous"


def max_in_flight(capacity: int) -> int:
    """The most judge slots ever held at once: the capacity and as many again lent to tenants under their share."""
    return 2 * capacity


class FairSlots:
    def __init__(self, capacity: int, weights: Mapping[str, float] | None = None,
                 on_wait: Callable[[str, float], None] | None = None,
                 on_depth: Callable[[str, int], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._in_use = 0
        self._weights = dict(weights or {})
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._pass: dict[str, float] = {}
        self._vtime = 0.0
        self._holding: dict[str, int] = {}  # slots held now, by tenant
        self._on_wait, self._on_depth = on_wait, on_depth

    def weight(self, tenant: str) -> float:
        return self._weights.get(tenant, 1.0)

    def waiting(self, tenant: str | None = None) -> int:
        if tenant is not None:
            return len(self._queues.get(tenant, ()))
        return sum(len(q) for q in self._queues.values())

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def max_in_flight(self) -> int:
        return max_in_flight(self.capacity)

    def _below_share(self, tenant: str) -> bool:
        """Whether `tenant` holds fewer slots than its weighted share of the capacity among the tenants with
        calls held or waiting (itself included); a tenant with calls already queued waits behind them."""
        if self.waiting(tenant):
            return False
        active = {t for t, n in self._holding.items() if n} | {t for t, q in self._queues.items() if q} | {tenant}
        if len(active) < 2:
            return False
        share = math.floor(self.capacity * self.weight(tenant) / sum(self.weight(t) for t in active))
        return self.holding(tenant) < share

    def holding(self, tenant: str) -> int:
        return self._holding.get(tenant, 0)

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[int]:
        """Hold one slot for `tenant` while the block runs; gives the call's priority (also set in
        CALL_PRIORITY for the block)."""
        start = time.perf_counter()
        if (self._in_use < self.capacity and not self.waiting()) or (
                self._in_use < self.max_in_flight and self._below_share(tenant)):
            self._in_use += 1
            waited = 0.0  # taken at once
        else:
            await self._wait(tenant)
            waited = time.perf_counter() - start
        if self._on_wait is not None:
            self._on_wait(tenant, waited)
        held = self._holding.get(tenant, 0)
        priority = int(held / self.weight(tenant))
        self._holding[tenant] = held + 1
        token = CALL_PRIORITY.set(priority)
        try:
            yield priority
        finally:
            CALL_PRIORITY.reset(token)
            if self._holding[tenant] <= 1:
                del self._holding[tenant]
            else:
                self._holding[tenant] -= 1
            self._release()

    async def _wait(self, tenant: str) -> None:
        queue = self._queues.setdefault(tenant, deque())
        if not queue:  # (re-)entering: start from the current virtual time, not from old credit
            self._pass[tenant] = max(self._pass.get(tenant, 0.0), self._vtime)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(future)
        self._depth(tenant)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # the slot was handed over just as the caller gave up: pass it on
            elif future in queue:
                queue.remove(future)
                self._depth(tenant)
            raise

    def _release(self) -> None:
        self._in_use -= 1
        while self._in_use < self.capacity:  # slots lent past the capacity are paid back first
            tenant = min((t for t, q in self._queues.items() if q), key=lambda t: self._pass[t], default=None)
            if tenant is None:
                return
            future = self._queues[tenant].popleft()
            self._depth(tenant)
            if future.done():  # its caller was cancelled and has not yet left the queue
                continue
            self._vtime = self._pass[tenant]
            self._pass[tenant] += 1.0 / self.weight(tenant)
            self._in_use += 1
            future.set_result(None)
            return

    def _depth(self, tenant: str) -> None:
        if self._on_depth is not None:
            self._on_depth(tenant, len(self._queues.get(tenant, ())))


class PrefixWarmup:
    """After an idle spell, a tenant's first verdict of a burst goes to the engine alone; its other calls follow
    when it is done.

    Verdict prompts share a long prefix (the system prompt). An engine with prefix caching computes it once and
    reuses it, but only for calls that arrive after a call that computed it has run: a burst of calls sent at
    once into an engine that has not seen the prompt lately computes it once per call (measured on a CPU
    engine: a 512-item batch several times slower than with the prefix cached). Holding the burst back for one
    call's latency avoids that. `warm_s` is how long after a call completed the engine is taken to still hold
    the prefix; 0 never holds calls back. A failed call clears the mark (the engine may have restarted).

    Each tenant has its own pilot: a pilot waits for its tenant's fair share of judge slots, so another tenant
    waiting on it would wait behind that tenant's whole queue. A call waits on its tenant's pilot for at most
    `max_wait_s`, then goes anyway."""

    def __init__(self, warm_s: float, max_wait_s: float = 30.0) -> None:
        self.warm_s = warm_s
        self.max_wait_s = max_wait_s
        self._warm_until: dict[str, float] = {}
        self._pilots: dict[tuple[str, str], asyncio.Future[None]] = {}

    def forget(self, key: str) -> None:
        self._warm_until.pop(key, None)

    @asynccontextmanager
    async def gate(self, key: str, tenant: str = ANONYMOUS) -> AsyncIterator[bool]:
        """Enter when the call keyed by `key` (the prompt's fingerprint) may go; gives True for a pilot call."""
        if self.warm_s <= 0 or time.monotonic() < self._warm_until.get(key, 0.0):
            yield False
            return
        pilot = self._pilots.get((key, tenant))
        if pilot is not None:
            # The pilot's outcome does not matter, only that it is over; a slow one is not waited on for long.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(pilot), self.max_wait_s)
            yield False
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pilots[(key, tenant)] = done
        ok = False
        try:
            yield True
            ok = True
        finally:
            del self._pilots[(key, tenant)]
            if ok:
                self._warm_until[key] = time.monotonic() + self.warm_s
            done.set_result(None)
