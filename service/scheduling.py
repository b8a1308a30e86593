"""Judge capacity shared fairly between tenants: N slots handed out by stride scheduling over API keys.

Each tenant with calls waiting has a `pass` value; a freed slot goes to the waiting tenant with the lowest
pass, whose pass then grows by 1 / weight. A tenant that was idle re-enters at the current virtual time, so
it cannot hoard credit, and a lone tenant gets every slot (work-conserving: no capacity is held back).
One judge call is one unit of work, so two tenants of equal weight get equal shares of the engine whatever
their batch sizes; a 64-item batch behind four 512-item batches of another tenant waits for its share,
not for all of them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

# The tenant of requests without an API key (none configured): one shared bucket, one fair share.
ANONYMOUS = "anonymous"


class FairSlots:
    def __init__(self, capacity: int, weights: Mapping[str, float] | None = None,
                 on_wait: Callable[[str, float], None] | None = None,
                 on_depth: Callable[[str, int], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._free = capacity
        self._weights = dict(weights or {})
        self._queues: dict[str, deque[asyncio.Future[None]]] = {}
        self._pass: dict[str, float] = {}
        self._vtime = 0.0
        self._on_wait, self._on_depth = on_wait, on_depth

    def weight(self, tenant: str) -> float:
        return self._weights.get(tenant, 1.0)

    def waiting(self, tenant: str | None = None) -> int:
        if tenant is not None:
            return len(self._queues.get(tenant, ()))
        return sum(len(q) for q in self._queues.values())

    @property
    def in_use(self) -> int:
        return self.capacity - self._free

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        """Hold one slot for `tenant` while the block runs."""
        start = time.perf_counter()
        if self._free > 0 and not self.waiting():
            self._free -= 1
        else:
            await self._wait(tenant)
        if self._on_wait is not None:
            self._on_wait(tenant, time.perf_counter() - start)
        try:
            yield
        finally:
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
        while True:
            tenant = min((t for t, q in self._queues.items() if q), key=lambda t: self._pass[t], default=None)
            if tenant is None:
                self._free += 1
                return
            future = self._queues[tenant].popleft()
            self._depth(tenant)
            if future.done():  # its caller was cancelled and has not yet left the queue
                continue
            self._vtime = self._pass[tenant]
            self._pass[tenant] += 1.0 / self.weight(tenant)
            future.set_result(None)
            return

    def _depth(self, tenant: str) -> None:
        if self._on_depth is not None:
            self._on_depth(tenant, len(self._queues.get(tenant, ())))
