import asyncio
import time

import pytest

from service.backends.base import PermanentBackendError, RetryPolicy, TransientBackendError, call_backend
from service.backends.breaker import CircuitBreaker
from service.runtime.exceptions import BackendUnavailable
from service.runtime.metrics import Metrics


def state(m):
    return m.registry.get_sample_value("medix_backend_circuit_state", {"backend": "judge"})


async def test_opens_after_failures_refuses_fast_then_half_opens_and_closes():
    m = Metrics()
    br = CircuitBreaker("judge", failures=3, open_s=0.2, metrics=m)
    calls = 0

    async def failing():
        nonlocal calls
        calls += 1
        raise TransientBackendError("down")

    policy = RetryPolicy(retries=0, backoff_s=0, timeout_s=1)
    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            await call_backend("judge", failing, policy, m, 1, br)
    assert br.state == "open" and state(m) == 1 and calls == 3
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as e:
        await call_backend("judge", failing, policy, m, 1, br)
    assert calls == 3 and time.monotonic() - start < 0.05 and "circuit open" in e.value.message

    await asyncio.sleep(0.25)

    async def ok():
        return 42

    assert await call_backend("judge", ok, policy, m, 1, br) == 42  # the probe
    assert br.state == "closed" and state(m) == 0


async def test_failed_probe_reopens_and_cancellation_frees_it():
    br = CircuitBreaker("judge", failures=1, open_s=0.05)
    br.record(False)
    assert br.state == "open"
    await asyncio.sleep(0.06)
    await br.before_call(1)
    assert br.state == "half_open"
    with pytest.raises(BackendUnavailable):
        await br.before_call(0.05)  # one probe at a time: the others wait for its verdict
    br.record(None)  # the probe was cancelled: no verdict, the next call probes
    await br.before_call(1)
    br.record(False)
    assert br.state == "open"


async def test_calls_waiting_on_a_probe_follow_its_verdict():
    br = CircuitBreaker("judge", failures=1, open_s=0.01)
    br.record(False)
    await asyncio.sleep(0.02)
    await br.before_call(1)  # this call probes
    waiter = asyncio.create_task(br.before_call(1))
    await asyncio.sleep(0.01)
    assert not waiter.done()
    br.record(True)
    await waiter  # went on: the probe closed the circuit
    assert br.state == "closed"


async def test_timeouts_count_as_failures():
    m = Metrics()
    br = CircuitBreaker("judge", failures=2, open_s=5)

    async def slow():
        import asyncio

        await asyncio.sleep(1)

    for _ in range(2):  # two calls, each timing out on both attempts
        with pytest.raises(BackendUnavailable):
            await call_backend("judge", slow, RetryPolicy(retries=1, backoff_s=0, timeout_s=0.01), m, 1, br)
    assert br.state == "open"
    assert m.registry.get_sample_value("medix_backend_requests_total", {"backend": "judge", "result": "timeout"}) == 4


async def test_a_call_that_succeeds_on_retry_counts_as_a_success():
    m = Metrics()
    br = CircuitBreaker("judge", failures=1, open_s=5)
    attempts = 0

    async def flaky():  # e.g. the first replica is down, the retry reaches the next one
        nonlocal attempts
        attempts += 1
        if attempts % 2:
            raise TransientBackendError("connection refused")
        return "ok"

    for _ in range(3):
        assert await call_backend("judge", flaky, RetryPolicy(retries=1, backoff_s=0, timeout_s=1), m, 1, br) == "ok"
    assert br.state == "closed"


async def test_a_failed_call_cancelled_during_its_backoff_still_counts():
    import contextlib

    m = Metrics()
    br = CircuitBreaker("judge", failures=1, open_s=5)

    async def down():
        raise TransientBackendError("connection refused")

    task = asyncio.create_task(call_backend("judge", down, RetryPolicy(retries=3, backoff_s=1, timeout_s=1), m, 1, br))
    await asyncio.sleep(0.05)  # first attempt failed; now in backoff
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert br.state == "open"


async def test_a_permanent_error_is_503_with_retry_after_and_counts_toward_opening():
    """Issue 24 item 7: a malformed reply (PermanentBackendError) is not retried, and the breaker counts it."""
    br = CircuitBreaker("judge", failures=2, open_s=60)
    calls = 0

    async def malformed():
        nonlocal calls
        calls += 1
        raise PermanentBackendError("malformed reply from the judge")

    policy = RetryPolicy(retries=3, backoff_s=0, timeout_s=1)
    for _ in range(2):
        with pytest.raises(BackendUnavailable) as e:
            await call_backend("judge", malformed, policy, Metrics(), 7, br)
        assert e.value.retry_after_s == 7 and "malformed" in e.value.message
    assert calls == 2 and br.state == "open"
