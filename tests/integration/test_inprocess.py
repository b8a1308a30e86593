"""The embedded default (in-process vLLM engine, bundled MiniLM, in-process cache) against the vLLM server."""

from __future__ import annotations

import httpx
import pytest

from clients.datasets import grpo_batch
from tests.integration.stack import metric

pytestmark = pytest.mark.integration


def test_inprocess_engine_agrees_with_the_server_backend(service_inprocess, service, slake):
    items = grpo_batch(slake, questions=8, samples=3, seed=4, mix={"paraphrase": 0.6, "wrong": 0.4})
    a = httpx.post(f"{service_inprocess.url}/reward", json={"items": items}, timeout=300)
    b = httpx.post(f"{service.url}/reward", json={"items": items}, timeout=300)
    assert a.status_code == b.status_code == 200
    pa, pb = a.json()["profile"], b.json()["profile"]
    assert pa["prompt_version"] == pb["prompt_version"]
    judged = [(x, y) for x, y in zip(a.json()["results"], b.json()["results"], strict=True)
              if x["details"]["decided_by"] == "backends"]
    assert len(judged) >= 10
    agree = sum(x["details"]["judge_verdict"] == y["details"]["judge_verdict"] for x, y in judged)
    assert agree / len(judged) >= 0.9, judged
    for x, y in judged:
        assert x["details"]["similarity"] == pytest.approx(y["details"]["similarity"], abs=1e-4)


def test_inprocess_cache_serves_a_repeat(service_inprocess, slake):
    items = grpo_batch(slake, questions=3, samples=3, seed=5, mix={"paraphrase": 1.0})
    httpx.post(f"{service_inprocess.url}/reward", json={"items": items}, timeout=300)
    hits = metric(service_inprocess.url, "medix_cache_requests_total", {"kind": "judge", "result": "hit"})
    again = httpx.post(f"{service_inprocess.url}/reward", json={"items": items}, timeout=300).json()
    assert metric(service_inprocess.url, "medix_cache_requests_total", {"kind": "judge", "result": "hit"}) > hits
    assert all(r["details"]["cache"]["judge"] for r in again["results"] if r["details"]["decided_by"] == "backends")
    ready = httpx.get(f"{service_inprocess.url}/readyz").json()
    assert ready["components"]["judge"]["engine"] == "in-process"
    # Blocks short enough for the verdict prompt's shared part (~110 tokens) to be reused (docs/judge-engine.md).
    assert ready["components"]["judge"]["kv_block_size"] == 32
    assert ready["components"]["cache"]["backend"] == "memory"
