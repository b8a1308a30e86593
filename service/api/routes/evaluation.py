"""/judge (reference-based evaluation): validate and delegate."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api.body import JsonBodyRoute
from service.api.cancellation import with_cancellation
from service.api.deps import AdmissionDep, EvaluatorDep, usage_info
from service.api.errors import SCORING_ERRORS
from service.evaluation.wire import JudgeRequest, JudgeResponse

router = APIRouter(tags=["judge"], route_class=JsonBodyRoute)


@router.post("/judge", response_model=JudgeResponse, responses=SCORING_ERRORS)
@with_cancellation
async def judge(body: JudgeRequest, request: Request, evaluator: EvaluatorDep,
                admission: AdmissionDep) -> JudgeResponse:
    """Reference-based LLM-as-judge: per item score and votes, and a per-task summary."""
    # Charged a round an item (twice with a probe): each round is a judge call (a reply that does not parse costs
    # more, unknown here).
    async with admission.admit(request, body, "items", calls_per_item=body.rounds * (2 if body.probe else 1)) as tenant:
        judged = await evaluator.evaluate(body, tenant=tenant)
    judged.usage = usage_info()
    return judged
