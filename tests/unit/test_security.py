import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from service.exceptions import InvalidRequest, Overloaded
from service.security import KeyRing, RateLimiter, load_key_file


def test_keyring_identifies_by_bearer_and_stores_no_key():
    ring = KeyRing({"lab-a": "secret-a", "lab-b": "secret-b"})
    assert ring.identify("Bearer secret-b") == "lab-b"
    assert ring.identify("bearer  secret-a ") == "lab-a"
    assert ring.identify("Bearer nope") is None and ring.identify(None) is None and ring.identify("secret-a") is None
    assert "secret-a" not in repr(ring.__dict__)


def test_key_file_forms(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# labs\nlab-a: k1\nlab-b:k2\n")
    assert load_key_file(f) == {"lab-a": "k1", "lab-b": "k2"}
    f.write_text('{"x": "y"}')
    assert load_key_file(f) == {"x": "y"}
    f.write_text("no separator\n")
    with pytest.raises(ValueError):
        load_key_file(f)


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


def test_key_file_weights(tmp_path):
    from service.security import load_key_weights

    f = tmp_path / "keys"
    f.write_text("lab-a: k1 weight=3\nlab-b: k2\n")
    assert load_key_file(f) == {"lab-a": "k1", "lab-b": "k2"}
    assert load_key_weights(f) == {"lab-a": 3.0, "lab-b": 1.0}
    f.write_text('{"lab-a": {"key": "k1", "weight": 2}, "lab-b": "k2"}')
    assert load_key_weights(f) == {"lab-a": 2.0, "lab-b": 1.0} and load_key_file(f)["lab-a"] == "k1"
    f.write_text("lab-a: k1 weight=0\n")
    with pytest.raises(ValueError, match="positive"):
        load_key_weights(f)
