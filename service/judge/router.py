"""/judge: validate and delegate."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.concurrency import cancel_on_disconnect
from service.deps import EvaluatorDep, SettingsDep
from service.errors import InvalidRequest
from service.protocol import ErrorResponse, JudgeRequest, JudgeResponse

router = APIRouter(tags=["judge"])
ERRORS = {code: {"model": ErrorResponse} for code in (401, 413, 422, 429, 503)}


@router.post("/judge", response_model=JudgeResponse, responses=ERRORS, response_model_exclude_none=True)
async def judge(body: JudgeRequest, request: Request, evaluator: EvaluatorDep,
                settings: SettingsDep) -> JudgeResponse:
    """Reference-based LLM-as-judge: per item score and votes, and a per-task summary."""
    if len(body.items) > settings.max_items_per_request:
        raise InvalidRequest(f"{len(body.items)} items is over the limit of {settings.max_items_per_request} "
                             "per request; split the batch", param="items")
    return await cancel_on_disconnect(request.receive, evaluator.evaluate(body))
