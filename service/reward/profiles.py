"""Reward profiles: weights, thresholds and rule switches. `medix-r1` is the published method.

Side by side in docs/reward-rules.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Profile(BaseModel, frozen=True):
    name: str
    weights: dict[str, float] = Field(
        default_factory=lambda: {"accuracy_llm": 0.575, "accuracy_embed": 0.375, "modality": 0.05}
    )
    content_weight: float = 0.9
    format_weight: float = 0.1
    # accuracy_llm: `binary` is YES=1/NO=0; `soft` uses the judge's probability of YES.
    judge_mode: Literal["binary", "soft"] = "binary"
    # accuracy_embed: `threshold` is 1 when cosine >= embed_threshold; `soft` is the cosine clipped to [0, 1].
    embed_mode: Literal["threshold", "soft"] = "threshold"
    embed_threshold: float = 0.8
    # Rule 5 (anti reward hacking): answers shorter than this or containing any of these score 0.
    invalid_min_length: int = 2
    invalid_substrings: tuple[str, ...] = ("__", ":", "?")
    # Rules 1-6 and 9: `published` is the published function, edge cases included; `strict` asks for exactly one
    # thinking and one answer block, trims the spaces that dots uncover and compares modality lower-cased.
    rule_set: Literal["published", "strict"] = "published"

    def public(self) -> dict[str, float]:
        return {**self.weights, "content": self.content_weight, "format": self.format_weight}


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(name="medix-r1"),
        Profile(name="medix-r1-soft", judge_mode="soft", embed_mode="soft"),
        Profile(name="medix-r1-strict", rule_set="strict"),
    )
}
