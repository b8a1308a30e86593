"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from service.api.errors import error_response, redact
from service.runtime.metrics import CONTENT_TYPE
from service.runtime.wire import ErrorResponse


class HealthResponse(BaseModel):
    status: str
    components: dict[str, Any] = Field(default_factory=dict)


router = APIRouter(tags=["operations"])
READY_TIMEOUT_S = 5.0


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """Liveness: the process answers. No backend is called."""
    return HealthResponse(status="ok")


async def _probe(name: str, coro: Any) -> tuple[str, dict[str, Any] | None, str | None]:
    try:
        return name, await asyncio.wait_for(coro, READY_TIMEOUT_S), None
    except Exception as exc:
        return name, None, redact(f"{type(exc).__name__}: {exc}", 300)


@router.get("/readyz", response_model=HealthResponse, responses={503: {"model": ErrorResponse}})
async def readyz(request: Request) -> Any:
    """Ready when the judge and the embedder answer; the cache is reported, not required."""
    scorer = getattr(request.app.state, "scorer", None)
    if scorer is None:
        return error_response(503, "not_ready", "the service is starting", "startup", 1)
    probes = await asyncio.gather(_probe("judge", scorer.judge.health()),
                                  _probe("embed", scorer.embedder.health()))
    down = {name: err for name, _, err in probes if err}
    if down:
        message = "; ".join(f"{k} is down: {v}" for k, v in down.items())
        return error_response(503, "not_ready", message, ",".join(down), request.app.state.settings.retry_after_s)
    components: dict[str, Any] = {name: _redacted(info) for name, info, _ in probes}
    components["cache"] = _redacted(await scorer.cache.health())
    return HealthResponse(status="ready", components=components)


def _redacted(value: Any) -> Any:
    """Readiness is unauthenticated: backend details go out with their URLs cut to scheme://host:port."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
