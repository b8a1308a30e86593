import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from service.runtime.exceptions import InvalidRequest, Overloaded
from service.runtime.ratelimit import RateLimiter


async def test_local_bucket_refuses_over_rate_with_retry_after_and_keys_are_apart():
    lim = RateLimiter(rate=10, burst=20)
    await lim.take("a", 20)
    with pytest.raises(Overloaded) as e:
        await lim.take("a", 10)
    assert e.value.retry_after_s == 1
    await lim.take("b", 20)  # another key has its own bucket
    await asyncio.sleep(1.05)
    await lim.take("a", 10)


async def test_redis_bucket_is_shared_between_limiters():
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")  # `make test` starts one if none answers
    ns = f"medix-test-{uuid.uuid4().hex[:8]}"
    one, two = RateLimiter(5, 10, client, ns), RateLimiter(5, 10, client, ns)  # two replicas
    await one.take("k", 8)
    with pytest.raises(Overloaded):
        await two.take("k", 8)
    await client.delete(f"{ns}:rate:k")
    await client.aclose()


async def test_redis_failure_falls_back_to_the_local_bucket():
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.1)
    lim = RateLimiter(5, 10, client, "x")
    await lim.take("k", 10)
    with pytest.raises(Overloaded):
        await lim.take("k", 10)


async def test_a_request_bigger_than_the_burst_is_refused_not_waved_through():
    lim = RateLimiter(rate=1, burst=10)
    with pytest.raises(InvalidRequest) as e:
        await lim.take("k", 4000)
    assert e.value.param == "items" and "burst of 10" in e.value.message
    await lim.take("k", 10)  # the refused request cost nothing


async def test_a_failing_redis_is_skipped_for_its_down_window():
    calls = 0

    class Blackhole:
        def register_script(self, _):
            async def script(**_):
                nonlocal calls
                calls += 1
                raise TimeoutError("blackholed")
            return script

    lim = RateLimiter(100, 100, Blackhole(), "x", down_s=60)
    for _ in range(5):
        await lim.take("k", 1)
    assert calls == 1  # one timeout, then the local bucket until the window ends

