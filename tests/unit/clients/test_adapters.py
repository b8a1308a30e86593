"""Adapters called as each framework calls them, against the real HTTP app on fake backends.

The same adapters run against the real stack in tests/integration/test_trainer.py.
"""

import asyncio

import httpx
import pytest

from clients.adapters import easyr1, verl
from clients.adapters.trl import MedixReward
from clients.client import AsyncMedixClient, MedixClient, MedixError, MedixUnavailable
from service.app import build_app
from service.bench import ServiceThread
from service.settings import Settings
from tests.integration.stack import free_port
from tests.unit.fakes import FakeEmbedder, FakeJudge

GOOD = "<X_RAY><thinking>look</thinking><answer>pneumonia</answer>"


@pytest.fixture(scope="module")
def url():
    settings = Settings(engine_cpus="", judge_retries=0, max_items_per_request=5, retry_after_s=1)
    app = build_app(settings, judge=FakeJudge(), embedder=FakeEmbedder())
    with ServiceThread(app, free_port(), timeout_s=30) as svc:
        yield svc.url


@pytest.fixture(scope="module")
def down_url():
    settings = Settings(engine_cpus="", judge_retries=0, retry_after_s=1, breaker_open_s=1)
    app = build_app(settings, judge=FakeJudge(fail=True), embedder=FakeEmbedder())
    with ServiceThread(app, free_port(), ready_path="/healthz", timeout_s=30) as svc:
        yield svc.url


def test_trl_reward_called_like_grpo_trainer(url):
    logged = {}
    reward = MedixReward(url)
    prompts = [[{"role": "user", "content": "Which disease?"}]] * 3
    completions = [[{"role": "assistant", "content": c}] for c in (GOOD, "<thinking>x</thinking><answer>Edema</answer>",
                                                                   "Pneumonia")]
    out = asyncio.run(reward(prompts=prompts, completions=completions, completion_ids=[[1], [2], [3]],
                             ground_truth=["Pneumonia"] * 3, modality=["X_RAY", "X_RAY", None], trainer_state=None,
                             log_extra=lambda *a: None, log_metric=lambda k, v: logged.__setitem__(k, v)))
    assert len(out) == 3 and out[0] > out[1]
    assert set(logged) == {"medix/format", "medix/accuracy_llm", "medix/accuracy_embed", "medix/modality"}
    assert reward.history[0]["rewards"] == out


def test_trl_outage_raises_or_skips(down_url):
    kwargs = {"prompts": ["q"], "completions": [GOOD], "ground_truth": ["<X_RAY>Edema"]}
    with pytest.raises(MedixUnavailable):
        asyncio.run(MedixReward(down_url, retries=1).__call__(**kwargs))
    assert asyncio.run(MedixReward(down_url, on_outage="skip", retries=0)(**kwargs)) == [None]


def test_easyr1_batch_signature(url, monkeypatch):
    monkeypatch.setenv("MEDIX_URL", url)
    out = easyr1.compute_score([{"response": GOOD, "response_length": 12, "ground_truth": "<X_RAY>Pneumonia"},
                                {"response": "no", "response_length": 1, "ground_truth": "Liver"}])
    assert out[0]["overall"] == pytest.approx(1.0) and out[1]["overall"] == 0.0
    assert set(out[0]) == {"overall", "format", "accuracy_llm", "accuracy_embed", "modality"}


def test_verl_single_and_batch_signatures(url):
    one = verl.compute_score("slake", GOOD, "<X_RAY>Pneumonia", {"question": "q"}, url=url)
    assert one["score"] == pytest.approx(1.0)
    many = verl.compute_score_batch(["slake"] * 2, [GOOD, "x"], ["<X_RAY>Pneumonia", "Liver"], None, url=url)
    assert [m["score"] for m in many] == [pytest.approx(1.0), 0.0]


def test_openrlhf_payload(url):
    prompt = "<|im_start|>user\nWhich disease?<|im_end|>\n<|im_start|>assistant\n"
    r = httpx.post(f"{url}/get_reward", json={"query": [prompt + GOOD + "<|im_end|>"], "prompts": [prompt],
                                              "labels": ["<X_RAY>Pneumonia"]})
    assert r.status_code == 200
    body = r.json()
    assert body["rewards"] == body["scores"] == [pytest.approx(1.0)]
    assert body["extra_logs"]["format"] == [1.0]


def test_client_splits_batches_over_the_server_limit(url):
    items = [{"id": str(i), "response": GOOD, "ground_truth": "<X_RAY>Pneumonia"} for i in range(12)]
    with MedixClient(url, max_items=5) as c:
        assert [r.id for r in c.reward(items)] == [str(i) for i in range(12)]
    with MedixClient(url, max_items=50) as c, pytest.raises(MedixError) as e:
        c.reward(items)  # the server's limit is 5: a clear error, not a retry loop
    assert e.value.status == 422 and e.value.param == "items"

    async def go():
        async with AsyncMedixClient(url, max_items=4) as c:
            return await c.reward(items)

    assert len(asyncio.run(go())) == 12


def test_client_retries_503_honouring_retry_after_then_raises(down_url):
    import time

    with MedixClient(down_url, retries=2) as c:
        start = time.monotonic()
        with pytest.raises(MedixUnavailable) as e:
            c.reward([{"response": GOOD, "ground_truth": "<X_RAY>Edema"}])
    assert e.value.status == 503 and e.value.param == "judge"
    assert time.monotonic() - start >= 2.0  # two waits of Retry-After: 1
