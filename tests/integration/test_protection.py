"""Protection through the real path: keys, the per-key rate limit shared through real Redis, and several
judge replicas with one of them down (failover)."""

from __future__ import annotations

import httpx
import pytest

from clients.datasets import grpo_batch
from tests.integration.stack import free_port, start_service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def protected(judge_server, redis_url, logs, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "api-keys"
    keys.write_text("lab-a: key-a\nlab-b: key-b\n")
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    proc, url = start_service(logs, {
        "MEDIX_JUDGE_BACKEND": "openai", "MEDIX_JUDGE_URLS": f"{dead},{judge_server}",
        "MEDIX_REDIS_URL": redis_url, "MEDIX_CACHE_NAMESPACE": f"medix-prot-{free_port()}",
        "MEDIX_API_KEYS_FILE": str(keys), "MEDIX_METRICS_KEY": "scrape-key", "MEDIX_PIN_SERVICE": "true",
        "MEDIX_RATE_LIMIT_ITEMS_PER_S": "0.2", "MEDIX_RATE_LIMIT_BURST": "30", "MEDIX_JUDGE_RETRIES": "3",
        "MEDIX_JUDGE_BACKOFF_S": "0.05",
    })
    yield url
    proc.stop()


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def test_keys_limits_and_failover(protected, slake):
    url = protected
    items = grpo_batch(slake, questions=5, samples=4, seed=60, mix={"paraphrase": 0.5, "wrong": 0.5})
    r = httpx.post(f"{url}/reward", json={"items": items}, timeout=120)
    assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
    assert httpx.post(f"{url}/reward", json={"items": items}, headers=auth("nope"), timeout=60).status_code == 401
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 401

    # One replica is down: every judged pair still gets a verdict (retries go to the next replica).
    ok = httpx.post(f"{url}/reward", json={"items": items}, headers=auth("key-a"), timeout=300)
    assert ok.status_code == 200, ok.text
    assert all(x["details"]["judge_verdict"] in ("YES", "NO") for x in ok.json()["results"]
               if x["details"]["decided_by"] == "backends")
    ready = httpx.get(f"{url}/readyz").json()["components"]["judge"]["replicas"]
    assert list(ready.values()).count("ok") == 1 and len(ready) == 2

    # lab-a spent its burst (20 of 30): another 20 items is over its limit; lab-b is not starved.
    flood = httpx.post(f"{url}/reward", json={"items": items}, headers=auth("key-a"), timeout=60)
    assert flood.status_code == 429 and int(flood.headers["retry-after"]) >= 1
    assert httpx.post(f"{url}/reward", json={"items": items}, headers=auth("key-b"), timeout=300).status_code == 200
    scrape = httpx.get(f"{url}/metrics", headers=auth("scrape-key")).text
    assert "medix_rate_limited_total 1.0" in scrape
