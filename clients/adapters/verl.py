"""verl: the reward function file for `reward.custom_reward_function` (verl 0.9.1; see docs/frameworks.md).

    reward.custom_reward_function.path=<this file>
    reward.custom_reward_function.name=compute_score           # reward.reward_manager.name=naive (the default)
    reward.custom_reward_function.name=compute_score_sync      # reward.reward_manager.name=remote
    +reward.custom_reward_function.reward_kwargs.url=http://host:8000

- `compute_score` is `async def`: verl's reward-loop managers (`naive`, `dapo`, `gdpo`) await it, one sample per
  call, on their event loop.
- `compute_score_sync` is the same score for the `remote` manager (which refuses async functions) and for the
  per-sample managers of older verl.
- `compute_score_batch` is the batch form (`BatchRewardManager`): one request for the whole batch.

Keyword arguments (verl's `reward_kwargs`): `url`, `api_key` (default MEDIX_URL / MEDIX_API_KEY), `profile`,
`timeout`, `retries` (default 180 s a try and 3 retries, or MEDIX_TIMEOUT / MEDIX_RETRIES), `on_refused`,
`refused_reward`. Every sample's dict carries the same keys, all numbers: `score` and the four components (the
names `algorithm.gdpo_reward_keys` can list), and `medix_refused` with `on_refused=skip`.
An outage raises `MedixUnavailable`: never a 0. An item the service could not score raises `ItemFailed`, or, with
`on_refused=skip` (verl has no "no reward" for a sample), scores `refused_reward` (default 0.0) with
`medix_refused` 1.0, and the count is logged.
This module keeps no state of its own (verl's `remote` manager pickles the function into Ray workers); the
pooled clients live in clients.adapters.common.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clients.adapters.common import client_options, refused_options, scores, shared_async_client, shared_client
from clients.contract import ground_truth as to_ground_truth


def _item(i: int, solution: str, gt: Any, extra: Any) -> dict[str, Any]:
    extra = extra if isinstance(extra, dict) else {}
    question = extra.get("question")
    return {"id": str(i), "response": str(solution), "ground_truth": to_ground_truth(gt, extra.get("modality")),
            "question": None if question is None else str(question)}


async def compute_score(data_source: str | None = None, solution_str: str = "", ground_truth: Any = None,
                        extra_info: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, float]:
    """verl's per-sample form, awaited by the reward-loop managers (`naive`, the default)."""
    refused = refused_options(kwargs)
    client = shared_async_client(**client_options(kwargs))
    results = await client.reward([_item(0, solution_str, ground_truth, extra_info)], kwargs.get("profile"))
    return _scores(results, refused)[0]


def compute_score_sync(data_source: str | None = None, solution_str: str = "", ground_truth: Any = None,
                       extra_info: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, float]:
    """verl's per-sample form for the `remote` manager (which asserts a plain `def`) and older verl."""
    refused = refused_options(kwargs)
    client = shared_client(**client_options(kwargs))
    return _scores(client.reward([_item(0, solution_str, ground_truth, extra_info)], kwargs.get("profile")),
                   refused)[0]


def compute_score_batch(data_sources: Iterable[Any] | None = None, solution_strs: Iterable[str] = (),
                        ground_truths: Iterable[Any] = (), extra_infos: Iterable[Any] | None = None,
                        **kwargs: Any) -> list[dict[str, float]]:
    """verl's batch form (`BatchRewardManager`): one request for the whole batch. verl passes `data_sources` and
    `extra_infos` as numpy object arrays, so they are never tested for truth."""
    solutions = list(solution_strs)
    truths = list(ground_truths)
    extras = [None] * len(solutions) if extra_infos is None else list(extra_infos)
    if not len(truths) == len(extras) == len(solutions):
        raise ValueError(f"{len(solutions)} solutions, {len(truths)} ground truths, {len(extras)} extra infos")
    refused = refused_options(kwargs)
    if not solutions:
        return []
    items = [_item(i, s, g, e) for i, (s, g, e) in enumerate(zip(solutions, truths, extras, strict=True))]
    return _scores(shared_client(**client_options(kwargs)).reward(items, kwargs.get("profile")), refused)


def _scores(results: list[Any], refused: tuple[Any, float]) -> list[dict[str, float]]:
    on_refused, reward = refused
    return scores("verl", results, on_refused=on_refused, refused_reward=reward, overall_key="score")
