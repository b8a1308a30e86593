"""slime's remote reward model protocol: `--rm-type remote_rm --rm-url http://host:port/rm --reward-key reward`.

slime posts `{prompt, response, label}` for one sample, with no `Authorization` header (with API keys set, the
guard serves /rm without a key only as MEDIX_RM_TENANT: docs/operations.md), and retries any failure itself. The
sample is scored as a one-item /reward request; never a 0 for what could not be scored: an item the judge refused
is a 422 and an outage a 503, which slime retries and then raises.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from clients.contract import numeric_scores, strip_end_markers
from service.api.body import JsonBodyRoute
from service.api.cancellation import with_cancellation
from service.api.deps import AdmissionDep, ScorerDep
from service.api.errors import SCORING_ERRORS
from service.reward.wire import RewardItem, RewardRequest, SlimeRequest, SlimeResponse
from service.runtime.exceptions import InputRejected

router = APIRouter(tags=["reward"], route_class=JsonBodyRoute)


@router.post("/rm", response_model=SlimeResponse, responses=SCORING_ERRORS)
@with_cancellation
async def rm(body: SlimeRequest, request: Request, scorer: ScorerDep, admission: AdmissionDep,
             profile: Annotated[str | None, Query(max_length=128, description=(
                 "Reward profile; default `medix-r1`. slime posts to `--rm-url` as given, so "
                 "`--rm-url http://host:8000/rm?profile=NAME` selects one."))] = None) -> SlimeResponse:
    """slime's `remote_rm`: one sample in, `reward` and the four components out."""
    scorer.profile(profile)  # an unknown profile is refused before the rate limit is charged
    # The response as slime keeps it (`no_stop_trim`): without the end-of-turn marker after the answer.
    item = RewardItem(id="0", response=strip_end_markers(body.response), ground_truth=body.label)
    reward_request = RewardRequest(items=[item], profile=profile)
    async with admission.admit(request, reward_request, "items") as tenant:
        scored = await scorer.score(reward_request, route="/rm", tenant=tenant)
    (result,) = scored.results
    if result.overall is None or result.error is not None:
        raise InputRejected(f"the sample could not be scored: {result.error.message if result.error else 'no score'}",
                            param="response")
    numbers = numeric_scores(result, "reward")
    return SlimeResponse(**numbers)
