"""ms-swift: the ORM plugin file for GRPO (ms-swift 4.6; see docs/frameworks.md).

    swift rlhf --rlhf_type grpo … --external_plugins /abs/path/clients/adapters/swift.py --reward_funcs medix

ms-swift imports this file as a plugin (`--external_plugins`), builds each name of `--reward_funcs` as
`orms[name](args=args)` and calls it with the completions and, as keywords, the dataset's columns, `messages`
(the conversation, the completion last), `images` and `trainer_state`. It wants one number per completion.

- `medix` (`MedixORM`): a plain call, one /reward request for the completions of the step on this rank. ms-swift
  calls plain reward functions one after another on its training thread; the client is the pooled, thread-safe
  one of clients.adapters.common.
- `medix_async` (`MedixAsyncORM`): the same reward as an async reward class, which ms-swift gathers with its other
  async reward functions under a new `asyncio.run` every step. A client kept across steps would belong to a closed
  event loop, so it opens one for each call and closes it before the call returns.

The dataset needs a `ground_truth` or a `solution` column (`<TAG>answer`, a plain answer, or {answer, modality})
and may have a `modality` column; the last user message of `messages` is sent as the question. Images are not
sent: the reward is computed from the texts.

Never a 0 for an outage: ms-swift sums the rewards with `nansum`, so a `None` (NaN) would count as 0 in the reward.
An outage raises `MedixUnavailable` and the step fails. An item the service could not score raises `ItemFailed`, or,
with `on_refused="skip"` (ms-swift has no "no reward" for a sample), scores `refused_reward` (default 0.0), and the
count is logged.

Options: MEDIX_URL, MEDIX_API_KEY, MEDIX_TIMEOUT, MEDIX_RETRIES in the environment of every training process, or a
name of your own in a plugin file of yours, passed to `--external_plugins` (ms-swift passes nothing but `args`):

    import functools
    from clients.adapters.swift import MedixORM
    from swift.rewards import orms
    orms["medix"] = functools.partial(MedixORM, profile="medix-r1", on_refused="skip", retries=8)
"""

from __future__ import annotations

import os
import re
import sys

# ms-swift puts a plugin's folder first on sys.path. This folder also holds trl.py, verl.py, openrlhf.py, slime.py
# and swift.py, which would then shadow those packages wherever one is imported later; this plugin needs no sibling
# by that path (it imports `clients.…`), so the folder is taken off again.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from typing import Any  # noqa: E402

from swift.rewards import ORM, AsyncORM, orms  # noqa: E402

from clients.adapters.common import (  # noqa: E402
    OnRefused,
    client_options,
    refused_options,
    scores,
    shared_client,
    text_of,
    trainer_timeouts,
)
from clients.client import AsyncMedixClient, RewardScore  # noqa: E402
from clients.contract import ground_truth  # noqa: E402

GROUND_TRUTH_COLUMNS = ("ground_truth", "solution")
PLACEHOLDERS = re.compile(r"<(?:image|video|audio)>")  # where ms-swift's templates put a sample's media


def _question(messages: Any) -> str | None:
    """The last user message before the completion, as text: its text parts, without media placeholders."""
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return PLACEHOLDERS.sub("", text_of([message])).strip()
    return None


class _Medix:
    def __init__(self, args: Any = None, *, url: str | None = None, api_key: str | None = None,
                 profile: str | None = None, ground_truth_column: str | None = None,
                 modality_column: str = "modality", on_refused: OnRefused = "raise", refused_reward: float = 0.0,
                 timeout: float | None = None, retries: int | None = None, **kwargs: Any) -> None:
        self.args = args  # ms-swift's GRPOConfig, as its ORM base class keeps it
        self.options = client_options({"url": url, "api_key": api_key, "timeout": timeout, "retries": retries})
        self.on_refused, self.refused_reward = refused_options({"on_refused": on_refused,
                                                                "refused_reward": refused_reward})
        self.profile, self.gt_column, self.modality_column = profile, ground_truth_column, modality_column

    def _items(self, completions: list[Any], columns: dict[str, Any]) -> list[dict[str, Any]]:
        names = (self.gt_column,) if self.gt_column else GROUND_TRUTH_COLUMNS
        column = next((name for name in names if columns.get(name) is not None), None)
        if column is None:
            raise KeyError(f"the dataset has no {' or '.join(map(repr, names))} column for the MediX reward")
        truths = columns[column]
        modalities = columns.get(self.modality_column) or [None] * len(completions)
        messages = columns.get("messages") or [None] * len(completions)
        if not len(truths) == len(modalities) == len(messages) == len(completions):
            raise ValueError(f"{len(completions)} completions, {len(truths)} {column}, {len(modalities)} "
                             f"{self.modality_column}, {len(messages)} messages")
        return [{"id": str(i), "response": text_of(c), "ground_truth": ground_truth(gt, mod), "question": _question(m)}
                for i, (c, gt, mod, m) in enumerate(zip(completions, truths, modalities, messages, strict=True))]

    def _rewards(self, results: list[RewardScore]) -> list[float]:
        names = [f"completions[{i}]" for i in range(len(results))]
        return [s["overall"] for s in scores("ms-swift", results, names, on_refused=self.on_refused,
                                             refused_reward=self.refused_reward)]


class MedixORM(_Medix, ORM):
    """`--reward_funcs medix`: one /reward request per call, on the pooled synchronous client."""

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        items = self._items(completions, kwargs)
        if not items:
            return []
        return self._rewards(shared_client(**self.options).reward(items, self.profile))


class MedixAsyncORM(_Medix, AsyncORM):
    """`--reward_funcs medix_async`: awaited beside ms-swift's other async reward functions, with a client of its
    own for each call (ms-swift runs every step under a new event loop)."""

    async def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        items = self._items(completions, kwargs)
        if not items:
            return []
        timeout, retries = trainer_timeouts(self.options.get("timeout"), self.options.get("retries"))
        async with AsyncMedixClient(self.options.get("url"), self.options.get("api_key"), timeout=timeout,
                                    retries=retries) as client:
            results = await client.reward(items, self.profile)
        return self._rewards(results)


orms["medix"] = MedixORM
orms["medix_async"] = MedixAsyncORM
