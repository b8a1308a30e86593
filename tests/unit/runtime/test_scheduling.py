import asyncio

import pytest

from service.backends.base import CALL_PRIORITY
from service.runtime.scheduling import FairSlots, PrefixWarmup


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
    slots = FairSlots(1, on_wait=lambda t, s: waits.append((t, s)), on_depth=lambda t, d: depths.append((t, d)))
    order: list[str] = []
    await asyncio.gather(run_calls(slots, "a", 3, order), run_calls(slots, "b", 3, order))
    assert sorted(t for t, _ in waits) == ["a"] * 3 + ["b"] * 3 and max(d for _, d in depths) >= 1
    assert depths[-1][1] == 0
    # The first call took the free slot at once: a wait of exactly 0; every other one queued behind it.
    assert waits[0][1] == 0.0 and all(s > 0 for _, s in waits[1:])


# -- the priority a call carries into the engine -----------------------------------------------------------------
async def test_a_calls_priority_is_its_tenants_calls_already_in_flight_over_its_weight():
    slots = FairSlots(16, weights={"heavy": 2.0})
    seen: dict[str, list[int]] = {"a": [], "b": [], "heavy": []}
    release = asyncio.Event()

    async def one(tenant: str) -> None:
        async with slots.slot(tenant) as priority:
            assert CALL_PRIORITY.get() == priority
            seen[tenant].append(priority)
            await release.wait()

    tasks = [asyncio.create_task(one("a")) for _ in range(5)]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(one("b")) for _ in range(2)]
    tasks += [asyncio.create_task(one("heavy")) for _ in range(4)]
    await asyncio.sleep(0.01)
    # A newcomer's calls go ahead of the deep queue of a tenant that already fills the engine.
    assert seen == {"a": [0, 1, 2, 3, 4], "b": [0, 1], "heavy": [0, 0, 1, 1]}
    release.set()
    await asyncio.gather(*tasks)
    assert CALL_PRIORITY.get() == 0 and slots.holding("a") == 0 and slots.in_use == 0
    async with slots.slot("a") as priority:
        assert priority == 0  # nothing of a's in flight any more


# -- the first verdict of a burst goes alone -----------------------------------------------------------------------
async def burst(warm: PrefixWarmup, n: int, log: list[str], fail_pilot: bool = False) -> list[BaseException | None]:
    async def one(i: int) -> None:
        async with warm.gate("prompt") as pilot:
            log.append(f"start {'pilot' if pilot else i}")
            await asyncio.sleep(0.01)
            if pilot and fail_pilot:
                raise RuntimeError("judge down")
            log.append(f"end {'pilot' if pilot else i}")

    return await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)


async def test_a_burst_into_a_cold_engine_waits_for_one_pilot_call_then_goes_at_once():
    warm, log = PrefixWarmup(60), []
    await burst(warm, 4, log)
    assert log[:2] == ["start pilot", "end pilot"]  # nobody started before the pilot was done
    assert sorted(log[2:5]) == ["start 1", "start 2", "start 3"]  # then all at once
    log.clear()
    await burst(warm, 4, log)  # the engine holds the prefix now: no call is held back
    assert "start pilot" not in log and log[:4] == ["start 0", "start 1", "start 2", "start 3"]


async def test_a_failed_pilot_releases_the_burst_and_a_forgotten_prompt_is_piloted_again():
    warm, log = PrefixWarmup(60), []
    out = await burst(warm, 3, log, fail_pilot=True)
    assert isinstance(out[0], RuntimeError) and out[1:] == [None, None]  # the others still ran
    log.clear()
    await burst(warm, 3, log)
    assert log[0] == "start pilot"  # not marked warm by a failure
    warm.forget("prompt")
    log.clear()
    await burst(warm, 2, log)
    assert log[0] == "start pilot"
    log.clear()
    await burst(PrefixWarmup(0), 3, log)
    assert "start pilot" not in log  # 0 switches it off


async def test_a_tenant_under_its_share_starts_at_once_and_the_lent_slots_are_paid_back_first():
    slots = FairSlots(4)
    gates: dict[str, asyncio.Event] = {}
    started: list[str] = []

    async def call(name: str, tenant: str) -> None:
        gates[name] = asyncio.Event()
        async with slots.slot(tenant):
            started.append(name)
            await gates[name].wait()

    tasks = [asyncio.create_task(call(f"a{i}", "a")) for i in range(6)]
    await asyncio.sleep(0.01)
    assert started == ["a0", "a1", "a2", "a3"] and slots.waiting("a") == 2
    tasks += [asyncio.create_task(call(f"b{i}", "b")) for i in range(3)]
    await asyncio.sleep(0.01)
    # b's share of 4 beside a is 2: two of its calls start at once, past the capacity; the third waits.
    assert started[4:] == ["b0", "b1"] and slots.in_use == 6 and slots.waiting("b") == 1
    gates["a0"].set()
    await asyncio.sleep(0.01)
    assert len(started) == 6 and slots.in_use == 5  # a lent slot paid back: nobody starts
    for name in ("a1", "a2", "a3"):  # back under the capacity: freed slots go by stride order again
        gates[name].set()
    await asyncio.sleep(0.01)
    assert started[6:] == ["a4", "b2"] and slots.in_use == 4
    for g in list(gates.values()):
        g.set()
    while any(not t.done() for t in tasks):
        for g in list(gates.values()):
            g.set()
        await asyncio.sleep(0.01)
    assert slots.in_use == 0


async def test_no_slot_is_lent_when_a_share_rounds_to_nothing():
    slots = FairSlots(1, weights={"a": 3.0})
    hold = asyncio.Event()

    async def call(tenant: str) -> None:
        async with slots.slot(tenant):
            await hold.wait()

    a = asyncio.create_task(call("a"))
    await asyncio.sleep(0)
    b = asyncio.create_task(call("b"))
    await asyncio.sleep(0.01)
    assert slots.in_use == 1 and slots.waiting("b") == 1
    hold.set()
    await asyncio.gather(a, b)


async def test_lending_never_takes_in_flight_past_twice_the_capacity():
    # Measured before: capacity 128, 10 tenants put 372 calls in flight (2.91x) past a pool sized to 128.
    slots = FairSlots(8)
    hold = asyncio.Event()
    peak = 0

    async def call(tenant: str) -> None:
        nonlocal peak
        async with slots.slot(tenant):
            peak = max(peak, slots.in_use)
            await hold.wait()

    tasks = [asyncio.create_task(call("a")) for _ in range(16)]
    await asyncio.sleep(0.01)
    for t in range(10):
        tasks += [asyncio.create_task(call(f"t{t}")) for _ in range(8)]
        await asyncio.sleep(0.01)
    assert peak == slots.in_use == slots.max_in_flight == 16
    hold.set()
    await asyncio.gather(*tasks)
    assert slots.in_use == 0


async def test_no_tenant_waits_on_another_tenants_pilot_and_its_own_only_so_long():
    warm = PrefixWarmup(60, max_wait_s=0.05)
    stuck = asyncio.Event()  # tenant a's pilot queues behind a's own backlog and does not finish

    async def pilot_of_a() -> None:
        async with warm.gate("prompt", "a") as pilot:
            assert pilot
            await stuck.wait()

    a = asyncio.create_task(pilot_of_a())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with warm.gate("prompt", "a") as pilot:  # a's next call waits for a's pilot, but not for ever
        assert not pilot and 0.04 < loop.time() - start < 1.0
    start = loop.time()
    async with warm.gate("prompt", "b") as pilot:  # b pilots its own burst at once
        assert pilot and loop.time() - start < 0.02
    stuck.set()
    await a
