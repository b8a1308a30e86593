"""/reward: validate and delegate."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.concurrency import cancel_on_disconnect
from service.deps import ScorerDep, SettingsDep
from service.errors import InvalidRequest
from service.protocol import ErrorResponse, OpenRLHFRequest, OpenRLHFResponse, RewardRequest, RewardResponse
from service.reward import openrlhf

router = APIRouter(tags=["reward"])

ERRORS = {code: {"model": ErrorResponse} for code in (401, 413, 422, 429, 503)}


@router.post("/reward", response_model=RewardResponse, responses=ERRORS)
async def reward(body: RewardRequest, request: Request, scorer: ScorerDep, settings: SettingsDep) -> RewardResponse:
    """Score a batch of sampled answers with the composite reward; results in request order."""
    if len(body.items) > settings.max_items_per_request:
        raise InvalidRequest(f"{len(body.items)} items is over the limit of {settings.max_items_per_request} "
                             "per request; split the batch", param="items")
    return await cancel_on_disconnect(request.receive, scorer.score(body))


@router.post("/get_reward", response_model=OpenRLHFResponse, responses=ERRORS)
async def get_reward(body: OpenRLHFRequest, request: Request, scorer: ScorerDep,
                     settings: SettingsDep) -> OpenRLHFResponse:
    """OpenRLHF's remote reward protocol: `--remote_rm_url http://host:port/get_reward`."""
    if len(body.query) > settings.max_items_per_request:
        raise InvalidRequest(f"{len(body.query)} queries is over the limit of {settings.max_items_per_request}",
                             param="query")
    reward_request = openrlhf.to_reward_request(body)
    return openrlhf.from_reward_response(await cancel_on_disconnect(request.receive, scorer.score(reward_request)))
