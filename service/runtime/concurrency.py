"""Small asyncio helpers shared by the scorer, the evaluator and the memo."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def off_loop(fn: Callable[[], T], *, heavy: bool) -> T:
    """Run CPU work in a worker thread when it is heavy (the event loop keeps serving meanwhile), inline when
    it is light (a thread hop costs more than the work)."""
    return await asyncio.to_thread(fn) if heavy else fn()


async def gather_all(*aws: Awaitable[Any]) -> list[Any]:
    """Like asyncio.gather, but a failure does not stop the others: each runs to its end (what it finished is
    kept, e.g. cached), then the first failure in argument order is raised. Cancelling the caller cancels all."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for t in tasks:
        if t.exception() is not None:
            raise t.exception()  # type: ignore[misc]
    return [t.result() for t in tasks]


class Coalescer:
    """One computation per key shared by every concurrent caller; cancelled when its last caller leaves.

    This is what lets concurrent requests (GRPO groups from several trainer workers) judge a repeated
    (answer, reference) pair once, while a caller that goes away stops consuming backend work.
    """

    def __init__(self) -> None:
        self._running: dict[str, list[Any]] = {}  # key -> [task, waiters]

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: str) -> bool:
        """Whether a computation of `key` is in flight: a caller now would join it."""
        return key in self._running

    async def run(self, key: str, factory: Any) -> Any:
        while True:
            entry = self._running.get(key)
            if entry is None:
                task = asyncio.ensure_future(factory())
                entry = self._running[key] = [task, 0]
                task.add_done_callback(lambda t, k=key: self._forget(k, t))
            entry[1] += 1
            try:
                return await asyncio.shield(entry[0])
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if entry[0].cancelled() and me is not None and not me.cancelling():
                    continue  # we joined a computation its last caller had just abandoned: start a new one
                raise
            finally:
                entry[1] -= 1
                if entry[1] == 0 and not entry[0].done():
                    entry[0].cancel()
                    # Forgotten at once: a caller arriving while it winds down must not join a dying task.
                    if self._running.get(key) is entry:
                        del self._running[key]

    def _forget(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._running.get(key, [None])[0] is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved here so that an abandoned failure is not logged as lost
