import asyncio

from service.runtime.cache import Cache, MemoryStore
from service.runtime.metrics import Metrics


def counter(metrics, kind, result):
    return metrics.registry.get_sample_value("medix_cache_requests_total", {"kind": kind, "result": result}) or 0


class BrokenStore:
    name = "broken"

    def __init__(self):
        self.calls = 0

    async def get_many(self, keys):
        self.calls += 1
        raise ConnectionError("redis down")

    async def set_many(self, entries, ttl_s):
        self.calls += 1
        raise ConnectionError("redis down")

    async def health(self):
        raise ConnectionError("redis down")

    async def close(self):
        pass


async def test_lookup_counts_hits_and_misses_per_kind():
    m = Metrics()
    c = Cache(MemoryStore(10), namespace="ns", ttl_s=60, metrics=m)
    k1, k2 = c.key("judge", "a"), c.key("embed", "b")
    await c.store_many({k1: b"1"})
    out = await c.lookup({"judge": [k1], "embed": [k2]})
    assert out == {"judge": [b"1"], "embed": [None]}
    assert counter(m, "judge", "hit") == 1 and counter(m, "embed", "miss") == 1


async def test_store_failure_degrades_to_miss_and_is_counted():
    m, store = Metrics(), BrokenStore()
    c = Cache(store, namespace="ns", ttl_s=60, metrics=m, down_s=60)
    out = await c.lookup({"judge": ["a", "b"], "embed": ["c"]})
    assert out == {"judge": [None, None], "embed": [None]}
    assert counter(m, "judge", "error") == 2 and counter(m, "embed", "error") == 1
    # While marked down, the store is not asked again (no timeout per request).
    await c.lookup({"judge": ["a"]})
    await c.store_many({"a": b"x"})
    assert store.calls == 1
    assert (await c.health())["ok"] is False


async def test_keys_depend_on_namespace_and_every_part():
    m = Metrics()
    a = Cache(MemoryStore(1), namespace="v1", ttl_s=1, metrics=m)
    b = Cache(MemoryStore(1), namespace="v2", ttl_s=1, metrics=m)
    assert a.key("judge", "m", "p1", "x") != b.key("judge", "m", "p1", "x")
    assert a.key("judge", "m", "p1", "x") != a.key("judge", "m", "p2", "x")
    assert a.key("judge", "ab", "c").startswith("v1:judge:")
    assert a.key("judge", "ab", "c") != a.key("judge", "a", "bc")


async def test_memory_store_is_bounded_and_expires():
    s = MemoryStore(2)
    await s.set_many({"a": b"1", "b": b"2"}, ttl_s=60)
    await s.get_many(["a"])  # a is now most recent
    await s.set_many({"c": b"3"}, ttl_s=60)
    assert await s.get_many(["a", "b", "c"]) == [b"1", None, b"3"]
    await s.set_many({"d": b"4"}, ttl_s=0)
    await asyncio.sleep(0.01)
    assert await s.get_many(["d"]) == [None]


async def test_the_in_process_cache_is_bounded_in_bytes_too():
    # Before: bounded by entries only; 200,000 entries of 1,024-dimension float32 vectors are about 0.8 GB.
    s = MemoryStore(max_entries=1000, max_bytes=10_000)
    vector = bytes(4096)
    for i in range(10):
        await s.set_many({f"k{i}": vector}, 60)
    health = await s.health()
    assert health["bytes"] <= 10_000 and health["entries"] == 2
    assert await s.get_many(["k8", "k9", "k0"]) == [vector, vector, None]  # the oldest went first
    await s.set_many({"huge": bytes(20_000)}, 60)  # bigger than the whole bound: not stored, nothing evicted
    assert await s.get_many(["huge", "k9"]) == [None, vector]
