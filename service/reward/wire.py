"""Wire models of /reward and of OpenRLHF's /get_reward."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.reward.rules import GroundTruth, Modality, parse_ground_truth
from service.runtime.wire import ErrorDetail, Text, UsageInfo


class GroundTruthObject(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: Text
    modality: Modality | None = None


class RewardItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Text | None = Field(None, max_length=512, description="Echoed back; defaults to the item's index.")
    response: Text = Field(description="The sampled answer, e.g. `<X_RAY><thinking>…</thinking><answer>…</answer>`.")
    ground_truth: Text | GroundTruthObject = Field(
        description="`<TAG>answer` (e.g. `<X_RAY>Pneumonia`), a plain answer, or {answer, modality}."
    )
    question: Text | None = Field(None, description="Optional; used by judge prompts that ask for it.")

    @field_validator("ground_truth")
    @classmethod
    def _check_ground_truth(cls, v: str | GroundTruthObject) -> str | GroundTruthObject:
        parse_ground_truth(v.model_dump() if isinstance(v, GroundTruthObject) else v)
        return v

    def parsed_ground_truth(self) -> GroundTruth:
        gt = self.ground_truth
        return parse_ground_truth(gt.model_dump() if isinstance(gt, GroundTruthObject) else gt)


class RewardRequest(BaseModel):
    items: list[RewardItem] = Field(min_length=1)
    profile: Text | None = Field(None, max_length=128, description="Reward profile; default `medix-r1`.")


class CacheFlags(BaseModel):
    judge: bool | None = None
    embed: bool | None = None


class RewardDetails(BaseModel):
    answer: str
    reference: str
    decided_by: str = Field(description="`exact`, `invalid` or `backends`.")
    judge_p_yes: float | None = None
    judge_verdict: str | None = None
    similarity: float | None = None
    cache: CacheFlags = Field(default_factory=CacheFlags)


class RewardResult(BaseModel):
    id: str
    overall: float | None = Field(description="Null only when the item failed alone: see `error`.")
    format: float
    accuracy_llm: float | None
    accuracy_embed: float | None
    modality: float | None
    details: RewardDetails
    error: ErrorDetail | None = Field(None, description="Set when this item could not be scored (e.g. the judge "
                                      "refused an input longer than its context); its batch is still scored.")


class ProfileInfo(BaseModel):
    name: str
    weights: dict[str, float]
    judge_model: str
    embed_model: str
    prompt_version: str


class RewardResponse(BaseModel):
    results: list[RewardResult]
    profile: ProfileInfo
    usage: UsageInfo | None = Field(None, description="The judge and embedding work this request used.")


# -- /get_reward (OpenRLHF's remote reward protocol) ----------------------------------------------------------
class OpenRLHFRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    # No min_length: OpenRLHF 0.10.2-0.11.0 split its one-sample list across several reward URLs, so every URL
    # after the first gets empty lists; those get empty lists back (a 422 would be retried, then stop training).
    query: list[Text] = Field(description="Prompt + response, as OpenRLHF sends them; empty lists get empty lists "
                              "back.")
    prompts: list[Text] | None = Field(None, description="The prompts, stripped from the front of each query.")
    labels: list[Text | GroundTruthObject] = Field(description="Ground truth per query.")


class OpenRLHFResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float | None]]


# -- /rm (slime's remote reward model: --rm-type remote_rm --rm-url http://host:port/rm --reward-key reward) -----
class SlimeRequest(BaseModel):
    """One sample, as slime's `remote_rm` posts it (slime/rollout/rm_hub/__init__.py)."""

    model_config = ConfigDict(extra="ignore")
    prompt: Text | list[dict] | None = Field(None, description="slime's `Sample.prompt` (text, or chat messages); "
                                             "not scored.")
    response: Text = Field(description="The sampled answer; a trailing end-of-turn marker is left out.")
    label: Text | GroundTruthObject = Field(description="`<TAG>answer`, a plain answer, or {answer, modality}.")

    @field_validator("label")
    @classmethod
    def _check_label(cls, v: str | GroundTruthObject) -> str | GroundTruthObject:
        parse_ground_truth(v.model_dump() if isinstance(v, GroundTruthObject) else v)
        return v


class SlimeResponse(BaseModel):
    """`reward` (what slime's `--reward-key reward` picks) and the four components, numbers only (a null modality
    is 0)."""

    reward: float
    format: float
    accuracy_llm: float
    accuracy_embed: float
    modality: float
