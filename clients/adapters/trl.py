"""TRL: `GRPOTrainer(reward_funcs=[MedixReward()])` scores each generation batch with one /reward request.

The dataset needs a `ground_truth` column (`<TAG>answer`, a plain answer, or {answer, modality}) and may have
a `modality` column. Components are logged through TRL's `log_metric` as `medix/format`, ….
"""

from __future__ import annotations

from typing import Any, Literal

from clients.adapters.common import component_means, text_of
from clients.client import AsyncMedixClient, MedixUnavailable
from clients.contract import ground_truth


class MedixReward:
    """An async reward function (TRL gathers async reward functions concurrently)."""

    __name__ = "medix"  # TRL names reward columns after this

    def __init__(self, url: str | None = None, api_key: str | None = None, *, profile: str | None = None,
                 ground_truth_column: str = "ground_truth", modality_column: str = "modality",
                 on_outage: Literal["raise", "skip"] = "raise", timeout: float = 600, retries: int = 5) -> None:
        self.url, self.api_key, self.profile, self.timeout, self.retries = url, api_key, profile, timeout, retries
        self.gt_column, self.modality_column = ground_truth_column, modality_column
        self.on_outage = on_outage
        self.history: list[dict[str, Any]] = []  # what the service returned, call by call
        self._client: AsyncMedixClient | None = None

    async def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None,
                       log_metric: Any = None, **columns: Any) -> list[float | None]:
        if self.gt_column not in columns:
            raise KeyError(f"the dataset has no {self.gt_column!r} column for MedixReward")
        modalities = columns.get(self.modality_column) or [None] * len(completions)
        items = [{"id": str(i), "response": text_of(c), "question": text_of(p),
                  "ground_truth": ground_truth(gt, mod)}
                 for i, (p, c, gt, mod) in enumerate(zip(prompts, completions, columns[self.gt_column], modalities,
                                                         strict=True))]
        if self._client is None:  # created on TRL's event loop, where it is used
            self._client = AsyncMedixClient(self.url, self.api_key, timeout=self.timeout, retries=self.retries)
        try:
            results = await self._client.reward(items, self.profile)
        except MedixUnavailable:
            if self.on_outage == "skip":  # TRL turns None into NaN and leaves these samples out
                return [None] * len(items)
            raise
        means = component_means(results)
        if log_metric is not None:
            for name, value in means.items():
                log_metric(f"medix/{name}", value)
        rewards = [r.overall for r in results]
        self.history.append({"rewards": rewards, **means})
        return rewards
