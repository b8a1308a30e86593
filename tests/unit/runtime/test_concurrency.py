import asyncio

import pytest

from service.runtime.concurrency import Coalescer, gather_all


async def test_concurrent_callers_share_one_run():
    runs = []

    async def work():
        runs.append(1)
        await asyncio.sleep(0.05)
        return 42

    c = Coalescer()
    assert await asyncio.gather(c.run("k", work), c.run("k", work), c.run("other", work)) == [42, 42, 42]
    assert len(runs) == 2 and len(c) == 0


async def test_work_survives_one_caller_leaving_and_stops_when_all_leave():
    started, finished = asyncio.Event(), []

    async def work():
        started.set()
        await asyncio.sleep(0.1)
        finished.append(1)
        return "done"

    c = Coalescer()
    a = asyncio.create_task(c.run("k", work))
    b = asyncio.create_task(c.run("k", work))
    await started.wait()
    a.cancel()
    assert await b == "done" and finished == [1]

    started.clear()
    x = asyncio.create_task(c.run("k2", work))
    await started.wait()
    x.cancel()
    await asyncio.sleep(0.15)
    assert finished == [1]  # the abandoned run was cancelled, not finished


async def test_gather_all_lets_every_awaitable_finish_then_raises_the_first_failure():
    finished = []

    async def slow(n):
        await asyncio.sleep(0.05)
        finished.append(n)
        return n

    async def boom():
        await asyncio.sleep(0.01)
        raise ValueError("x")

    with pytest.raises(ValueError):
        await gather_all(slow(1), boom(), slow(2))
    assert sorted(finished) == [1, 2]  # a sibling's failure cost nothing that was under way
    assert await gather_all(slow(3), slow(4)) == [3, 4]


async def test_gather_all_is_cancelled_whole():
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    task = asyncio.create_task(gather_all(slow(), slow()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled == [1, 1]


async def test_a_caller_arriving_while_an_abandoned_run_winds_down_gets_a_fresh_run():
    # The race found in review: the last waiter leaves, the run is cancelled but takes a while to stop (it is
    # inside a backend call), and a new request for the same key arrives meanwhile.
    runs = 0

    async def work():
        nonlocal runs
        runs += 1
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            await asyncio.sleep(0.2)  # winding down
            raise
        return "verdict"

    c = Coalescer()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(c.run("k", work), 0.05)  # a client with a short timeout
    await asyncio.sleep(0.05)
    assert await c.run("k", work) == "verdict" and runs == 2


async def test_a_caller_cancelled_itself_is_still_cancelled():
    c = Coalescer()
    t = asyncio.create_task(c.run("k", lambda: asyncio.sleep(1)))
    await asyncio.sleep(0.01)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert len(c) == 0
