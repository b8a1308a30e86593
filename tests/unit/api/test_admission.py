"""Every 429 (and the too-big-for-the-burst 422) is decided in one place: the admission."""

from types import SimpleNamespace

import pytest

from service.api.admission import Admission
from service.reward.wire import RewardRequest
from service.runtime.exceptions import InvalidRequest, Overloaded
from service.runtime.metrics import Metrics
from service.runtime.ratelimit import RateLimiter
from service.settings import Settings


def _request(tenant: str = "lab-a") -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(key_name=tenant))


def _body(n: int) -> RewardRequest:
    return RewardRequest.model_validate({"items": [{"response": "r", "ground_truth": "g"}] * n})


def test_requests_in_flight_are_counted_per_tenant() -> None:
    admission = Admission(Settings(max_inflight_requests=2), Metrics())
    releases = [admission.hold_request("a"), admission.hold_request("a")]
    with pytest.raises(Overloaded):
        admission.hold_request("a")
    admission.hold_request("b")()  # another tenant is not turned away
    releases.pop()()
    admission.hold_request("a")  # a released slot is free again


async def test_items_in_flight_and_the_rate_limit_are_429_with_retry_after() -> None:
    metrics = Metrics()
    admission = Admission(Settings(max_inflight_items=10), metrics, RateLimiter(rate=1, burst=30))
    async with admission.admit(_request(), _body(8), "items") as tenant:
        assert tenant == "lab-a"
        with pytest.raises(Overloaded, match="items in flight"):
            async with admission.admit(_request(), _body(3), "items"):
                pass
    async with admission.admit(_request(), _body(20), "items"):
        pass
    with pytest.raises(Overloaded) as refused:
        async with admission.admit(_request(), _body(5), "items"):
            pass
    assert refused.value.retry_after_s >= 1 and "rate limit" in refused.value.message


async def test_a_request_bigger_than_the_burst_is_refused_by_name_not_waved_through() -> None:
    admission = Admission(Settings(), Metrics(), RateLimiter(rate=1, burst=10))
    with pytest.raises(InvalidRequest) as e:
        async with admission.admit(_request(), _body(40), "items"):
            pass
    assert e.value.param == "items" and "burst of 10" in e.value.message
    async with admission.admit(_request(), _body(10), "items"):  # the refused request cost nothing
        pass


async def test_a_judge_request_is_charged_a_token_a_round():
    # Before: /judge was charged per item, whatever its rounds cost the judge.
    from service.evaluation.wire import JudgeRequest

    admission = Admission(Settings(), Metrics(), RateLimiter(rate=0.001, burst=30))
    body = JudgeRequest.model_validate({"items": [{"id": str(i), "task": "t", "reference": "r", "prediction": "p"}
                                                  for i in range(5)], "rounds": 3})
    async with admission.admit(_request(), body, "items", calls_per_item=body.rounds):
        pass
    with pytest.raises(Overloaded):  # 15 of the 30 tokens are left: another 3-round request of 6 items is over
        async with admission.admit(_request(), JudgeRequest.model_validate(
                {**body.model_dump(), "items": body.model_dump()["items"] + [body.model_dump()["items"][0]]}),
                "items", calls_per_item=3):
            pass


async def test_items_in_flight_stay_exact_when_the_rate_limit_awaits():
    # Found by the scale-out rehearsal: the count was read before the rate limit's await (Redis) and written after
    # it, so concurrent requests of one tenant overwrote each other's count and a release raised KeyError (a 500).
    import asyncio

    class SlowLimiter(RateLimiter):
        async def wait_s(self, key, items):
            await asyncio.sleep(0.01)
            return 0.0

    admission = Admission(Settings(), Metrics(), SlowLimiter(rate=1000, burst=1000))

    async def one(n: int) -> None:
        async with admission.admit(_request(), _body(n), "items"):
            await asyncio.sleep(0.01)

    await asyncio.gather(*(one(n) for n in (1, 2, 3, 4, 5)))
    assert admission._items == {}
