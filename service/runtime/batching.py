"""The micro-batcher: one task owns bounded per-tenant queues and turns many small submissions into few big
calls."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Job(Generic[T, R]):
    items: Sequence[T]
    future: asyncio.Future[list[R]] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class MicroBatcher(Generic[T, R]):
    """Gathers submissions until `max_batch` items or `max_wait_s` after the first, then calls `process` once.

    A submission larger than `max_batch` is split. Submissions are queued per tenant and a batch takes them
    round robin across tenants, so one tenant's thousands of texts do not hold another's few behind them.
    Submissions whose caller went away (cancelled future) are dropped before the call, so a disconnected
    client stops consuming the backend.
    """

    def __init__(self, process: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_batch: int,
                 max_wait_s: float, max_queue: int = 4096,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self._process = process
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queues: dict[str, deque[_Job[T, R]]] = {}
        self._turns: deque[str] = deque()  # tenants with queued jobs, in round-robin order
        self._arrived = asyncio.Event()
        self._space = asyncio.Semaphore(max_queue)  # jobs queued at most: backpressure on submitters
        self._task: asyncio.Task[None] | None = None
        self._on_batch = on_batch

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="micro-batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, items: Sequence[T], tenant: str = "") -> list[R]:
        if not items:
            return []
        self.start()
        jobs = [_Job[T, R](items[i:i + self._max_batch]) for i in range(0, len(items), self._max_batch)]
        try:
            for job in jobs:
                await self._space.acquire()
                queue = self._queues.setdefault(tenant, deque())
                if not queue:
                    self._turns.append(tenant)
                queue.append(job)
                self._arrived.set()
            parts = await asyncio.gather(*(job.future for job in jobs))
        except BaseException:
            for job in jobs:
                job.future.cancel()
            raise
        return [r for part in parts for r in part]

    def _peek(self) -> _Job[T, R]:
        return self._queues[self._turns[0]][0]

    def _pop(self) -> _Job[T, R]:
        tenant = self._turns[0]
        queue = self._queues[tenant]
        job = queue.popleft()
        if queue:
            self._turns.rotate(-1)  # the next job comes from the next tenant
        else:
            self._turns.popleft()
            del self._queues[tenant]
        self._space.release()
        return job

    async def _next_batch(self) -> list[_Job[T, R]]:
        while not self._turns:
            self._arrived.clear()
            await self._arrived.wait()
        first = self._pop()
        batch, n = [first], len(first.items)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait_s
        while n < self._max_batch:
            if not self._turns:
                self._arrived.clear()
                if (left := deadline - loop.time()) <= 0:
                    break
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
                continue
            if n + len(self._peek().items) > self._max_batch:
                break
            job = self._pop()
            batch.append(job)
            n += len(job.items)
        return batch

    async def _run(self) -> None:
        while True:
            batch = [job for job in await self._next_batch() if not job.future.done()]
            if not batch:
                continue
            flat = [x for job in batch for x in job.items]
            if self._on_batch:
                self._on_batch(len(flat))
            try:
                results = await self._process(flat)
            except Exception as exc:
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            i = 0
            for job in batch:
                k = len(job.items)
                if not job.future.done():
                    job.future.set_result(list(results[i:i + k]))
                i += k
