import asyncio

from service.runtime.batching import MicroBatcher


class Recorder:
    def __init__(self, delay=0.0):
        self.batches: list[list[int]] = []
        self.delay = delay

    async def __call__(self, items):
        self.batches.append(list(items))
        await asyncio.sleep(self.delay)
        return [x * 10 for x in items]


async def test_concurrent_submissions_share_one_call():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=100, max_wait_s=0.05)
    outs = await asyncio.gather(b.submit([1, 2]), b.submit([3]), b.submit([4, 5, 6]))
    await b.close()
    assert outs == [[10, 20], [30], [40, 50, 60]]
    assert len(rec.batches) == 1 and sorted(rec.batches[0]) == [1, 2, 3, 4, 5, 6]


async def test_batches_never_exceed_max_batch():
    rec = Recorder()
    b = MicroBatcher(rec, max_batch=4, max_wait_s=0.01)
    outs = await asyncio.gather(b.submit(list(range(10))), b.submit([100, 101, 102]))
    await b.close()
    assert outs[0] == [x * 10 for x in range(10)] and outs[1] == [1000, 1010, 1020]
    assert all(len(batch) <= 4 for batch in rec.batches)
    assert sorted(x for batch in rec.batches for x in batch) == [*range(10), 100, 101, 102]


async def test_failure_reaches_every_caller_in_the_batch():
    async def boom(items):
        raise RuntimeError("encode failed")

    b = MicroBatcher(boom, max_batch=10, max_wait_s=0.01)
    results = await asyncio.gather(b.submit([1]), b.submit([2]), return_exceptions=True)
    await b.close()
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_cancelled_submission_is_not_processed():
    rec = Recorder(delay=0.05)
    b = MicroBatcher(rec, max_batch=1, max_wait_s=0.0)
    first = asyncio.create_task(b.submit([1]))
    await asyncio.sleep(0.01)  # [1] is being processed; [2] waits in the queue
    second = asyncio.create_task(b.submit([2]))
    await asyncio.sleep(0.01)
    second.cancel()
    assert await first == [10]
    await asyncio.sleep(0.1)
    await b.close()
    assert rec.batches == [[1]]


async def test_batches_take_tenants_in_turn():
    rec = Recorder(delay=0.01)
    b = MicroBatcher(rec, max_batch=4, max_wait_s=0.0)
    big = asyncio.create_task(b.submit(list(range(40)), tenant="a"))  # ten full batches of tenant a
    await asyncio.sleep(0)
    small = await b.submit([1000, 1001], tenant="b")
    calls_before_b = next(i for i, batch in enumerate(rec.batches) if 1000 in batch)
    assert small == [10000, 10010] and calls_before_b <= 2  # not behind all ten of a's batches
    await big
    await b.close()
