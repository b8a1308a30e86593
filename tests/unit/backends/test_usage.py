"""Each backend reports the tokens of every call it makes for a request: from the server's `usage` (the judge's
constrained and single-step calls, the embeddings server where it reports them) or from the engine's own token ids
(the in-process judge). Outside a request nothing is counted."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from service.backends.base import VerdictPlan
from service.reward.prompt import CHOICES
from service.runtime import usage
from tests.unit.backends import test_malformed
from tests.unit.backends.test_malformed import MESSAGES, EmbedServer, Output, embedder, engine_judge
from tests.unit.backends.test_verdict import FakeVLLM, judge_on, verdict

vllm_stub = test_malformed.vllm_stub  # the fixture: vllm's import surface, the engine faked


class CountingVLLM(FakeVLLM):
    """FakeVLLM whose chat replies report `usage` as vLLM does."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        resp = super().__call__(request)
        if request.url.path != "/v1/chat/completions" or resp.status_code != 200:
            return resp
        body = json.loads(resp.content)
        body["usage"] = {"prompt_tokens": 57, "completion_tokens": 1, "total_tokens": 58}
        return httpx.Response(200, json=body)


def counting() -> tuple[usage.Usage, object]:
    spent = usage.Usage("lab-a", "/reward")
    return spent, usage.CURRENT.set(spent)


async def test_the_judge_servers_usage_is_counted_for_the_request_on_either_verdict_path():
    for server, mode in ((CountingVLLM(), "single-step"), (CountingVLLM(no_tokenize=True), "constrained")):
        j = judge_on(server)
        await j.start()  # learning the verdict's first tokens is nobody's request
        assert j.describe()["verdict"] == mode
        spent, token = counting()
        try:
            await verdict(j)
            await j.complete(MESSAGES, max_tokens=24, json_schema={"type": "object"})
        finally:
            usage.CURRENT.reset(token)
            await j.close()
        assert spent.counts() == {"judge_prompt_tokens": 114, "judge_completion_tokens": 2, "embed_tokens": 0,
                                  "judge_calls": 2}, mode


@pytest.mark.usefixtures("vllm_stub")
async def test_the_in_process_engine_counts_its_own_token_ids():
    out = Output("YES", [73, 2], [])
    spent, token = counting()
    try:
        await engine_judge(out).complete(MESSAGES, max_tokens=4, choice=CHOICES, top_logprobs=5)
        plan = VerdictPlan(("YES", "NO"), {73: "YES", 62: "NO"}, "")
        await engine_judge(Output("YES", [73], [{}]), plan).verdict(MESSAGES, choices=CHOICES, max_tokens=4,
                                                                   top_logprobs=5)
    finally:
        usage.CURRENT.reset(token)
    # The fake tokenizer writes every prompt as 3 tokens; the engine generated 2, then 1.
    assert spent.counts() == {"judge_prompt_tokens": 6, "judge_completion_tokens": 3, "embed_tokens": 0,
                              "judge_calls": 2}


async def test_the_embeddings_servers_usage_is_counted_where_it_reports_one():
    def vectors(n: int) -> list[dict]:
        return [{"index": i, "embedding": [3.0, 4.0 + i]} for i in range(n)]

    reporting, silent = EmbedServer(vectors), EmbedServer(raw=json.dumps({"data": vectors(3)}).encode())
    spent, token = counting()
    try:
        e = embedder(reporting)  # reports `prompt_tokens` = the number of texts, per call of up to 8
        assert np.asarray(await e.embed([f"t{i}" for i in range(11)])).shape == (11, 2)
        await embedder(silent).embed(["a", "b", "c"])  # TEI-like: no usage
    finally:
        usage.CURRENT.reset(token)
    assert reporting.posts == 2 and spent.embed_tokens == 11 and spent.judge_calls == 0
    await e.embed(["outside"])  # no request: nobody's
    assert spent.embed_tokens == 11
