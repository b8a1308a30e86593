"""OpenRLHF's remote reward protocol (`--reward.remote_url http://host:port/get_reward`) in terms of /reward.

OpenRLHF posts `{"query", "prompts", "labels"}`, `query` being the decoded prompt + response tokens. The response
is found with the same function the client-side reward file uses (clients/contract.py): after the prompt,
after the prompt's longest surviving tail (a left-truncated prompt, or image placeholders a vision-language
processor expanded), or after the last assistant-turn marker. A query whose response cannot be found is a 422
naming `query[i]`: a prompt is never scored as the response.

OpenRLHF turns every `extra_logs` value into a tensor and splits them per sample, so they are numbers only (a null
modality is 0 there) under the same keys for every sample.

Empty lists (OpenRLHF 0.10.2-0.11.0 send them to every URL after the first of several) get empty lists back. An item
the service could not score fails the request (422 naming `query[i]`), unless the caller opted to go on
(`/get_reward?on_refused=skip&refused_reward=R`): then it scores R and `extra_logs` carries `medix_refused`.
"""

from __future__ import annotations

from typing import Literal

from clients.contract import COMPONENTS, REFUSED_KEY, ResponseNotFound, numeric_scores, refused_scores, response_of
from service.reward.wire import OpenRLHFRequest, OpenRLHFResponse, RewardRequest, RewardResponse
from service.runtime.exceptions import InputRejected, InvalidRequest

__all__ = ["empty_response", "from_reward_response", "response_of", "to_reward_request"]

OnRefused = Literal["raise", "skip"]


def empty_response(on_refused: OnRefused = "raise") -> OpenRLHFResponse:
    """The reply to empty lists: no sample, the same keys as a reply with samples."""
    keys = (*COMPONENTS, REFUSED_KEY) if on_refused == "skip" else COMPONENTS
    return OpenRLHFResponse(rewards=[], scores=[], extra_logs={name: [] for name in keys})


def to_reward_request(req: OpenRLHFRequest) -> RewardRequest | None:
    """The /reward request for OpenRLHF's lists; None for empty lists (nothing to score)."""
    if len(req.labels) != len(req.query):
        raise InvalidRequest(f"{len(req.labels)} labels for {len(req.query)} queries", param="labels")
    if req.prompts is not None and len(req.prompts) != len(req.query):
        raise InvalidRequest(f"{len(req.prompts)} prompts for {len(req.query)} queries", param="prompts")
    if not req.query:
        return None
    prompts = req.prompts or [None] * len(req.query)
    items = []
    for i, (query, prompt, label) in enumerate(zip(req.query, prompts, req.labels, strict=True)):
        try:
            response = response_of(query, prompt)
        except ResponseNotFound as exc:
            raise InvalidRequest(f"query[{i}]: {exc} (prompts[{i}] is not scored as a response)",
                                 param=f"query[{i}]") from exc
        items.append({"id": str(i), "response": response, "ground_truth": label})
    try:
        return RewardRequest.model_validate({"items": items})
    except ValueError as exc:
        raise InvalidRequest(f"labels: {exc}", param="labels") from exc


def from_reward_response(resp: RewardResponse, on_refused: OnRefused = "raise",
                         refused_reward: float = 0.0) -> OpenRLHFResponse:
    """Numbers only: an item the service could not score fails the request (422 naming `query[i]`), since
    OpenRLHF cannot hold a null reward, or with `on_refused="skip"` scores `refused_reward` (`medix_refused` 1.0 in
    `extra_logs`, 0.0 for the others); a null modality (no modality tag in the label) is 0 in `extra_logs`."""
    scores = []
    for i, r in enumerate(resp.results):
        if r.overall is None or r.error is not None:
            if on_refused == "skip":
                scores.append(refused_scores(r, refused_reward))
                continue
            message = r.error.message if r.error is not None else "no score"
            raise InputRejected(f"query[{i}] could not be scored: {message}", param=f"query[{i}]")
        scores.append({**numeric_scores(r), REFUSED_KEY: 0.0})
    keys = (*COMPONENTS, REFUSED_KEY) if on_refused == "skip" else COMPONENTS
    overall = [s["overall"] for s in scores]
    logs: dict[str, list[float | None]] = {name: [s[name] for s in scores] for name in keys}
    return OpenRLHFResponse(rewards=overall, scores=overall, extra_logs=logs)
