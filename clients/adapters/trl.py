"""TRL: `GRPOTrainer(reward_funcs=[MedixReward()])` scores each generation batch with one /reward request.

- `MedixReward` is an async reward object: TRL awaits it (beside other async reward functions) from TRL 1.14 on,
  the first release that recognises an object whose `__call__` is `async def`. Older TRL would call it without
  awaiting, so on an older TRL it refuses to be built and names the alternative.
- `MedixRewardSync` is the same reward as a plain call, for every TRL the project declares (1.10 and later).

The dataset needs a `ground_truth` column (`<TAG>answer`, a plain answer, or {answer, modality}) and may have
a `modality` column. Components are logged through TRL's `log_metric` as `medix/format`, ….

An outage raises `MedixUnavailable` (`on_outage="raise"`, the default) or gives `None` for every sample
(`on_outage="skip"`: TRL turns `None` into NaN and leaves those samples out of the mean). A single item the
service could not score gives `None` for that sample. Never a 0.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Literal

from clients.adapters.common import component_means, text_of
from clients.client import AsyncMedixClient, MedixClient, MedixUnavailable, RewardScore
from clients.contract import ground_truth

log = logging.getLogger("medix.trl")
ASYNC_TRL = (1, 14)  # the first TRL release that awaits async reward objects


def _trl_version() -> tuple[int, ...] | None:
    try:
        version = metadata.version("trl")
    except metadata.PackageNotFoundError:
        return None
    parts = []
    for piece in version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class _MedixRewardBase:
    __name__ = "medix"  # TRL names reward columns after this

    def __init__(self, url: str | None = None, api_key: str | None = None, *, profile: str | None = None,
                 ground_truth_column: str = "ground_truth", modality_column: str = "modality",
                 on_outage: Literal["raise", "skip"] = "raise", timeout: float = 600, retries: int = 5) -> None:
        if on_outage not in ("raise", "skip"):
            raise ValueError(f"on_outage must be 'raise' or 'skip', not {on_outage!r}")
        self.url, self.api_key, self.profile, self.timeout, self.retries = url, api_key, profile, timeout, retries
        self.gt_column, self.modality_column = ground_truth_column, modality_column
        self.on_outage = on_outage
        self.history: list[dict[str, Any]] = []  # what the service returned, call by call

    def _items(self, prompts: list[Any], completions: list[Any], columns: dict[str, Any]) -> list[dict[str, Any]]:
        if self.gt_column not in columns:
            raise KeyError(f"the dataset has no {self.gt_column!r} column for MedixReward")
        modalities = columns.get(self.modality_column) or [None] * len(completions)
        return [{"id": str(i), "response": text_of(c), "question": text_of(p), "ground_truth": ground_truth(gt, mod)}
                for i, (p, c, gt, mod) in enumerate(zip(prompts, completions, columns[self.gt_column], modalities,
                                                        strict=True))]

    def _outage(self, n: int, exc: MedixUnavailable) -> list[float | None]:
        if self.on_outage == "skip":  # TRL turns None into NaN and leaves these samples out
            log.warning("MediX reward unavailable, %d samples left unscored: %s", n, exc)
            self.history.append({"rewards": [None] * n, "outage": str(exc)})
            return [None] * n
        raise exc

    def _rewards(self, results: list[RewardScore], log_metric: Any) -> list[float | None]:
        failed = [(r.id, (r.error or {}).get("message")) for r in results if r.overall is None]
        if failed:  # an item the service could not score is left out, like TRL's own None
            log.warning("MediX could not score %d of %d samples: %s", len(failed), len(results), failed[:3])
        means = component_means(results)
        if log_metric is not None:
            for name, value in means.items():
                log_metric(f"medix/{name}", value)
        rewards = [r.overall for r in results]
        self.history.append({"rewards": rewards, **means})
        return rewards


class MedixReward(_MedixRewardBase):
    """The MediX reward as an async reward object (TRL >= 1.14; TRL gathers async reward functions concurrently)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        version = _trl_version()
        if version is not None and version < ASYNC_TRL:
            raise RuntimeError(f"TRL {'.'.join(map(str, version))} calls reward objects without awaiting them; "
                               "use clients.adapters.trl.MedixRewardSync there, or upgrade to trl>=1.14")
        super().__init__(url, api_key, **options)
        self._client: AsyncMedixClient | None = None

    async def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None,
                       log_metric: Any = None, **columns: Any) -> list[float | None]:
        items = self._items(prompts, completions, columns)
        if self._client is None:  # created on TRL's event loop, where it is used
            self._client = AsyncMedixClient(self.url, self.api_key, timeout=self.timeout, retries=self.retries)
        try:
            results = await self._client.reward(items, self.profile)
        except MedixUnavailable as exc:
            return self._outage(len(items), exc)
        return self._rewards(results, log_metric)


class MedixRewardSync(_MedixRewardBase):
    """The MediX reward as a plain call: every TRL from 1.10 on (TRL calls it on its training thread)."""

    def __init__(self, url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        super().__init__(url, api_key, **options)
        self._client: MedixClient | None = None

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None,
                 log_metric: Any = None, **columns: Any) -> list[float | None]:
        items = self._items(prompts, completions, columns)
        if self._client is None:
            self._client = MedixClient(self.url, self.api_key, timeout=self.timeout, retries=self.retries)
        try:
            results = self._client.reward(items, self.profile)
        except MedixUnavailable as exc:
            return self._outage(len(items), exc)
        return self._rewards(results, log_metric)
