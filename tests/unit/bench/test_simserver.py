"""The simulated judge and embedder (service/bench/simserver.py), a benchmark's test double: its latency model,
its replies as the service reads them, and the service's real `openai` backends started and scoring against it."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import deque
from typing import Any

import httpx
import numpy as np
import pytest

from service.app import build_app
from service.backends.base import PROBE_MESSAGES, SINGLE_STEP, choice_prefixes, plan_verdict
from service.backends.embed_openai import OpenAIEmbedder
from service.backends.judge_openai import OpenAIJudge
from service.backends.replies import ChatCompletion, Embeddings, embedding_matrix
from service.bench.simserver import (
    EMBED_MODEL,
    JUDGE_MODEL,
    EngineModel,
    Seq,
    SimEngine,
    VectorPool,
    advance,
    chat_reply,
    create_app,
    embeddings_reply,
    prompt_tokens,
    schedule_step,
    tokenize,
)
from service.reward.prompt import CHOICES, DEFAULT_PROMPT
from service.settings import Settings
from tests.unit.conftest import TEST_SETTINGS

MESSAGES = DEFAULT_PROMPT.messages("lung infection", "Pneumonia", None, 4000)


# -- the latency model --------------------------------------------------------------------------------------------
def test_a_step_of_t_tokens_takes_t_over_the_rate():
    model = EngineModel(60_000)
    assert model.step_seconds(60_000) == 1.0
    assert model.step_seconds(150) == pytest.approx(0.0025)
    with pytest.raises(ValueError):
        EngineModel(0)


def test_waiting_requests_join_one_step_within_the_budgets():
    model = EngineModel(1000, max_num_seqs=3, max_batched_tokens=250)
    running: list[Seq] = []
    waiting = deque(Seq(100, 0) for _ in range(5))
    work = schedule_step(running, waiting, model)
    # Three sequences admitted (max_num_seqs), the third prefilled in part (the token budget): 100 + 100 + 50.
    assert [t for _, t in work] == [100, 100, 50] and len(running) == 3 and len(waiting) == 2
    finished = advance(work)
    assert len(finished) == 2 and running[2].prefill == 50
    for s in finished:
        running.remove(s)
    work = schedule_step(running, waiting, model)  # the rest of the third, then two more admitted
    assert [t for _, t in work] == [50, 100, 100]


def test_generated_tokens_after_the_first_cost_a_token_a_step():
    model = EngineModel(1000)
    running: list[Seq] = []
    waiting = deque([Seq(10, 2)])  # three tokens generated: with the prompt, then two decoding steps
    steps = 0
    while waiting or running:
        work = schedule_step(running, waiting, model)
        for s in advance(work):
            running.remove(s)
        steps += 1
    assert steps == 3


async def test_concurrent_requests_share_a_step_and_the_busy_time_is_tokens_over_rate():
    engine = SimEngine(EngineModel(10_000))
    start = time.perf_counter()
    await asyncio.gather(*(engine.run(100) for _ in range(5)))
    wall = time.perf_counter() - start
    stats = engine.snapshot()
    assert stats["steps"] == 1 and stats["requests"] == 5 and stats["prompt_tokens"] == 500
    assert stats["busy_s"] == pytest.approx(0.05)
    assert 0.05 <= wall < 1.0
    await engine.close()


async def test_a_request_arriving_during_a_step_waits_for_the_next():
    engine = SimEngine(EngineModel(10_000))
    first = asyncio.create_task(engine.run(500))  # a 50 ms step
    await asyncio.sleep(0.01)
    await engine.run(100)
    await first
    stats = engine.snapshot()
    assert stats["steps"] == 2 and stats["busy_s"] == pytest.approx(0.06)
    engine.reset(20_000)
    assert engine.snapshot()["busy_s"] == 0 and engine.model.tokens_per_s == 20_000
    await engine.close()


# -- replies as the service reads them ----------------------------------------------------------------------------
def test_tokenize_gives_yes_and_no_distinct_first_tokens_so_the_single_step_plan_is_learned():
    context = tokenize(PROBE_MESSAGES, True, False)
    reply_ids = {}
    for prefix in choice_prefixes(CHOICES):
        ids = tokenize([*PROBE_MESSAGES, {"role": "assistant", "content": prefix}], False, True)
        assert ids[:len(context)] == context
        reply_ids[prefix] = ids[len(context):]
    plan = plan_verdict(CHOICES, reply_ids)
    assert plan.mode == SINGLE_STEP
    # The latency model's count: the rendered chat less one end token per message.
    assert len(context) == prompt_tokens(PROBE_MESSAGES) + len(PROBE_MESSAGES)


def test_single_step_reply_is_a_valid_deterministic_verdict_with_finite_logprobs():
    body = {"messages": MESSAGES, "max_tokens": 1, "allowed_token_ids": [10, 11, 12, 13, 14], "logprobs": True,
            "logprob_token_ids": [10, 11, 12, 13, 14], "top_logprobs": 5, "return_tokens_as_token_ids": True}
    reply, prompt, generated = chat_reply(body, JUDGE_MODEL)
    again, _, _ = chat_reply(body, JUDGE_MODEL)
    assert json.dumps(reply["choices"]) == json.dumps(again["choices"])
    parsed = ChatCompletion.model_validate_json(json.dumps(reply))
    step = parsed.choices[0].first_step
    assert step is not None and step.token.startswith("token_id:")
    assert all(math.isfinite(t.logprob) for t in step.top_logprobs)
    assert parsed.choices[0].message.content in CHOICES
    assert reply["usage"] == {"prompt_tokens": prompt, "completion_tokens": 1, "total_tokens": prompt + 1}
    assert generated == 1


def test_constrained_and_json_replies():
    reply, _, _ = chat_reply({"messages": MESSAGES, "structured_outputs": {"choice": CHOICES}, "logprobs": True,
                              "top_logprobs": 5}, JUDGE_MODEL)
    choice = ChatCompletion.model_validate_json(json.dumps(reply)).choices[0]
    assert choice.message.content in CHOICES and {t.token for t in choice.first_step.top_logprobs} == set(CHOICES)
    schema = {"type": "object", "properties": {"score": {"type": "integer", "enum": [0, 1, 2]}}}
    reply, _, _ = chat_reply({"messages": MESSAGES, "structured_outputs": {"json": schema}}, JUDGE_MODEL)
    assert json.loads(reply["choices"][0]["message"]["content"])["score"] in (0, 1, 2)


def test_embeddings_are_deterministic_unit_vectors_of_the_dimension():
    pool = VectorPool(64)
    raw, tokens = embeddings_reply(["a", "pneumonia", "a"], EMBED_MODEL, pool)
    reply = Embeddings.model_validate_json(raw)
    vecs = embedding_matrix(reply.data, 3, "test")
    assert vecs.shape == (3, 64) and np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    assert np.array_equal(vecs[0], vecs[2])
    assert json.loads(raw)["usage"]["prompt_tokens"] == tokens == (1 + 1) + (3 + 1) + (1 + 1)


# -- the service's real backends against it -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim(served: Any) -> Any:
    app = create_app(5_000_000, 50_000_000, dim=32)
    with served(app, ready_path="/health") as url:
        yield app, url


async def test_the_openai_backends_start_against_it_and_learn_the_single_step_plan(sim: Any) -> None:
    app, url = sim
    judge = OpenAIJudge(f"{url}/judge/v1", None, None, 10, max_connections=8)
    embedder = OpenAIEmbedder(f"{url}/embed/v1", None, None, 10, max_batch=4)
    try:
        await judge.start()
        assert judge.model_id == JUDGE_MODEL and judge.describe()["verdict"] == SINGLE_STEP
        out = await judge.verdict(MESSAGES, choices=CHOICES, max_tokens=4, top_logprobs=5)
        assert out.text in CHOICES and set(out.first_token_logprobs) == set(CHOICES)
        assert (await embedder.health())["model"] == EMBED_MODEL
        vecs = await embedder.embed(["a", "b", "c", "d", "e"])  # two requests of at most 4
        assert vecs.shape == (5, 32)
        stats = app.stats()
        assert stats["judge"]["requests"] >= 2 and stats["embed"]["requests"] >= 2
        assert stats["judge"]["busy_s"] > 0
    finally:
        await judge.close()
        await embedder.close()


async def test_the_service_scores_a_batch_on_it(sim: Any) -> None:
    _, url = sim
    settings = Settings(**{**TEST_SETTINGS, "judge_url": f"{url}/judge/v1", "embed_url": f"{url}/embed/v1"})
    assert settings.judge_backend == "openai" and settings.embed_backend == "openai"
    service = build_app(settings)
    items = [{"id": str(i), "response": f"<thinking>t</thinking><answer>answer {i}</answer>",
              "ground_truth": "Pneumonia"} for i in range(6)]
    async with service.router.lifespan_context(service):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=service), base_url="http://t") as c:
            resp = await c.post("/reward", json={"items": items})
            ready = await c.get("/readyz")
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert all(r["details"]["judge_verdict"] in CHOICES and r["details"]["similarity"] is not None for r in results)
    assert ready.json()["components"]["judge"]["verdict"] == SINGLE_STEP, ready.json()
