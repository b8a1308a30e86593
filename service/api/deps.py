"""Typed dependencies: what a route may ask for.

Each is `async def`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per dependency per
request (measured: about a tenth of the service's CPU time for a one-item request whose verdict is cached)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.admission import Admission
from service.evaluation.evaluator import Evaluator
from service.reward.scorer import RewardScorer
from service.runtime.metrics import Metrics
from service.runtime.usage import CURRENT
from service.runtime.wire import UsageInfo
from service.settings import Settings


async def _scorer(request: Request) -> RewardScorer:
    return request.app.state.scorer


async def _evaluator(request: Request) -> Evaluator:
    return request.app.state.evaluator


async def _admission(request: Request) -> Admission:
    return request.app.state.admission


async def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


def usage_info() -> UsageInfo | None:
    """What the current request used so far (the guard opens its count), for its response body."""
    spent = CURRENT.get()
    return UsageInfo(**spent.counts()) if spent is not None else None


ScorerDep = Annotated[RewardScorer, Depends(_scorer)]
EvaluatorDep = Annotated[Evaluator, Depends(_evaluator)]
AdmissionDep = Annotated[Admission, Depends(_admission)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
SettingsDep = Annotated[Settings, Depends(_settings)]
