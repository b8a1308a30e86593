import asyncio
import uuid

import redis.asyncio as aioredis

from service.runtime.ratelimit import RateLimiter


async def test_local_bucket_says_how_long_to_wait_and_keys_are_apart():
    lim = RateLimiter(rate=10, burst=20)
    assert await lim.wait_s("a", 20) == 0
    assert 0.9 < await lim.wait_s("a", 10) <= 1.0
    assert await lim.wait_s("b", 20) == 0  # another key has its own bucket
    await asyncio.sleep(1.05)
    assert await lim.wait_s("a", 10) == 0


async def test_a_refused_take_costs_nothing():
    lim = RateLimiter(rate=1, burst=10)
    assert await lim.wait_s("k", 8) == 0
    assert await lim.wait_s("k", 8) > 0
    assert await lim.wait_s("k", 2) == 0  # the refused 8 were not taken


async def test_redis_bucket_is_shared_between_limiters():
    client = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")  # `make test` starts one if none answers
    ns = f"medix-test-{uuid.uuid4().hex[:8]}"
    one, two = RateLimiter(5, 10, client, ns), RateLimiter(5, 10, client, ns)  # two replicas
    assert await one.wait_s("k", 8) == 0
    assert await two.wait_s("k", 8) > 0
    await client.delete(f"{ns}:rate:k")
    await client.aclose()


async def test_redis_failure_falls_back_to_the_local_bucket():
    client = aioredis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.1)
    lim = RateLimiter(5, 10, client, "x")
    assert await lim.wait_s("k", 10) == 0
    assert await lim.wait_s("k", 10) > 0


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
        await lim.wait_s("k", 1)
    assert calls == 1  # one timeout, then the local bucket until the window ends
