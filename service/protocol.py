"""Wire models shared by the routes, and the one error response."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from service.reward.rules import GroundTruth, Modality, parse_ground_truth

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _valid_unicode(value: str) -> str:
    # JSON may carry lone surrogates ("\ud800"); they cannot be encoded, hashed or sent to a backend.
    m = _SURROGATE.search(value)
    if m:
        raise ValueError(f"contains a lone surrogate (U+{ord(m.group()):04X}) at character {m.start()}; "
                         "send valid Unicode")
    return value


# Every text a client sends: valid Unicode. Lengths are checked at admission against MEDIX_MAX_TEXT_CHARS.
Text = Annotated[str, AfterValidator(_valid_unicode)]


class ErrorDetail(BaseModel):
    type: str
    message: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


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


class HealthResponse(BaseModel):
    status: str
    components: dict[str, Any] = Field(default_factory=dict)


# -- /judge ---------------------------------------------------------------------------------------------------
class JudgeItem(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: Text = Field(max_length=512)
    task: Text = Field(min_length=1, max_length=128)
    question: Text = ""
    reference: Text = Field(min_length=1)
    prediction: Text
    rubric: Literal["binary", "report"] | None = Field(
        None, description="`binary` (QA) or `report` (0-5); default from the task map, else `binary`."
    )


class JudgeRequest(BaseModel):
    items: list[JudgeItem] = Field(min_length=1)
    rounds: int = Field(3, ge=1, le=7, description="Rounds in one conversation, each re-checking the last.")
    explain: bool = Field(False, description="Return the judge's replies.")


class JudgeResult(BaseModel):
    id: str
    task: str
    rubric: str
    score: float | None = Field(description="Binary: majority vote. Report: mean / 5. Null when the item failed.")
    # Left out when null: what only some items have. `score` is always there, null when the item failed.
    raw_score: float | None = Field(None, description="Report: the mean on the 0-5 scale.",
                                    exclude_if=lambda v: v is None)
    votes: list[int]
    replies: list[str] | None = Field(None, exclude_if=lambda v: v is None)
    cached: bool = False
    error: ErrorDetail | None = Field(None, exclude_if=lambda v: v is None)


class TaskSummary(BaseModel):
    n: int
    judged: int
    failed: int
    score: float | None


class JudgeSummary(BaseModel):
    tasks: dict[str, TaskSummary]
    overall: float | None
    failed: int


class JudgeResponse(BaseModel):
    results: list[JudgeResult]
    summary: JudgeSummary
    judge_model: str
    prompt_version: str


# -- /get_reward (OpenRLHF's remote reward protocol) ----------------------------------------------------------
class OpenRLHFRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    query: list[Text] = Field(min_length=1, description="Prompt + response, as OpenRLHF sends them.")
    prompts: list[Text] | None = Field(None, description="The prompts, stripped from the front of each query.")
    labels: list[Text | GroundTruthObject] = Field(description="Ground truth per query.")


class OpenRLHFResponse(BaseModel):
    rewards: list[float]
    scores: list[float]
    extra_logs: dict[str, list[float | None]]
