import asyncio

import pytest

from service.scheduling import FairSlots


async def run_calls(slots: FairSlots, tenant: str, n: int, order: list[str], hold: float = 0.001) -> None:
    async def one() -> None:
        async with slots.slot(tenant):
            order.append(tenant)
            await asyncio.sleep(hold)

    await asyncio.gather(*(one() for _ in range(n)))


async def test_a_small_batch_is_not_stuck_behind_a_big_one():
    slots, order = FairSlots(2), []
    big = asyncio.create_task(run_calls(slots, "a", 400, order))
    await asyncio.sleep(0.005)  # a's calls are all queued first
    await run_calls(slots, "b", 20, order)
    # b finished after at most about as many of a's calls as its own (equal shares), not after all 400
    assert order.index("b") < 10 and len([t for t in order[: order.index("b") + 40] if t == "b"]) == 20
    await big


async def test_weights_set_the_shares():
    slots, order = FairSlots(1, weights={"a": 3.0}), []
    await asyncio.gather(run_calls(slots, "a", 60, order), run_calls(slots, "b", 60, order))
    first = order[:40]
    assert first.count("a") == pytest.approx(30, abs=2)


async def test_a_lone_tenant_gets_every_slot():
    slots = FairSlots(4)
    peak = 0

    async def one() -> None:
        nonlocal peak
        async with slots.slot("a"):
            peak = max(peak, slots.in_use)
            await asyncio.sleep(0.01)

    await asyncio.gather(*(one() for _ in range(20)))
    assert peak == 4 and slots.in_use == 0


async def test_an_idle_tenant_cannot_hoard_credit():
    slots, order = FairSlots(1), []
    await run_calls(slots, "a", 50, order)  # b idle meanwhile
    order.clear()
    await asyncio.gather(run_calls(slots, "a", 20, order), run_calls(slots, "b", 20, order))
    assert order[:10].count("b") <= 6  # b does not get 50 calls' worth of priority


async def test_cancelled_waiters_give_their_turn_away_and_no_slot_leaks():
    slots = FairSlots(1)
    gate = asyncio.Event()

    async def holder() -> None:
        async with slots.slot("a"):
            await gate.wait()

    async def waiter(t: str) -> str:
        async with slots.slot(t):
            return t

    h = asyncio.create_task(holder())
    await asyncio.sleep(0)
    gone = asyncio.create_task(waiter("b"))
    kept = asyncio.create_task(waiter("c"))
    await asyncio.sleep(0)
    gone.cancel()
    gate.set()
    assert await kept == "c"
    await h
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert slots.in_use == 0 and slots.waiting() == 0


async def test_wait_and_depth_are_reported_per_tenant():
    waits, depths = [], []
    slots = FairSlots(1, on_wait=lambda t, s: waits.append(t), on_depth=lambda t, d: depths.append((t, d)))
    order: list[str] = []
    await asyncio.gather(run_calls(slots, "a", 3, order), run_calls(slots, "b", 3, order))
    assert sorted(waits) == ["a"] * 3 + ["b"] * 3 and max(d for _, d in depths) >= 1 and depths[-1][1] == 0
