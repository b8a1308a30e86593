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


class CountingStore(MemoryStore):
    """The in-process store, counting its writes; a write waits for `release` when one is given."""

    def __init__(self, release: asyncio.Event | None = None):
        super().__init__(100)
        self.writes: list[int] = []
        self.release = release

    async def set_many(self, entries, ttl_s):
        self.writes.append(len(entries))
        if self.release is not None:
            await self.release.wait()
        await super().set_many(entries, ttl_s)


async def test_writes_made_together_go_to_the_store_in_one_round_trip():
    store = CountingStore()
    c = Cache(store, namespace="ns", ttl_s=60, metrics=Metrics())
    keys = [c.key("judge", str(i)) for i in range(50)]
    await asyncio.gather(*(c.store_many({k: b"v"}) for k in keys))  # each returns once its entry is written
    assert store.writes == [50]
    assert (await c.lookup({"judge": keys}))["judge"] == [b"v"] * 50
    await c.store_many({keys[0]: b"w"})  # a later write is a round trip of its own
    assert store.writes == [50, 1] and (await c.lookup({"judge": keys[:1]}))["judge"] == [b"w"]


async def test_a_writer_that_is_cancelled_does_not_cancel_the_write():
    release = asyncio.Event()
    store = CountingStore(release)
    c = Cache(store, namespace="ns", ttl_s=60, metrics=Metrics())
    first = asyncio.create_task(c.store_many({"a": b"1"}))
    second = asyncio.create_task(c.store_many({"b": b"2"}))
    await asyncio.sleep(0.01)
    first.cancel()
    release.set()
    await second
    assert first.cancelled() and store.writes == [2]
    assert (await c.lookup({"judge": ["a", "b"]}))["judge"] == [b"1", b"2"]


async def test_a_failed_gathered_write_is_one_error_and_no_caller_raises():
    store = BrokenStore()
    c = Cache(store, namespace="ns", ttl_s=60, metrics=Metrics(), down_s=60)
    await asyncio.gather(*(c.store_many({str(i): b"x"}) for i in range(5)))
    assert store.calls == 1


def test_redis_waits_a_moment_for_a_connection_instead_of_failing():
    """redis-py's default pool raised MaxConnectionsError past 100 connections in use, and the cache then served
    without Redis for MEDIX_REDIS_DOWN_S; the pool now blocks for up to the Redis timeout (nothing connects here)."""
    from redis.asyncio import BlockingConnectionPool

    from service.runtime.cache import REDIS_CONNECTIONS, RedisStore

    pool = RedisStore("redis://127.0.0.1:1/0", 0.25).client.connection_pool
    assert isinstance(pool, BlockingConnectionPool)
    assert pool.max_connections == REDIS_CONNECTIONS and pool.timeout == 0.25
    assert pool.connection_kwargs["socket_timeout"] == 0.25


async def test_lookups_made_together_go_to_the_store_in_one_round_trip():
    """Hundreds of one-item requests at once (per-sample trainers) made a look-up each: with Redis, more commands
    at once than its pool holds, and the cache then served without Redis for a while."""
    store = CountingStore()
    reads: list[int] = []
    get_many = store.get_many

    async def counting_get_many(keys):
        reads.append(len(keys))
        return await get_many(keys)

    store.get_many = counting_get_many
    m = Metrics()
    c = Cache(store, namespace="ns", ttl_s=60, metrics=m)
    await c.store_many({"k0": b"0", "k2": b"2"})
    outs = await asyncio.gather(*(c.lookup({"judge": [f"k{i}"], "embed": ["k0"]}) for i in range(4)))
    assert reads == [4]  # one round trip, each key once (k0 is asked by all)
    assert [o["judge"] for o in outs] == [[b"0"], [None], [b"2"], [None]]
    assert all(o["embed"] == [b"0"] for o in outs)
    assert counter(m, "judge", "hit") == 2 and counter(m, "judge", "miss") == 2 and counter(m, "embed", "hit") == 4


async def test_a_failed_gathered_lookup_is_a_miss_for_every_caller():
    m, store = Metrics(), BrokenStore()
    c = Cache(store, namespace="ns", ttl_s=60, metrics=m, down_s=60)
    outs = await asyncio.gather(*(c.lookup({"judge": [str(i)]}) for i in range(3)))
    assert outs == [{"judge": [None]}] * 3 and store.calls == 1
    assert counter(m, "judge", "error") == 3
