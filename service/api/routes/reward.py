"""/reward and OpenRLHF's /get_reward: validate and delegate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from service.api.body import JsonBodyRoute
from service.api.cancellation import with_cancellation
from service.api.deps import AdmissionDep, ScorerDep, usage_info
from service.api.errors import SCORING_ERRORS
from service.reward import openrlhf
from service.reward.wire import OpenRLHFRequest, OpenRLHFResponse, RewardRequest, RewardResponse

router = APIRouter(tags=["reward"], route_class=JsonBodyRoute)


@router.post("/reward", response_model=RewardResponse, responses=SCORING_ERRORS)
@with_cancellation
async def reward(body: RewardRequest, request: Request, scorer: ScorerDep,
                 admission: AdmissionDep) -> RewardResponse:
    """Score a batch of sampled answers with the composite reward; results in request order."""
    scorer.profile(body.profile)  # an unknown profile is refused before the rate limit is charged
    async with admission.admit(request, body, "items") as tenant:
        scored = await scorer.score(body, tenant=tenant)
    scored.usage = usage_info()
    return scored


@router.post("/get_reward", response_model=OpenRLHFResponse, responses=SCORING_ERRORS)
@with_cancellation
async def get_reward(body: OpenRLHFRequest, request: Request, scorer: ScorerDep, admission: AdmissionDep,
                     on_refused: Annotated[openrlhf.OnRefused, Query(description=(
                         "`raise` (default): an item the service could not score is a 422 naming `query[i]`. "
                         "`skip`: it scores `refused_reward`, and `extra_logs` gains `medix_refused` (1.0 for it, "
                         "0.0 for the others). Outages are 503 either way."))] = "raise",
                     refused_reward: Annotated[float, Query(allow_inf_nan=False, ge=-1e6, le=1e6, description=(
                         "The reward of an item the service could not score, with `on_refused=skip`."))] = 0.0,
                     ) -> OpenRLHFResponse:
    """OpenRLHF's remote reward protocol: `--reward.remote_url http://host:port/get_reward`. Empty lists (OpenRLHF
    0.10.2-0.11.0 send them to every URL after the first of several) get empty lists back."""
    admission.check(body, "query")  # sizes first, so an over-long field is named as such
    reward_request = openrlhf.to_reward_request(body)  # mismatched lists and bad labels: 422 before charging
    if reward_request is None:  # no sample: nothing to admit, charge or score
        return openrlhf.empty_response(on_refused)
    async with admission.admit(request, body, "query") as tenant:
        scored = await scorer.score(reward_request, route="/get_reward", tenant=tenant)
    return openrlhf.from_reward_response(scored, on_refused, refused_reward)
