"""On the real CPU judge server: the verdict prompt's shared part is served from the engine's prefix cache, which
vLLM's CPU default of 128-token blocks would not do for a shared part of ~110 tokens."""

from __future__ import annotations

import asyncio
import uuid

from service.backends.judge_openai import OpenAIJudge
from service.bench.load import prefix_cache_tokens
from service.reward.prompt import CHOICES, DEFAULT_PROMPT, VerdictPrompt


def test_a_second_verdict_reuses_the_prompts_fixed_part_in_32_token_blocks(judge_server):
    # A system prompt no earlier test sent, so that the first call finds nothing cached.
    prompt = VerdictPrompt(version="t", system=f"[{uuid.uuid4().hex[:8]}] {DEFAULT_PROMPT.system}",
                           user=DEFAULT_PROMPT.user)

    async def run() -> tuple[float, float]:
        judge = OpenAIJudge(judge_server, None, None, 120.0, 4)
        await judge.start()
        try:
            async def verdict(answer: str, reference: str) -> tuple[float, float]:
                before = await prefix_cache_tokens(judge_server)
                await judge.verdict(prompt.messages(answer, reference, None, 4000), choices=CHOICES, max_tokens=4,
                                    top_logprobs=10)
                after = await prefix_cache_tokens(judge_server)
                assert before is not None and after is not None, "the judge server reports no prefix-cache counters"
                return after[0] - before[0], after[1] - before[1]

            first_queried, first_hits = await verdict("left lung", "Pneumonia")
            queried, hits = await verdict("a mass in the liver", "Liver cancer")  # another group: the fixed part
            assert first_hits < 32 <= first_queried  # nothing of this prompt was cached yet
            return queried, hits
        finally:
            await judge.close()

    queried, hits = asyncio.run(run())
    # The fixed part (system message and chat header, ~110 tokens) holds three whole 32-token blocks; with
    # 128-token blocks it would hold none and every token would be computed again.
    assert hits >= 96 and hits % 32 == 0, (queried, hits)
