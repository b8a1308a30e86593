"""EasyR1 (the framework MediX-R1 was trained with): the reward file for `worker.reward.reward_function`.

    worker.reward.reward_function=<this file>:main
    worker.reward.reward_function_kwargs='{url: "http://host:8000"}'

EasyR1 loads this file as a standalone module, reads `REWARD_TYPE` and `REWARD_NAME`, binds
`reward_function_kwargs` with `functools.partial`, and calls `main(reward_inputs)` with one dict per sample
(`response`, `response_length`, `ground_truth`); it wants one dict back per sample, with `overall`. Every returned
key is averaged into EasyR1's logs, so each is a number (a null modality is 0 here) and every sample has the
same keys. The file's imports must resolve in EasyR1's environment: `pip install ./clients` there.

Keyword arguments: `url`, `api_key` (default MEDIX_URL / MEDIX_API_KEY), `profile`, `timeout`, `retries` (default
180 s a try and 3 retries, or MEDIX_TIMEOUT / MEDIX_RETRIES), `on_refused`, `refused_reward`.
An outage raises `MedixUnavailable`: never a 0. An item the service could not score raises `ItemFailed`, or, with
`on_refused: skip` (EasyR1 has no "no reward" for a sample), scores `refused_reward` (default 0.0) and every sample
carries `medix_refused` (1.0 for a refused one), which EasyR1 averages into its logs: the share refused.
"""

from __future__ import annotations

from typing import Any

from clients.adapters.common import client_options, refused_options, scores, shared_client
from clients.contract import ground_truth

REWARD_TYPE = "batch"
REWARD_NAME = "medix"


def main(reward_inputs: list[dict[str, Any]], **kwargs: Any) -> list[dict[str, float]]:
    """EasyR1's batch reward function: one /reward request for the whole batch."""
    if isinstance(reward_inputs, dict):
        raise ValueError("the MediX reward file is a batch reward function (REWARD_TYPE='batch'): "
                         "it takes the list of reward inputs")
    on_refused, refused_reward = refused_options(kwargs)
    items = [{"id": str(i), "response": x["response"], "ground_truth": ground_truth(x["ground_truth"],
                                                                                     x.get("modality"))}
             for i, x in enumerate(reward_inputs)]
    if not items:
        return []
    results = shared_client(**client_options(kwargs)).reward(items, kwargs.get("profile"))
    return scores("EasyR1", results, [f"reward_inputs[{i}]" for i in range(len(items))], on_refused=on_refused,
                  refused_reward=refused_reward)


compute_score = main  # the name EasyR1's example reward files use
