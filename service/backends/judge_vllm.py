"""Judge on an in-process vLLM engine (AsyncLLM): the embedded default."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from typing import Any

from service.backends.base import Completion, PermanentBackendError, TransientBackendError


class VLLMJudge:
    name = "vllm"

    def __init__(self, model_dir: str, *, max_model_len: int, enforce_eager: bool, memory_fraction: float,
                 served_name: str | None = None) -> None:
        self._model_dir = model_dir
        self._served_name = served_name or model_dir
        self._max_model_len = max_model_len
        self._enforce_eager = enforce_eager
        self._memory_fraction = memory_fraction
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

        args = AsyncEngineArgs(
            model=self._model_dir,
            served_model_name=[self._served_name],
            max_model_len=self._max_model_len,
            enforce_eager=self._enforce_eager,
            gpu_memory_utilization=self._memory_fraction,
            disable_log_stats=True,
        )
        self._engine = AsyncLLM.from_engine_args(args)
        self._tokenizer = self._engine.get_tokenizer()

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
        return {"model": self._served_name, "engine": "in-process"}

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
        from vllm.inputs import TokensPrompt
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
        token_ids = self._tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, enable_thinking=False
        )
        if isinstance(token_ids, Mapping):  # transformers 5 returns a BatchEncoding
            token_ids = token_ids["input_ids"]
        if len(token_ids) + max_tokens > self._max_model_len:
            raise PermanentBackendError(
                f"prompt of {len(token_ids)} tokens exceeds the judge's context of {self._max_model_len}"
            )
        final = None
        try:
            async for out in self._engine.generate(
                TokensPrompt(prompt_token_ids=list(token_ids)), params, f"medix-{next(self._ids)}"
            ):
                final = out
        except Exception as exc:
            raise TransientBackendError(f"engine error: {exc!r}") from exc
        if final is None or not final.outputs:
            raise PermanentBackendError("engine returned no output")
        gen = final.outputs[0]
        first = None
        if gen.logprobs:
            first = {
                (lp.decoded_token if lp.decoded_token is not None else self._tokenizer.decode([tid])): lp.logprob
                for tid, lp in gen.logprobs[0].items()
            }
        return Completion(text=gen.text, first_token_logprobs=first)
