"""TRL: `GRPOTrainer(reward_funcs=[MedixReward()])` scores each generation batch with one /reward request.

- `MedixReward` is an async reward object: TRL awaits it (beside other async reward functions) from TRL 1.14 on,
  the first release that recognises an object whose `__call__` is `async def`. Older TRL would call it without
  awaiting, so on an older TRL it refuses to be built and names the alternative.
- `MedixRewardSync` is the same reward as a plain call, for every TRL the project declares (1.10 and later).
- `medix_reward` is the same reward as a module-level `async def` with the default options, for configurations
  that name a reward function by its dotted path (Axolotl: `clients.adapters.trl.medix_reward`). TRL awaits
  coroutine functions from 1.10 on.

All three keep no client in their state: the pooled clients live in clients.adapters.common (one per event loop),
so a reward object pickles and works in another process (TRL's `AsyncGRPOTrainer` pickles its reward functions into
a spawned process, and calls them without `log_metric`).

The dataset needs a `ground_truth` column (`<TAG>answer`, a plain answer, or {answer, modality}) and may have
a `modality` column. Components are logged through TRL's `log_metric` (when TRL passes one) as `medix/format`, ….

An outage raises `MedixUnavailable` (`on_outage="raise"`, the default) or gives `None` for every sample
(`on_outage="skip"`). A single item the service could not score gives `None` for that sample (`on_refused="skip"`,
the default) or raises `ItemFailed` (`on_refused="raise"`). TRL turns `None` into NaN: alone, the sample is left out
of the advantage; beside other reward functions, TRL sums the others' rewards for it (nansum). Never a 0.
Timeouts: 180 s a try and 3 retries (clients.adapters.common), or `timeout` / `retries`, or MEDIX_TIMEOUT /
MEDIX_RETRIES.
"""

from __future__ import annotations

import logging
from importlib import metadata
from typing import Any, Literal

from clients.adapters.common import (
    ON_REFUSED,
    checked,
    component_means,
    log_refused,
    shared_async_client,
    shared_client,
    text_of,
)
from clients.client import AsyncMedixClient, MedixUnavailable, RewardScore
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
                 on_outage: Literal["raise", "skip"] = "raise", on_refused: Literal["raise", "skip"] = "skip",
                 timeout: float | None = None, retries: int | None = None) -> None:
        if on_outage not in ("raise", "skip"):
            raise ValueError(f"on_outage must be 'raise' or 'skip', not {on_outage!r}")
        if on_refused not in ON_REFUSED:
            raise ValueError(f"on_refused must be 'raise' or 'skip', not {on_refused!r}")
        self.url, self.api_key, self.profile, self.timeout, self.retries = url, api_key, profile, timeout, retries
        self.gt_column, self.modality_column = ground_truth_column, modality_column
        self.on_outage, self.on_refused = on_outage, on_refused
        self.history: list[dict[str, Any]] = []  # what the service returned, call by call

    def _options(self) -> dict[str, Any]:
        return {"url": self.url, "api_key": self.api_key, "timeout": self.timeout, "retries": self.retries}

    def _async_client(self) -> AsyncMedixClient:
        """The pooled client of the running event loop: nothing of it is kept here (so the object pickles)."""
        return shared_async_client(**self._options())

    def _items(self, prompts: list[Any], completions: list[Any], columns: dict[str, Any]) -> list[dict[str, Any]]:
        if self.gt_column not in columns:
            raise KeyError(f"the dataset has no {self.gt_column!r} column for MedixReward")
        modalities = columns.get(self.modality_column) or [None] * len(completions)
        return [{"id": str(i), "response": text_of(c), "question": text_of(p), "ground_truth": ground_truth(gt, mod)}
                for i, (p, c, gt, mod) in enumerate(zip(prompts, completions, columns[self.gt_column], modalities,
                                                        strict=True))]

    def _outage(self, n: int, exc: MedixUnavailable) -> list[float | None]:
        if self.on_outage == "skip":  # TRL turns None into NaN
            log.warning("MediX reward unavailable, %d samples left unscored: %s", n, exc)
            self.history.append({"rewards": [None] * n, "outage": str(exc)})
            return [None] * n
        raise exc

    def _rewards(self, results: list[RewardScore], log_metric: Any) -> list[float | None]:
        if self.on_refused == "raise":
            checked(results)
        log_refused("TRL", results)  # an item the service could not score is None, TRL's own "no reward"
        means = component_means(results)
        if log_metric is not None:
            for name, value in means.items():
                log_metric(f"medix/{name}", value)
        rewards = [r.overall for r in results]
        self.history.append({"rewards": rewards, **means})
        return rewards

    async def _score(self, prompts: list[Any], completions: list[Any], log_metric: Any,
                     columns: dict[str, Any]) -> list[float | None]:
        items = self._items(prompts, completions, columns)
        if not items:
            return []
        try:
            results = await self._async_client().reward(items, self.profile)
        except MedixUnavailable as exc:
            return self._outage(len(items), exc)
        return self._rewards(results, log_metric)


class MedixReward(_MedixRewardBase):
    """The MediX reward as an async reward object (TRL >= 1.14; TRL gathers async reward functions concurrently).
    Picklable at any time (`AsyncGRPOTrainer`); `log_metric` is optional."""

    def __init__(self, url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        version = _trl_version()
        if version is not None and version < ASYNC_TRL:
            raise RuntimeError(f"TRL {'.'.join(map(str, version))} calls reward objects without awaiting them; "
                               "use clients.adapters.trl.MedixRewardSync (or the function "
                               "clients.adapters.trl.medix_reward) there, or upgrade to trl>=1.14")
        super().__init__(url, api_key, **options)

    async def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None,
                       log_metric: Any = None, **columns: Any) -> list[float | None]:
        return await self._score(prompts, completions, log_metric, columns)


class MedixRewardSync(_MedixRewardBase):
    """The MediX reward as a plain call: every TRL from 1.10 on (TRL calls it on its training thread)."""

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None,
                 log_metric: Any = None, **columns: Any) -> list[float | None]:
        items = self._items(prompts, completions, columns)
        if not items:
            return []
        try:
            results = shared_client(**self._options()).reward(items, self.profile)
        except MedixUnavailable as exc:
            return self._outage(len(items), exc)
        return self._rewards(results, log_metric)


_default: _MedixRewardBase | None = None


async def medix_reward(prompts: list[Any], completions: list[Any], completion_ids: Any = None,
                       log_metric: Any = None, **columns: Any) -> list[float | None]:
    """The MediX reward with the default options (MEDIX_URL, MEDIX_API_KEY, MEDIX_TIMEOUT, MEDIX_RETRIES; outages
    raise, refused items are None) as a module-level coroutine function: what a dotted name can point at
    (Axolotl's `trl.reward_funcs: [clients.adapters.trl.medix_reward]`). TRL awaits it from 1.10 on."""
    global _default
    if _default is None:
        _default = _MedixRewardBase()
    return await _default._score(prompts, completions, log_metric, columns)
