"""The single-step verdict gives the constrained call's verdicts, on a few hundred real pairs, on the real server."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from clients.datasets import SLAKE, grpo_batch, read_jsonl
from service.backends.base import SINGLE_STEP
from service.backends.judge_openai import OpenAIJudge
from service.reward.profiles import PROFILES
from service.reward.prompt import CHOICES, DEFAULT_PROMPT, VerdictPrompt, p_yes, read_verdict
from service.reward.scorer import prepare
from service.reward.wire import RewardRequest

pytestmark = pytest.mark.integration

PAIRS = 200
# The small local judge says YES to nearly every pair under the default prompt; this two-line prompt splits its
# verdicts (about a quarter NO, many near p = 0.5), where a difference between the paths would show first.
SPLIT_PROMPT = VerdictPrompt(version="test-split", system="Reply NO or YES.",
                           user="A: {reference}\nB: {answer}\nIs B different from A?")
# (prompt, how many of the pairs): the default prompt costs 3x the engine time per verdict, so on fewer pairs
# (the whole test stays near two minutes on a 2-core machine).
RUNS = ((DEFAULT_PROMPT, 50), (SPLIT_PROMPT, PAIRS))
# How far p(YES) of the two paths may differ: bf16 rounding (see the test), on any CPU.
P_TOLERANCE = 0.1


def judged_pairs(n: int) -> list[tuple[str, str]]:
    """Distinct (answer, reference) pairs that reach the judge, from a GRPO-shaped batch on the bundled SLAKE."""
    items = grpo_batch(list(read_jsonl(SLAKE)), questions=128, samples=4, seed=13)
    parsed = RewardRequest.model_validate({"items": items}).items
    prepared = [prepare(i, item, PROFILES["medix-r1"]) for i, item in enumerate(parsed)]
    pairs = list(dict.fromkeys((p.answer, p.reference) for p in prepared if p.decided_by == "backends"))
    assert len(pairs) >= n
    return pairs[:n]


async def both_paths(url: str, pairs: list[tuple[str, str]]) -> tuple[list, list, dict]:
    """Each run's pairs through the constrained call, then through the single step (as the service asks)."""
    judge = OpenAIJudge(url, None, None, timeout_s=300, max_connections=32)
    await judge.start()
    slots = asyncio.Semaphore(32)

    async def one(prompt: VerdictPrompt, pair: tuple[str, str], single: bool):
        messages = prompt.messages(pair[0], pair[1], None, 4000)
        async with slots:
            if single:
                return await judge.verdict(messages, choices=CHOICES, max_tokens=4, top_logprobs=10)
            return await judge.complete(messages, max_tokens=4, choice=CHOICES, top_logprobs=10)

    try:
        constrained, single = [], []
        for prompt, n in RUNS:
            constrained += await asyncio.gather(*(one(prompt, p, False) for p in pairs[:n]))
            single += await asyncio.gather(*(one(prompt, p, True) for p in pairs[:n]))
        return constrained, single, judge.describe()
    finally:
        await judge.close()


def test_single_step_and_constrained_verdicts_agree(judge_server, capsys):
    pairs = judged_pairs(PAIRS)
    start = time.perf_counter()
    constrained, single, described = asyncio.run(both_paths(judge_server, pairs))
    seconds = time.perf_counter() - start
    assert described["verdict"] == SINGLE_STEP, described
    assert len(constrained) == sum(n for _, n in RUNS)

    verdicts = [(read_verdict(c.text), read_verdict(s.text)) for c, s in zip(constrained, single, strict=True)]
    assert all(v in CHOICES for pair in verdicts for v in pair)
    agree = sum(c == s for c, s in verdicts)
    p_diff = [abs(p_yes(c.first_token_logprobs, vc) - p_yes(s.first_token_logprobs, vs))
              for c, s, (vc, vs) in zip(constrained, single, verdicts, strict=True)]
    yes = sum(c == "YES" for c, _ in verdicts)
    with capsys.disabled():
        print(f"\nverdict paths: {agree}/{len(verdicts)} verdicts agree on {len(pairs)} SLAKE pairs under "
              f"{len(RUNS)} prompts ({yes} YES by the constrained call); "
              f"p(YES) differs by at most {max(p_diff):.2e} (median {sorted(p_diff)[len(p_diff) // 2]:.2e}); "
              f"{seconds:.0f} s for both paths")
    # The same softmax over the tokens that can begin YES or NO, from the same engine, but not bit for bit: the
    # engine batches the two paths' calls differently, and in bf16 (the judge's dtype on a CPU with native bf16)
    # a logit of magnitude ~20 carries ~2^-8 relative rounding per operation, i.e. up to ~0.3 in a logit gap,
    # which moves p(YES) by at most a quarter of that. Reading the wrong tokens moves it by far more than 0.1.
    assert all(math.isfinite(d) for d in p_diff) and max(p_diff) < P_TOLERANCE, max(p_diff)
    # Where p(YES) is that close to 0.5 the rounding may flip the greedy verdict; elsewhere both paths agree.
    p_constrained = [p_yes(c.first_token_logprobs, vc) for c, (vc, _) in zip(constrained, verdicts, strict=True)]
    firm = [(vc, vs) for (vc, vs), p in zip(verdicts, p_constrained, strict=True) if abs(p - 0.5) > P_TOLERANCE]
    assert len(firm) >= 20  # the default prompt's confident YES verdicts alone give more
    assert all(vc == vs for vc, vs in firm), [v for v in firm if v[0] != v[1]]
    assert 0 < yes < len(verdicts)  # both verdicts were compared
