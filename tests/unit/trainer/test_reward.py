"""trainer.grpo.RunReward over a fake service: retried error replies are counted, the wait is timed, every
completion is kept with its reward, and an outage the client rides out gives real rewards, not zeros."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from clients.client import AsyncMedixClient, MedixUnavailable
from trainer import grpo


def _service(fail_first: int) -> httpx.MockTransport:
    calls = {"n": 0}

    def handle(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] <= fail_first:  # the judge is down: 503 with Retry-After, as the service answers
            return httpx.Response(503, headers={"Retry-After": "0"},
                                  json={"error": {"type": "backend_unavailable", "message": "judge is down"}})
        items = json.loads(request.content)["items"]
        return httpx.Response(200, json={"results": [
            {"id": it["id"], "overall": 0.9, "format": 1.0, "accuracy_llm": 1.0, "accuracy_embed": 1.0,
             "modality": 1.0 if it["response"].startswith("<CT_SCAN>") else 0.0} for it in items]})

    return httpx.MockTransport(handle)


@pytest.fixture
def fake_service(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(fail_first: int) -> None:
        transport = _service(fail_first)

        class Client(AsyncMedixClient):
            def __init__(self, *args: Any, on_response: Any = None, **kwargs: Any) -> None:
                super().__init__(*args, on_response=on_response, **kwargs)
                self._http = httpx.AsyncClient(base_url=self.base_url, transport=transport,
                                               event_hooks={"response": [on_response]} if on_response else {})

        monkeypatch.setattr(grpo, "AsyncMedixClient", Client)

    return install


def _call(reward: grpo.RunReward, step: int) -> tuple[list[float | None], dict[str, list[float]]]:
    metrics: dict[str, list[float]] = {}
    completions = [[{"role": "assistant", "content": "<CT_SCAN><thinking>t</thinking><answer>Lung</answer>"}],
                   [{"role": "assistant", "content": "Lung"}]]
    out = asyncio.run(reward(prompts=[[{"role": "user", "content": "q"}]] * 2, completions=completions,
                             log_metric=lambda name, value: metrics.setdefault(name, []).append(value),
                             ground_truth=["Lung", "Lung"], modality=["CT_SCAN", "CT_SCAN"],
                             trainer_state=SimpleNamespace(global_step=step)))
    return out, metrics


def test_retried_replies_are_counted_and_the_rewards_are_real(fake_service: Any) -> None:
    fake_service(fail_first=3)
    reward = grpo.RunReward("http://medix.test", None, retries=5)
    rewards, metrics = _call(reward, step=4)
    assert rewards == [0.9, 0.9]
    assert metrics["medix/retried_replies"] == [3.0] and metrics["medix/seconds"][0] >= 0
    assert metrics["medix/modality"] == [0.5]
    assert reward.history[-1]["retried_replies"] == 3
    assert reward.samples == [{"step": 5, "completions": ["<CT_SCAN><thinking>t</thinking><answer>Lung</answer>",
                                                          "Lung"], "rewards": [0.9, 0.9]}]


def test_an_outage_longer_than_the_retries_stops_the_run(fake_service: Any) -> None:
    fake_service(fail_first=10)
    reward = grpo.RunReward("http://medix.test", None, retries=2)
    with pytest.raises(MedixUnavailable, match="judge is down"):
        _call(reward, step=0)
