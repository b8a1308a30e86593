"""/reward through HTTP on the real stack: vLLM judge server, MiniLM embedder, Redis; SLAKE rows."""

from __future__ import annotations

import httpx
import pytest
import redis

from clients.datasets import grpo_batch
from service.reward import rules
from service.reward.profiles import PROFILES
from service.reward.scorer import prepare
from service.reward.wire import RewardRequest
from tests.integration.stack import metric

pytestmark = pytest.mark.integration
PROFILE = PROFILES["medix-r1"]


def post(url, items, **extra):
    return httpx.post(f"{url}/reward", json={"items": items, **extra}, timeout=300)


def test_slake_batch_follows_every_rule(service, slake):
    items = grpo_batch(slake, questions=8, samples=4, seed=1)
    r = post(service.url, items)
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert [x["id"] for x in results] == [i["id"] for i in items]
    assert body["profile"]["name"] == "medix-r1" and body["profile"]["prompt_version"]
    expected = [prepare(i, it, PROFILE) for i, it in enumerate(RewardRequest.model_validate({"items": items}).items)]
    backends = 0
    for it, exp, res in zip(items, expected, results, strict=True):
        assert res["format"] == exp.format and res["modality"] == exp.modality, it
        assert res["details"]["decided_by"] == exp.decided_by
        if exp.decided_by == "exact":
            assert res["accuracy_llm"] == res["accuracy_embed"] == 1.0
        elif exp.decided_by == "invalid":
            assert res["accuracy_llm"] == res["accuracy_embed"] == 0.0
        else:
            backends += 1
            d = res["details"]
            assert d["judge_verdict"] in ("YES", "NO") and 0.0 <= d["judge_p_yes"] <= 1.0
            assert res["accuracy_llm"] == float(d["judge_verdict"] == "YES")
            assert res["accuracy_embed"] == float(d["similarity"] >= PROFILE.embed_threshold)
        assert res["overall"] == pytest.approx(rules.compose(
            format_=res["format"], accuracy_llm=res["accuracy_llm"], accuracy_embed=res["accuracy_embed"],
            modality=res["modality"], weights=PROFILE.weights, content_weight=PROFILE.content_weight,
            format_weight=PROFILE.format_weight))
        if it["kind"] == "wrong":
            assert res["overall"] < 1.0
    assert backends >= 5
    # The same word in other case is a paraphrase the embedder must call similar.
    sims = [r["details"]["similarity"] for it, r in zip(items, results, strict=True)
            if r["details"]["answer"].lower() == r["details"]["reference"].lower() and r["details"]["similarity"]]
    assert all(s > 0.8 for s in sims)


def test_repeated_batch_is_served_from_redis(service, slake, redis_url):
    items = grpo_batch(slake, questions=6, samples=4, seed=2, mix={"paraphrase": 0.5, "wrong": 0.5})
    hits_before = metric(service.url, "medix_cache_requests_total", {"kind": "judge", "result": "hit"})
    judge_calls = metric(service.url, "medix_backend_requests_total", {"backend": "judge", "result": "ok"})
    first = post(service.url, items).json()["results"]
    judge_calls_first = metric(service.url, "medix_backend_requests_total", {"backend": "judge", "result": "ok"})
    second = post(service.url, items).json()["results"]

    pairs = {(r["details"]["answer"], r["details"]["reference"]) for r in first
             if r["details"]["decided_by"] == "backends"}
    assert pairs and judge_calls_first - judge_calls <= len(pairs)
    # The second batch asked no backend and was a cache hit for every distinct pair.
    judge_ok = metric(service.url, "medix_backend_requests_total", {"backend": "judge", "result": "ok"})
    assert judge_ok == judge_calls_first
    hits = metric(service.url, "medix_cache_requests_total", {"kind": "judge", "result": "hit"}) - hits_before
    assert hits >= len(pairs)
    for a, b in zip(first, second, strict=True):
        assert a["overall"] == b["overall"]
        if b["details"]["decided_by"] == "backends":
            assert b["details"]["cache"] == {"judge": True, "embed": True}
    client = redis.Redis.from_url(redis_url)
    assert len(list(client.scan_iter(f"{service.namespace}:judge:*"))) >= len(pairs)
    texts = {t for p in pairs for t in p}
    assert len(list(client.scan_iter(f"{service.namespace}:embed:*"))) >= len(texts)
    assert 0 < client.ttl(next(client.scan_iter(f"{service.namespace}:judge:*")))


def test_exact_and_invalid_answers_call_no_backend(service, slake):
    rows = slake[:6]
    items = [{"response": f"<thinking>t</thinking><answer>{r['answer']}.</answer>", "ground_truth": r["answer"]}
             for r in rows]
    items += [{"response": f"<thinking>t</thinking><answer>{bad}</answer>", "ground_truth": r["answer"]}
              for r, bad in zip(rows, ["Answer: lung", "lung?", "x", "", "a__b", "..."], strict=True)]
    before = metric(service.url, "medix_backend_requests_total", {"backend": "judge", "result": "ok"})
    r = post(service.url, items)
    assert r.status_code == 200
    decided = [x["details"]["decided_by"] for x in r.json()["results"]]
    assert decided == ["exact"] * 6 + ["invalid"] * 6
    assert metric(service.url, "medix_backend_requests_total", {"backend": "judge", "result": "ok"}) == before


def test_readme_example(service):
    item = {"id": "q7-3", "response": "<X_RAY><thinking>Lobar opacity.</thinking><answer>Pneumonia</answer>",
            "ground_truth": "<X_RAY>Pneumonia"}
    res = post(service.url, [item]).json()["results"][0]
    assert res == {**res, "id": "q7-3", "overall": 1.0, "format": 1.0, "accuracy_llm": 1.0,
                   "accuracy_embed": 1.0, "modality": 1.0}


@pytest.mark.parametrize(
    ("body", "param"),
    [({"items": [{"ground_truth": "<X_RAY>x"}]}, "items[0].response"),
     ({"items": [{"response": "x", "ground_truth": "<FOO>x"}]}, "items[0].ground_truth"),
     ({"items": [{"response": "x", "ground_truth": "x"}], "profile": "nope"}, "profile"),
     ({"items": [{"response": "x", "ground_truth": "x"}] * 601}, "items")],
)
def test_bad_input_is_422_naming_the_field(service, body, param):
    r = httpx.post(f"{service.url}/reward", json=body, timeout=30)
    assert r.status_code == 422 and r.json()["error"]["param"] == param


def test_oversized_body_is_413(service):
    r = httpx.post(f"{service.url}/reward", content=b"x" * (5 * 1024 * 1024),
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"


def test_ops_endpoints(service):
    assert httpx.get(f"{service.url}/healthz").json() == {"status": "ok", "components": {}}
    ready = httpx.get(f"{service.url}/readyz").json()
    assert ready["components"]["cache"]["backend"] == "redis"
    assert httpx.get(f"{service.url}/docs").status_code == 200
    assert "medix_request_duration_seconds" in httpx.get(f"{service.url}/metrics").text
