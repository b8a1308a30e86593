"""Failures on the real stack: a judge server stopped mid-run, Redis stopped. Its own judge server and Redis."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from clients.client import MedixClient, MedixUnavailable
from service.datasets import grpo_batch
from tests.integration.stack import metric, start_judge_server, start_redis, start_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fault_stack(logs):
    judge, judge_url = start_judge_server(logs)
    rds, redis_url = start_redis(logs)
    svc, url = start_service(logs, {
        "MEDIX_JUDGE_BACKEND": "openai", "MEDIX_JUDGE_URL": judge_url, "MEDIX_REDIS_URL": redis_url,
        "MEDIX_PIN_SERVICE": "true", "MEDIX_JUDGE_RETRIES": "1", "MEDIX_JUDGE_BACKOFF_S": "0.1",
        "MEDIX_JUDGE_TIMEOUT_S": "20", "MEDIX_REDIS_DOWN_S": "0.2", "MEDIX_RETRY_AFTER_S": "5",
    })
    yield {"judge": judge, "redis": rds, "url": url}
    for p in (svc, judge, rds):
        p.stop()


def test_redis_stopped_changes_nothing_but_the_counters(fault_stack, slake):
    url = fault_stack["url"]
    items = grpo_batch(slake, questions=4, samples=3, seed=10)
    ok = httpx.post(f"{url}/reward", json={"items": items}, timeout=300)
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
    assert r.headers["retry-after"] == "5"
    body = r.json()
    assert set(body) == {"error"} and body["error"]["param"] == "judge"
    assert body["error"]["type"] == "backend_unavailable"

    started = time.monotonic()
    again = httpx.post(f"{url}/reward", json={"items": items[:8]}, timeout=60)
    assert again.status_code == 503 and "results" not in again.json()
    assert time.monotonic() - started < 10
    ready = httpx.get(f"{url}/readyz")
    assert ready.status_code == 503 and "judge" in ready.json()["error"]["param"]
    assert metric(url, "medix_backend_requests_total", {"backend": "judge", "result": "error"}) > 0

    # The client turns the outage into an exception after honouring Retry-After, never into rewards.
    with MedixClient(url, retries=1) as client:
        started = time.monotonic()
        with pytest.raises(MedixUnavailable) as e:
            client.reward(items[:4])
    assert e.value.status == 503 and e.value.param == "judge" and time.monotonic() - started >= 5
