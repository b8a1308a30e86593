"""Judge use per tenant on the real stack: the vLLM judge server's own `usage` reaches each reply's `usage` object,
its `X-Medix-Usage` header and the tenant's counters; the prompt tokens are what the server's tokenizer counts."""

from __future__ import annotations

import uuid

import httpx
import pytest

from service.reward.prompt import DEFAULT_PROMPT
from tests.integration.stack import metric

pytestmark = pytest.mark.integration
TENANT = {"tenant": "anonymous"}  # the `service` fixture has no API keys


def tokens(url: str, kind: str, route: str) -> float:
    return metric(url, "medix_judge_tokens_total", {**TENANT, "route": route, "kind": kind})


def header(resp: httpx.Response) -> dict[str, int]:
    return {k: int(v) for k, v in (part.split("=") for part in resp.headers["x-medix-usage"].split(", "))}


def test_the_judge_servers_usage_reaches_the_reply_and_the_tenants_counters(service, judge_server):
    tag = uuid.uuid4().hex[:8]  # answers no other test sends: every pair is judged here
    answers = [f"opacity {tag} {i}" for i in range(3)]
    items = [{"id": str(i), "response": f"<X_RAY><thinking>t</thinking><answer>{a}</answer>",
              "ground_truth": "<X_RAY>Pneumonia"} for i, a in enumerate(answers)]
    before = {kind: tokens(service.url, kind, "/reward") for kind in ("prompt", "completion")}
    r = httpx.post(f"{service.url}/reward", json={"items": items}, timeout=300)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["judge_calls"] == 3 and header(r) == usage
    # The server's count of each verdict's prompt: its chat template over the service's messages.
    root = judge_server.removesuffix("/v1")
    model = httpx.get(f"{judge_server}/models", timeout=10).json()["data"][0]["id"]
    counted = [httpx.post(f"{root}/tokenize", json={
        "model": model, "messages": DEFAULT_PROMPT.messages(a, "Pneumonia", None, 4000),
        "add_generation_prompt": True, "chat_template_kwargs": {"enable_thinking": False}}, timeout=30).json()["count"]
        for a in answers]
    assert usage["judge_prompt_tokens"] == sum(counted) > 3 * 20
    assert 3 <= usage["judge_completion_tokens"] <= 3 * 4  # one step each, or up to MEDIX_VERDICT_MAX_TOKENS
    after = {kind: tokens(service.url, kind, "/reward") for kind in ("prompt", "completion")}
    assert after["prompt"] - before["prompt"] == usage["judge_prompt_tokens"]
    assert after["completion"] - before["completion"] == usage["judge_completion_tokens"]

    again = httpx.post(f"{service.url}/reward", json={"items": items}, timeout=300)
    assert again.json()["usage"] == {"judge_prompt_tokens": 0, "judge_completion_tokens": 0, "embed_tokens": 0,
                                     "judge_calls": 0}  # every verdict cached: no judge work
    assert tokens(service.url, "prompt", "/reward") == after["prompt"]


def test_a_judge_evaluation_counts_each_round(service):
    before = tokens(service.url, "completion", "/judge")
    item = {"id": "a", "task": "medqa", "question": f"Which organ? {uuid.uuid4().hex[:8]}", "reference": "Liver",
            "prediction": "The liver"}
    r = httpx.post(f"{service.url}/judge", json={"items": [item], "rounds": 2}, timeout=300)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["judge_calls"] >= 2 and usage["judge_prompt_tokens"] > 0 and usage["judge_completion_tokens"] > 0
    assert header(r) == usage
    assert tokens(service.url, "completion", "/judge") - before == usage["judge_completion_tokens"]
