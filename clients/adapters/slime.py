"""slime (THUDM): the reward function for `--custom-rm-path` (slime v0.3.1; see docs/frameworks.md).

    --custom-rm-path clients.adapters.slime.reward                          # the reward is a number
    --custom-rm-path clients.adapters.slime.reward --reward-key reward      # a dict: `reward` and the components

slime imports this module by its dotted path (`load_function`) and awaits `reward(args, sample)` for each sample,
or, with `--group-rm`, `reward(args, samples)` once per group with the group's list (slime's evaluation refuses
`--group-rm`, so a run may use both shapes). A group is one /reward request; a sample alone is one too.

Without `--reward-key` each sample's reward is the overall reward, a number. With `--reward-key K` (and
`--eval-reward-key`) it is a dict: the overall reward under K, the four components beside it (numbers only: a null
modality is 0), so that they land in slime's dumped samples; K may also name a component.

The sample's `response` is scored without the end-of-turn marker slime leaves on it (`no_stop_trim`), against its
`label` (`<TAG>answer`, a plain answer, or {answer, modality}; a modality may also come from `metadata["modality"]`).
The prompt is not sent: with a chat template it is the templated text, not the question.

Options: MEDIX_URL / MEDIX_API_KEY (and MEDIX_TIMEOUT / MEDIX_RETRIES) where the rollout runs, or attributes of
slime's `args`, set in the YAML of `--custom-config-path`: `medix_url`, `medix_api_key`, `medix_profile`,
`medix_timeout`, `medix_retries`, `medix_on_refused`, `medix_refused_reward`.

Never a 0: an outage raises `MedixUnavailable`, an item the service could not score `ItemFailed`, and the rollout
fails. With `medix_on_refused: skip` a refused sample gets `medix_refused_reward` (default 0.0) and slime's own
"no reward", `sample.remove_sample = True` (its loss is masked); the count is logged.

This module needs the client only (`pip install ./clients` in slime's environment), not slime: a sample is read by
its attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from clients.adapters.common import client_options, refused_options, scores, shared_async_client, unscored
from clients.contract import COMPONENTS, ground_truth, strip_end_markers

OVERALL = "overall"


def _options(args: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(client options, the rest) from `args.medix_*`."""
    got = {name: getattr(args, f"medix_{name}", None) for name in
           ("url", "api_key", "timeout", "retries", "profile", "on_refused", "refused_reward")}
    return client_options(got), got


def _item(i: int, sample: Any) -> dict[str, Any]:
    label = getattr(sample, "label", None)
    if label is None:
        raise ValueError(f"{_name(i, sample)} has no label: pass --label-key so that slime reads "
                         "the ground truth into Sample.label")
    metadata = getattr(sample, "metadata", None)
    modality = metadata.get("modality") if isinstance(metadata, dict) else None
    return {"id": str(i), "response": strip_end_markers(str(getattr(sample, "response", "") or "")),
            "ground_truth": ground_truth(label, modality)}


def _name(i: int, sample: Any) -> str:
    index = getattr(sample, "index", None)
    return f"sample {index if index is not None else i}"


def _shaped(numbers: dict[str, float], args: Any) -> float | dict[str, float]:
    key = getattr(args, "reward_key", None)
    if not key:
        return numbers[OVERALL]
    return {key: numbers[OVERALL], **{name: numbers[name] for name in COMPONENTS if name != key},
            **{k: v for k, v in numbers.items() if k != OVERALL and k not in COMPONENTS}}


async def reward(args: Any, sample: Any, **kwargs: Any) -> Any:
    """slime's custom reward: one `Sample` -> its reward; a list of them (`--group-rm`) -> a list, in order."""
    samples: Sequence[Any] = sample if isinstance(sample, list | tuple) else [sample]
    if not samples:
        return []
    client_opts, opts = _options(args)
    on_refused, refused_reward = refused_options(opts)
    items = [_item(i, s) for i, s in enumerate(samples)]
    results = await shared_async_client(**client_opts).reward(items, opts["profile"])
    names = [_name(i, s) for i, s in enumerate(samples)]
    numbers = scores("slime", results, names, on_refused=on_refused, refused_reward=refused_reward)
    for s, r in zip(samples, results, strict=True):
        if unscored(r):  # only reached with on_refused="skip": slime's own "no reward" (the loss is masked)
            s.remove_sample = True
    shaped = [_shaped(n, args) for n in numbers]
    return shaped if isinstance(sample, list | tuple) else shaped[0]
