"""Typed dependencies: what a route may ask for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.api.admission import Admission
from service.evaluation.evaluator import Evaluator
from service.reward.scorer import RewardScorer
from service.runtime.metrics import Metrics
from service.settings import Settings


def _scorer(request: Request) -> RewardScorer:
    return request.app.state.scorer


def _evaluator(request: Request) -> Evaluator:
    return request.app.state.evaluator


def _admission(request: Request) -> Admission:
    return request.app.state.admission


def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def _settings(request: Request) -> Settings:
    return request.app.state.settings


ScorerDep = Annotated[RewardScorer, Depends(_scorer)]
EvaluatorDep = Annotated[Evaluator, Depends(_evaluator)]
AdmissionDep = Annotated[Admission, Depends(_admission)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
SettingsDep = Annotated[Settings, Depends(_settings)]
