"""OpenRLHF: the reward file for `--reward.remote_url clients/adapters/openrlhf.py` (OpenRLHF >= 0.10.2).

OpenRLHF loads this file and calls `reward_func(queries, prompts, labels)` for each sample (one-element lists),
`queries[i]` being the decoded prompt + response tokens. Unlike the plain HTTP path (`--reward.remote_url
http://host:8000/get_reward`), the file can send a key (MEDIX_API_KEY), retries the way the MediX client does,
and an outage reaches OpenRLHF as the real exception (it logs it and leaves the sample without a reward) instead
of five bare status lines. Service address and key: MEDIX_URL / MEDIX_API_KEY, or the keyword arguments `url`,
`api_key`, `profile`, `timeout`, `retries` (default 180 s a try and 3 retries, or MEDIX_TIMEOUT / MEDIX_RETRIES),
`on_refused`, `refused_reward` when this function is wrapped.

An item the service could not score raises `ItemFailed` (OpenRLHF logs it and the reward stays None, which stops
training), or, with `on_refused="skip"` (OpenRLHF has no "no reward" for a sample), scores `refused_reward`
(default 0.0) and `extra_logs` carries `medix_refused` (1.0 for a refused one) for every sample. Empty lists (no
sample) get empty lists back, without a request.

`clients.contract.response_of` finds where the response starts in such a query; the service's /get_reward uses it
too.
"""

from __future__ import annotations

from typing import Any

from clients.adapters.common import client_options, refused_options, scores, shared_client
from clients.contract import COMPONENTS, REFUSED_KEY, ResponseNotFound, ground_truth, response_of


def reward_func(queries: list[str], prompts: list[str] | None, labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's reward function: `rewards` and `scores` (the overall reward) and `extra_logs` (the four
    components, numbers only, the same keys for every sample). Raises on an outage, never returns a 0 for it."""
    on_refused, refused_reward = refused_options(kwargs)
    prompts = list(prompts) if prompts is not None else [None] * len(queries)
    if not len(queries) == len(prompts) == len(labels):
        raise ValueError(f"{len(queries)} queries, {len(prompts)} prompts, {len(labels)} labels")
    keys = (*COMPONENTS, REFUSED_KEY) if on_refused == "skip" else COMPONENTS
    items = []
    for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels, strict=True)):
        try:
            response = response_of(query, prompt)
        except ResponseNotFound as exc:
            raise ResponseNotFound(f"queries[{i}]: {exc}") from None
        items.append({"id": str(i), "response": response, "ground_truth": ground_truth(label)})
    if not items:
        return {"rewards": [], "scores": [], "extra_logs": {name: [] for name in keys}}
    results = shared_client(**client_options(kwargs)).reward(items, kwargs.get("profile"))
    numbers = scores("OpenRLHF", results, [f"queries[{i}]" for i in range(len(items))], on_refused=on_refused,
                     refused_reward=refused_reward)
    rewards = [s["overall"] for s in numbers]
    return {"rewards": rewards, "scores": rewards, "extra_logs": {name: [s[name] for s in numbers] for name in keys}}
