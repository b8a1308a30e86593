"""Tenants inside the real judge engine: `medix-reward judge-server` schedules by priority, the judge backend
sends each call's priority, and a newcomer's call overtakes the calls another tenant has waiting there."""

from __future__ import annotations

import asyncio

import pytest

from clients.datasets import SLAKE, grpo_batch, read_jsonl
from service.backends.base import CALL_PRIORITY
from service.backends.judge_openai import OpenAIJudge
from service.reward.prompt import CHOICES, DEFAULT_PROMPT, read_verdict

pytestmark = pytest.mark.integration

BULK = 160  # well over the CPU engine's running set (32): most of them wait in its queue


def messages(n: int) -> list[list[dict[str, str]]]:
    items = grpo_batch(list(read_jsonl(SLAKE)), questions=n, samples=1, seed=31)
    return [DEFAULT_PROMPT.messages(f"{i['response'][-40:]} ({k})", i["ground_truth"], None, 4000)
            for k, i in enumerate(items)][:n]


async def verdict(judge: OpenAIJudge, msgs: list[dict[str, str]], priority: int) -> str | None:
    token = CALL_PRIORITY.set(priority)
    try:
        return read_verdict((await judge.verdict(msgs, choices=CHOICES, max_tokens=4, top_logprobs=10)).text)
    finally:
        CALL_PRIORITY.reset(token)


def test_a_newcomers_call_overtakes_the_calls_waiting_in_the_engine(judge_server):
    async def go() -> tuple[int, list[str | None], dict]:
        judge = OpenAIJudge(judge_server, None, None, timeout_s=300, max_connections=BULK + 8)
        await judge.start()
        done: list[str] = []
        try:
            async def bulk(msgs):
                out = await verdict(judge, msgs, priority=100)
                done.append("a")
                return out

            calls = messages(BULK + 1)
            tasks = [asyncio.create_task(bulk(m)) for m in calls[:BULK]]
            await asyncio.sleep(1.0)  # tenant A's calls are all at the engine, most of them waiting
            assert len(done) < BULK // 2, "the engine finished the bulk before the newcomer came"
            answer = await verdict(judge, calls[BULK], priority=0)
            overtaken = BULK - len(done)
            answers = await asyncio.gather(*tasks)
            return overtaken, [answer, *answers], judge.describe()
        finally:
            await judge.close()

    overtaken, answers, described = asyncio.run(go())
    assert described["tenant_priority"] == "sent"  # the server took the field: no fallback
    assert all(a in CHOICES for a in answers)
    # In arrival order it would have waited for every one of A's calls; by priority it passes those still waiting.
    assert overtaken >= BULK // 3, overtaken
