"""Faults on the real stack, with its own judge server, Redis and service: Redis stopped, judge stopped
mid-run and restarted, a judge too slow for the timeout, a client that goes away, SIGTERM mid-request."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from clients.client import MedixClient, MedixUnavailable
from clients.datasets import grpo_batch
from tests.integration.stack import metric, start_judge_server, start_redis, start_service

pytestmark = pytest.mark.integration

ENV = {"MEDIX_JUDGE_BACKEND": "openai", "MEDIX_PIN_SERVICE": "true", "MEDIX_JUDGE_RETRIES": "1",
       "MEDIX_JUDGE_BACKOFF_S": "0.1", "MEDIX_JUDGE_TIMEOUT_S": "20", "MEDIX_REDIS_DOWN_S": "0.2",
       "MEDIX_RETRY_AFTER_S": "5", "MEDIX_BREAKER_OPEN_S": "2",
       # The drain test checks that in-flight work finishes, not how fast a shared CI core is.
       "MEDIX_SHUTDOWN_GRACE_S": "240"}


@pytest.fixture(scope="module")
def fault_stack(logs):
    judge, judge_url = start_judge_server(logs)
    rds, redis_url = start_redis(logs)
    svc, url = start_service(logs, {**ENV, "MEDIX_JUDGE_URL": judge_url, "MEDIX_REDIS_URL": redis_url})
    stack = {"judge": judge, "judge_url": judge_url, "redis": rds, "service": svc, "url": url, "logs": logs}
    yield stack
    for p in (stack["service"], stack["judge"], rds):
        p.stop()


def judge_ok(url):
    return metric(url, "medix_backend_requests_total", {"backend": "judge", "result": "ok"})


def test_redis_stopped_changes_nothing_but_the_counters(fault_stack, slake):
    url = fault_stack["url"]
    ok = httpx.post(f"{url}/reward", json={"items": grpo_batch(slake, 4, 3, seed=10)}, timeout=300)
    assert ok.status_code == 200
    errors_before = metric(url, "medix_cache_requests_total", {"kind": "judge", "result": "error"})
    fault_stack["redis"].kill()
    for seed in (11, 12):
        r = httpx.post(f"{url}/reward", json={"items": grpo_batch(slake, 4, 3, seed=seed)}, timeout=300)
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == 12
        time.sleep(0.3)
    assert metric(url, "medix_cache_requests_total", {"kind": "judge", "result": "error"}) > errors_before
    assert httpx.get(f"{url}/readyz").status_code == 200  # Redis is reported, not required
    assert httpx.get(f"{url}/readyz").json()["components"]["cache"]["ok"] is False


def test_judge_stopped_mid_run_gives_503_never_scores(fault_stack, slake):
    url = fault_stack["url"]
    items = grpo_batch(slake, questions=60, samples=4, seed=20, mix={"paraphrase": 0.5, "wrong": 0.5})
    out: dict = {}

    def call():
        out["resp"] = httpx.post(f"{url}/reward", json={"items": items}, timeout=300)

    t = threading.Thread(target=call)
    t.start()
    time.sleep(1.5)
    fault_stack["judge"].kill()
    t.join(300)
    r = out["resp"]
    assert r.status_code == 503, r.text[:500]
    assert int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert set(body) == {"error"} and body["error"]["param"] == "judge"
    assert body["error"]["type"] == "backend_unavailable"

    started = time.monotonic()
    again = httpx.post(f"{url}/reward", json={"items": items[:8]}, timeout=60)
    assert again.status_code == 503 and "results" not in again.json()
    assert time.monotonic() - started < 10  # fails fast: the breaker is open
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503 and "judge" in ready.json()["error"]["param"]
    assert metric(url, "medix_backend_requests_total", {"backend": "judge", "result": "error"}) > 0
    assert metric(url, "medix_backend_circuit_state", {"backend": "judge"}) in (1.0, 2.0)

    # The client turns the outage into an exception after honouring Retry-After, never into rewards.
    with MedixClient(url, retries=1) as client:
        started = time.monotonic()
        with pytest.raises(MedixUnavailable) as e:
            client.reward(items[:4])
    assert e.value.status == 503 and e.value.param == "judge" and time.monotonic() - started >= 1


def test_judge_restarted_recovers_by_itself(fault_stack, slake):
    url = fault_stack["url"]
    port = int(fault_stack["judge_url"].split(":")[-1].split("/")[0])
    fault_stack["judge"], _ = start_judge_server(fault_stack["logs"], port=port)
    items = grpo_batch(slake, questions=3, samples=3, seed=21, mix={"paraphrase": 1.0})
    deadline, statuses = time.monotonic() + 120, []
    while time.monotonic() < deadline:
        r = httpx.post(f"{url}/reward", json={"items": items}, timeout=120)
        statuses.append(r.status_code)
        if r.status_code == 200:
            break
        assert r.status_code == 503  # while recovering: refused, never scored
        time.sleep(1)
    assert statuses[-1] == 200, statuses
    assert all(r["details"]["judge_verdict"] in ("YES", "NO") for r in r.json()["results"])
    assert metric(url, "medix_backend_circuit_state", {"backend": "judge"}) == 0.0
    assert httpx.get(f"{url}/readyz").status_code == 200


def test_slow_judge_times_out_and_opens_the_breaker(fault_stack, slake):
    svc, url = start_service(fault_stack["logs"], {**ENV, "MEDIX_JUDGE_URL": fault_stack["judge_url"],
                                                   # Every call at once (no first call alone into a cold
                                                   # engine): the batch's calls are the breaker's failures.
                                                   "MEDIX_VERDICT_PREFIX_WARM_S": "0",
                                                   "MEDIX_JUDGE_TIMEOUT_S": "0.005", "MEDIX_BREAKER_FAILURES": "3",
                                                   "MEDIX_BREAKER_OPEN_S": "30"})
    try:
        items = grpo_batch(slake, questions=4, samples=2, seed=22, mix={"paraphrase": 1.0})
        first = httpx.post(f"{url}/reward", json={"items": items}, timeout=60)
        assert first.status_code == 503 and first.json()["error"]["param"] == "judge"
        assert metric(url, "medix_backend_requests_total", {"backend": "judge", "result": "timeout"}) >= 3
        assert metric(url, "medix_backend_circuit_state", {"backend": "judge"}) == 1.0
        started = time.monotonic()
        fast = httpx.post(f"{url}/reward", json={"items": items}, timeout=60)
        assert fast.status_code == 503 and "circuit open" in fast.json()["error"]["message"]
        assert time.monotonic() - started < 1 and int(fast.headers["retry-after"]) > 1
    finally:
        svc.stop()


def test_client_that_disconnects_stops_consuming_the_judge(fault_stack, slake):
    url = fault_stack["url"]
    items = grpo_batch(slake, questions=100, samples=3, seed=23, mix={"paraphrase": 0.5, "wrong": 0.5})
    before = judge_ok(url)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{url}/reward", json={"items": items}, timeout=httpx.Timeout(60, read=1.5))
    time.sleep(1.5)
    settled = judge_ok(url)
    time.sleep(2.0)
    assert judge_ok(url) == settled  # nothing more was asked of the judge
    assert settled - before < 200  # far fewer than the batch's distinct pairs
    assert metric(url, "medix_requests_total", {"route": "/reward", "status": "499"}) >= 1


def test_sigterm_finishes_in_flight_requests_then_exits(fault_stack, slake):
    url, svc = fault_stack["url"], fault_stack["service"]
    items = grpo_batch(slake, questions=20, samples=3, seed=24, mix={"paraphrase": 0.5, "wrong": 0.5})
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(r=httpx.post(f"{url}/reward", json={"items": items}, timeout=300)))
    t.start()
    time.sleep(0.7)
    assert svc.popen is not None
    svc.popen.send_signal(signal.SIGTERM)
    t.join(300)
    assert out["r"].status_code == 200 and len(out["r"].json()["results"]) == len(items)
    # uvicorn re-raises the SIGTERM it caught once it has shut down cleanly, so -15 is a clean exit too.
    assert svc.popen.wait(60) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in svc.log.read_text()  # the lifespan closed the pools
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)  # no longer accepting
