"""Judge on an in-process vLLM engine (AsyncLLM): the embedded default."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from service.backends.base import (
    CALL_PRIORITY,
    DEFAULT_CHOICES,
    PROBE_MESSAGES,
    Completion,
    PermanentBackendError,
    TransientBackendError,
    VerdictPlan,
    choice_prefixes,
    finite_logprobs,
    plan_verdict,
    single_step_completion,
)
from service.runtime.exceptions import InputRejected
from service.runtime.usage import judge_reply

log = logging.getLogger("medix.judge")

# The conversation in which the choices' first tokens are learned and the single-step call is tried once.


class VLLMJudge:
    name = "vllm"

    def __init__(self, model_dir: str, *, max_model_len: int, enforce_eager: bool, memory_fraction: float,
                 served_name: str | None = None, dtype: str = "auto", dtype_reason: str = "vLLM's default",
                 verdict_choices: Sequence[str] = DEFAULT_CHOICES, single_step: bool = True,
                 max_num_seqs: int | None = None, block_size: int | None = None) -> None:
        self._model_dir = model_dir
        self._max_num_seqs = max_num_seqs
        self._block_size = block_size
        self._served_name = served_name or model_dir
        self._max_model_len = max_model_len
        self._enforce_eager = enforce_eager
        self._memory_fraction = memory_fraction
        self._dtype, self._dtype_reason = dtype, dtype_reason
        self._choices = tuple(verdict_choices)
        self._use_single_step = single_step
        self._plan: VerdictPlan | None = None
        self._engine: Any = None
        self._tokenizer: Any = None
        self._ids = itertools.count()

    @property
    def model_id(self) -> str:
        return self._served_name

    async def start(self) -> None:
        # Imported here: vLLM is heavy and only this backend needs it.
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        log.info("judge engine dtype: %s (%s)", self._dtype, self._dtype_reason)
        args = AsyncEngineArgs(
            model=self._model_dir,
            served_model_name=[self._served_name],
            max_model_len=self._max_model_len,
            enforce_eager=self._enforce_eager,
            gpu_memory_utilization=self._memory_fraction,
            dtype=self._dtype,
            disable_log_stats=True,
            scheduling_policy="priority",  # each call carries its tenant's priority (service/runtime/scheduling.py)
            **({"max_num_seqs": self._max_num_seqs} if self._max_num_seqs else {}),
            # Whole blocks are what the prefix cache reuses: see service/engine/cpu.py engine_block_size.
            **({"block_size": self._block_size} if self._block_size else {}),
        )
        self._engine = AsyncLLM.from_engine_args(args)
        self._tokenizer = self._engine.get_tokenizer()
        self._plan = await self._learn_plan()
        level = logging.INFO if self._plan.token_choice else logging.WARNING
        log.log(level, "judge verdict: %s (%s)", self._plan.mode, self._plan.reason)

    async def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    async def health(self) -> dict[str, Any]:
        if self._engine is None:
            raise TransientBackendError("engine not started")
        try:
            await self._engine.check_health()
        except Exception as exc:
            raise TransientBackendError(f"engine unhealthy: {exc!r}") from exc
        return {"model": self._served_name, "engine": "in-process", **self.describe()}

    def describe(self) -> dict[str, Any]:
        plan = self._plan.describe() if self._plan else {"verdict": "not learned yet (engine not started)"}
        # The block the engine took (vLLM may override a setting), in which it reuses cached prompt prefixes.
        config = getattr(self._engine, "vllm_config", None)
        block = config.cache_config.block_size if config is not None else self._block_size
        return {"dtype": self._dtype, "dtype_reason": self._dtype_reason, "kv_block_size": block, **plan}

    def _chat_ids(self, messages: list[dict[str, str]], reply: str | None = None) -> list[int]:
        """The token ids the model sees: the chat template with the generation prompt, or continuing `reply` as
        the assistant's message."""
        if reply is None:
            token_ids = self._tokenizer.apply_chat_template(
                messages, tokenize=True, add_generation_prompt=True, enable_thinking=False
            )
        else:
            token_ids = self._tokenizer.apply_chat_template(
                [*messages, {"role": "assistant", "content": reply}], tokenize=True, add_generation_prompt=False,
                continue_final_message=True, enable_thinking=False,
            )
        if isinstance(token_ids, Mapping):  # transformers 5 returns a BatchEncoding
            token_ids = token_ids["input_ids"]
        return list(token_ids)

    async def _generate(self, token_ids: list[int], params: Any, max_tokens: int) -> Any:
        from vllm.inputs import TokensPrompt

        if self._engine is None:
            raise TransientBackendError("engine not started")
        if len(token_ids) + max_tokens > self._max_model_len:
            raise InputRejected(  # this one input is too long; the item fails alone, the engine is fine
                f"prompt of {len(token_ids)} tokens exceeds the judge's context of {self._max_model_len}"
            )
        final = None
        try:
            async for out in self._engine.generate(
                TokensPrompt(prompt_token_ids=token_ids), params, f"medix-{next(self._ids)}",
                priority=CALL_PRIORITY.get(),
            ):
                final = out
        except Exception as exc:
            raise TransientBackendError(f"engine error: {exc!r}") from exc
        if final is None or not final.outputs:
            raise PermanentBackendError("engine returned no output")
        judge_reply(len(token_ids), len(final.outputs[0].token_ids))  # as a server's `usage` counts them
        return final.outputs[0]

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        choice: list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
        top_logprobs: int | None = None,
    ) -> Completion:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if self._engine is None:
            raise TransientBackendError("engine not started")
        structured = None
        if choice is not None:
            structured = StructuredOutputsParams(choice=choice)
        elif json_schema is not None:
            structured = StructuredOutputsParams(json=json.dumps(json_schema))
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, logprobs=top_logprobs or None,
                                structured_outputs=structured)
        gen = await self._generate(self._chat_ids(messages), params, max_tokens)
        first = None
        if gen.logprobs:  # a NaN or infinite logprob (e.g. an fp16 overflow) is no evidence: left out
            first = finite_logprobs(
                (lp.decoded_token if lp.decoded_token is not None else self._tokenizer.decode([tid]), lp.logprob)
                for tid, lp in gen.logprobs[0].items()
            )
        return Completion(text=gen.text or "", first_token_logprobs=first)

    # -- the reward's verdict: one decoding step ------------------------------------------------------------
    async def _single_step(self, token_ids: list[int], plan: VerdictPlan) -> Completion | None:
        from vllm import SamplingParams

        ids = plan.token_ids
        # Only the choices' first tokens may be emitted, and their logprobs come back (from the distribution
        # before the restriction: their ratio is what the restricted step decides on).
        params = SamplingParams(temperature=0.0, max_tokens=1, allowed_token_ids=ids, logprob_token_ids=ids)
        gen = await self._generate(token_ids, params, 1)
        if not gen.token_ids:
            return None
        step = gen.logprobs[0] if gen.logprobs else {}
        logprobs = finite_logprobs((tid, lp.logprob) for tid, lp in step.items())  # NaN, inf: no evidence
        return single_step_completion(plan, int(gen.token_ids[0]), logprobs)

    async def _learn_plan(self) -> VerdictPlan:
        """The choices' first tokens from the engine's tokenizer, then one single-step call to see that the engine
        takes it; the constrained call where either fails."""
        if not self._use_single_step:
            return VerdictPlan(self._choices, None, "single-step verdicts switched off")
        try:
            context = self._chat_ids(PROBE_MESSAGES)
            reply_ids: dict[str, list[int]] = {}
            for prefix in choice_prefixes(self._choices):
                ids = self._chat_ids(PROBE_MESSAGES, prefix)
                if ids[:len(context)] != context:
                    return VerdictPlan(self._choices, None, "the chat template does not continue an assistant reply "
                                       "after the generation prompt")
                reply_ids[prefix] = ids[len(context):]
        except Exception as exc:  # a template without continue_final_message support, ...
            return VerdictPlan(self._choices, None, f"the tokenizer cannot write a reply: {exc!r}"[:300])
        plan = plan_verdict(self._choices, reply_ids)
        if plan.token_choice is None:
            return plan
        try:
            out = await self._single_step(context, plan)
        except (TransientBackendError, PermanentBackendError) as exc:
            return VerdictPlan(self._choices, None, f"the engine refused the single-step call: {exc}"[:300])
        if out is None or out.first_token_logprobs is None:
            return VerdictPlan(self._choices, None, "the engine's single-step call gave no logprobs")
        return plan

    async def verdict(self, messages: list[dict[str, str]], *, choices: Sequence[str], max_tokens: int,
                      top_logprobs: int) -> Completion:
        plan = self._plan
        if plan is not None and plan.token_choice is not None and tuple(choices) == self._choices:
            out = await self._single_step(self._chat_ids(messages), plan)
            if out is not None:
                return out
        return await self.complete(messages, max_tokens=max_tokens, choice=list(choices), top_logprobs=top_logprobs)
