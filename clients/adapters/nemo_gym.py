"""NeMo Gym 0.7 (NVIDIA's environment layer under NeMo-RL): a resources server whose `/verify` is the MediX reward.

One file: this module is the server's `app.py` (copy it to `resources_servers/medix/app.py`, or write
`from clients.adapters.nemo_gym import MedixResourcesServer; MedixResourcesServer.run_webserver()` there), with
medix-client installed in the server's environment and a config such as

    medix:
      resources_servers:
        medix:
          entrypoint: app.py
          domain: knowledge
          medix_url: http://reward-host:8000     # default MEDIX_URL; medix_api_key default MEDIX_API_KEY

`POST /verify` takes NeMo Gym's verify request (`responses_create_params`, the policy's `response`) plus the row's
reference: `ground_truth` (`<TAG>answer`, a plain answer or an object), else `expected_answer` (NeMo Gym's own
name, also read from `metadata`), with an optional `modality` tag. It sends one /reward item (the last assistant
message's text, the last user message as the question) and answers NeMo Gym's verify reply: `reward` (overall),
`reward_components` (format, accuracy_llm, accuracy_embed, modality; a null modality as 0) and the same four as
top-level numbers `medix_format`, … (NeMo Gym's metrics read top-level numbers; verifiers' NeMo Gym taskset records
them as metrics).

When the service cannot score (`on_failure: mask`, the default, NeMo Gym's own convention):
- an outage (or any failed call to the service) raises NeMo Gym's `JudgeError`: its `judge_failsafe` answers
  `mask_sample: true`, `failure_kind: judge_failed` and `_ng_failure_class`, so rollout collection files the row
  with the failures (retried on resume) and out of the metrics; its `reward` field is 0.0 (NeMo Gym's, masked);
- an item the service refused answers `mask_sample: true`, `failure_kind: verifier_error`, `failure_reason`.
With `on_failure: error` both are HTTP errors instead (503, or the service's own status; 422 for a refused item):
use it under verifiers' NeMo Gym taskset, which reads `reward` and ignores `mask_sample`.

This module imports NeMo Gym: it is for NeMo Gym's environment only, and nothing else in clients/ imports it.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import HTTPException
from nemo_gym.base_resources_server import (
    BaseMultiRewardVerifyResponse,
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    SimpleResourcesServer,
)
from nemo_gym.failure_kinds import VERIFIER_ERROR
from nemo_gym.judge import JudgeError
from pydantic import Field

from clients.adapters.common import client_options, shared_async_client, unscored
from clients.client import MedixError, MedixUnavailable, RewardScore
from clients.contract import COMPONENTS, numeric_scores, refused_scores
from clients.contract import ground_truth as to_ground_truth

METRIC_PREFIX = "medix_"


class MedixResourcesServerConfig(BaseResourcesServerConfig):
    """The server's config block: the service's address and key (default MEDIX_URL / MEDIX_API_KEY), the /reward
    profile, the client's timeout and retries (default MEDIX_TIMEOUT / MEDIX_RETRIES, else the adapters' trainer
    defaults), and what an unscored sample answers (`mask` or `error`)."""

    medix_url: str | None = None
    medix_api_key: str | None = None
    medix_profile: str | None = None
    medix_timeout: float | None = Field(None, gt=0)
    medix_retries: int | None = Field(None, ge=0)
    on_failure: Literal["mask", "error"] = "mask"


class MedixVerifyRequest(BaseVerifyRequest):
    ground_truth: str | dict[str, Any] | None = None
    expected_answer: str | None = None
    modality: str | None = None
    question: str | None = None
    metadata: dict[str, Any] | None = None


class MedixVerifyResponse(MedixVerifyRequest, BaseMultiRewardVerifyResponse):
    medix_format: float = 0.0
    medix_accuracy_llm: float = 0.0
    medix_accuracy_embed: float = 0.0
    medix_modality: float = 0.0


def _text(content: Any) -> str | None:
    """A message's text: a string, or its text parts joined with newlines (as NeMo Gym's own judges join them)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [t for part in content
                 if isinstance(t := (part.get("text") if isinstance(part, dict) else getattr(part, "text", None)),
                               str)]
        return "\n".join(texts) if texts else None
    return None


def response_text(body: BaseVerifyRequest) -> str:
    """The last assistant message of the policy's response (empty when it has none: the format scores that)."""
    for item in reversed(body.response.output):
        if getattr(item, "type", None) == "message" and getattr(item, "role", None) == "assistant":
            return _text(getattr(item, "content", None)) or ""
    return ""


def question_text(body: MedixVerifyRequest) -> str | None:
    """The request's `question`, else the last user message of `responses_create_params.input`."""
    if body.question:
        return body.question
    params = body.responses_create_params.input
    if isinstance(params, str):
        return params
    last = None
    for message in params or []:
        role = message.get("role") if isinstance(message, dict) else getattr(message, "role", None)
        if role == "user":
            content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
            last = _text(content) or last
    return last


def reference(body: MedixVerifyRequest) -> str | dict[str, Any]:
    answer = body.ground_truth
    if answer is None:
        answer = body.expected_answer
    if answer is None and body.metadata:
        answer = body.metadata.get("expected_answer")
    if answer is None:
        raise HTTPException(422, "the /verify request has no ground_truth or expected_answer for the MediX reward")
    return to_ground_truth(answer, body.modality)


def reply(body: MedixVerifyRequest, numbers: dict[str, float], **extra: Any) -> MedixVerifyResponse:
    components = {name: numbers[name] for name in COMPONENTS}
    return MedixVerifyResponse(**body.model_dump(), reward=numbers["overall"], reward_components=components,
                               **{f"{METRIC_PREFIX}{name}": value for name, value in components.items()}, **extra)


class MedixResourcesServer(SimpleResourcesServer):
    """A NeMo Gym resources server backed by the MediX reward service (no tools, no session state)."""

    ray_enabled = False
    config: MedixResourcesServerConfig

    def _options(self) -> dict[str, Any]:
        c = self.config
        return client_options({"url": c.medix_url, "api_key": c.medix_api_key, "timeout": c.medix_timeout,
                               "retries": c.medix_retries})

    async def verify(self, body: MedixVerifyRequest) -> MedixVerifyResponse:
        item = {"id": "0", "response": response_text(body), "ground_truth": reference(body),
                "question": question_text(body)}
        try:
            [result] = await shared_async_client(**self._options()).reward([item], self.config.medix_profile)
        except MedixError as exc:
            if self.config.on_failure == "error":
                status = exc.status if 400 <= exc.status < 600 and not isinstance(exc, MedixUnavailable) else 503
                raise HTTPException(status, f"MediX reward service: {exc}") from exc
            raise JudgeError(f"MediX reward service: {type(exc).__name__}: {exc}") from exc
        return self._scored(body, result)

    def _scored(self, body: MedixVerifyRequest, result: RewardScore) -> MedixVerifyResponse:
        if not unscored(result):
            return reply(body, numeric_scores(result))
        message = (result.error or {}).get("message", "no score returned")
        if self.config.on_failure == "error":
            raise HTTPException(422, f"MediX could not score this sample: {message}")
        numbers = refused_scores(result, 0.0)
        return reply(body, numbers, mask_sample=True, failure_kind=VERIFIER_ERROR,
                     failure_reason=f"MediX could not score this sample: {message}"[:2000])


if __name__ == "__main__":
    MedixResourcesServer.run_webserver()
