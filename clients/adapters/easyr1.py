"""EasyR1 (the framework MediX-R1 was trained with): `worker.reward.reward_function=<this file>:compute_score`.

EasyR1's batch reward manager calls `compute_score(reward_inputs, **reward_kwargs)` with one dict per sample
(`response`, `response_length`, `ground_truth`) and expects one dict of scores back, with `overall`.
Service address from MEDIX_URL / MEDIX_API_KEY, or the `url` / `api_key` reward kwargs.
"""

from __future__ import annotations

from typing import Any

from clients.adapters.common import score_dict, shared_client
from clients.contract import ground_truth


def compute_score(reward_inputs: list[dict[str, Any]], url: str | None = None, api_key: str | None = None,
                  profile: str | None = None, **_: Any) -> list[dict[str, float]]:
    if not isinstance(reward_inputs, list):
        raise ValueError("compute_score expects the batch form: a list of reward inputs")
    items = [{"id": str(i), "response": x["response"], "ground_truth": ground_truth(x["ground_truth"],
                                                                                     x.get("modality"))}
             for i, x in enumerate(reward_inputs)]
    results = shared_client(url, api_key).reward(items, profile)
    return [score_dict(r) for r in results]
