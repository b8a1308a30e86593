"""verl: `custom_reward_function.path=<this file>`, `name=compute_score` (or `compute_score_batch` for the
batch reward manager). Service address from MEDIX_URL / MEDIX_API_KEY, or `url` / `api_key` kwargs.
"""

from __future__ import annotations

from typing import Any

from clients.adapters.common import score_dict, shared_client
from clients.contract import ground_truth as to_ground_truth


def _item(i: int, solution: str, gt: Any, extra: dict[str, Any] | None) -> dict[str, Any]:
    extra = extra or {}
    return {"id": str(i), "response": solution, "ground_truth": to_ground_truth(gt, extra.get("modality")),
            "question": extra.get("question")}


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None,
                  **kwargs: Any) -> dict[str, Any]:
    """verl's per-sample form (NaiveRewardManager)."""
    client = shared_client(kwargs.get("url"), kwargs.get("api_key"))
    (r,) = client.reward([_item(0, solution_str, ground_truth, extra_info)])
    return score_dict(r, "score")


def compute_score_batch(data_sources: list[str], solution_strs: list[str], ground_truths: list[Any],
                        extra_infos: list[dict[str, Any] | None] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """verl's batch form (BatchRewardManager): one request for the whole batch."""
    extras = extra_infos or [None] * len(solution_strs)
    items = [_item(i, s, g, e) for i, (s, g, e) in enumerate(zip(solution_strs, ground_truths, extras, strict=True))]
    return [score_dict(r, "score") for r in shared_client(kwargs.get("url"), kwargs.get("api_key")).reward(items)]
