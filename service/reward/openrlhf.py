"""OpenRLHF's remote reward protocol (`--remote_rm_url http://host:port/get_reward`) in terms of /reward."""

from __future__ import annotations

from clients.contract import COMPONENTS
from service.errors import InvalidRequest
from service.protocol import OpenRLHFRequest, OpenRLHFResponse, RewardRequest, RewardResponse

# End-of-turn markers a decoded sequence may still carry after the response.
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>")


def response_of(query: str, prompt: str | None) -> str:
    text = query[len(prompt):] if prompt and query.startswith(prompt) else query
    text = text.rstrip()
    changed = True
    while changed:
        changed = False
        for marker in END_MARKERS:
            if text.endswith(marker):
                text, changed = text[: -len(marker)].rstrip(), True
    return text


def to_reward_request(req: OpenRLHFRequest) -> RewardRequest:
    if len(req.labels) != len(req.query):
        raise InvalidRequest(f"{len(req.labels)} labels for {len(req.query)} queries", param="labels")
    if req.prompts is not None and len(req.prompts) != len(req.query):
        raise InvalidRequest(f"{len(req.prompts)} prompts for {len(req.query)} queries", param="prompts")
    prompts = req.prompts or [None] * len(req.query)
    items = [{"id": str(i), "response": response_of(q, p), "ground_truth": label}
             for i, (q, p, label) in enumerate(zip(req.query, prompts, req.labels, strict=True))]
    try:
        return RewardRequest.model_validate({"items": items})
    except ValueError as exc:
        raise InvalidRequest(f"labels: {exc}", param="labels") from exc


def from_reward_response(resp: RewardResponse) -> OpenRLHFResponse:
    overall = [r.overall for r in resp.results]
    logs: dict[str, list[float | None]] = {
        name: [getattr(r, name) for r in resp.results]
        for name in COMPONENTS
    }
    return OpenRLHFResponse(rewards=overall, scores=overall, extra_logs=logs)
