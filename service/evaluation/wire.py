"""Wire models of /judge."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from service.evaluation.prompts import Probe
from service.runtime.wire import ErrorDetail, Text, UsageInfo


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
    probe: Probe | None = Field(
        None, description="Bias probe (opt-in): `swap` asks each item again, after its verdict, with prediction and "
                          "reference swapped in the prompt; each judged result then carries `probe`.")


class ProbeResult(BaseModel):
    """The item asked again under a probe. Never a score of the item: `flipped` says whether the verdict moved."""

    kind: str = Field(description="The probe asked, e.g. `swap`.")
    score: float | None = Field(description="The probe's score on the item's scale; null when the probe failed.")
    raw_score: float | None = Field(None, description="Report: the probe's mean on the 0-5 scale.",
                                    exclude_if=lambda v: v is None)
    votes: list[int]
    replies: list[str] | None = Field(None, exclude_if=lambda v: v is None)
    flipped: bool | None = Field(description="Binary: the probe's verdict differs from the item's. Report: the "
                                             "two means differ by 1 point or more (0-5 scale). Null when it failed.")
    cached: bool = False
    error: ErrorDetail | None = Field(None, exclude_if=lambda v: v is None)


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
    probe: ProbeResult | None = Field(None, description="With a request's `probe`, on each judged item.",
                                      exclude_if=lambda v: v is None)


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
    usage: UsageInfo | None = Field(None, description="The judge work this request used.")


