"""The HTTP face of the service: the FastAPI app with its guard, error handlers and routes.

The app's state (scorer, evaluator) is opened by the lifespan the caller passes (service/app.py), so that this
layer holds no backend and the core holds no HTTP.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from service.api.admission import Admission
from service.api.auth import KeyRing
from service.api.body import json_element_limit
from service.api.errors import install_error_handlers
from service.api.middleware import RequestGuard
from service.api.routes import evaluation, ops, reward, slime
from service.api.tracing import RequestSpans
from service.runtime.metrics import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider


def create_api(settings: Settings, metrics: Metrics, admission: Admission, keys: KeyRing,
               lifespan: Callable[[Any], AbstractAsyncContextManager[None]],
               tracer_provider: TracerProvider | None = None) -> FastAPI:
    """The app; with a tracer provider, each request is traced (service/api/tracing.py)."""
    app = FastAPI(
        title="MediX reward service",
        version="0.1.0",
        summary="MediX-R1 composite reward and reference-based LLM-as-judge for medical RL.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.admission = admission
    install_error_handlers(app, settings.retry_after_s)
    app.add_middleware(RequestGuard, metrics=metrics, admission=admission, max_body_bytes=settings.max_body_bytes,
                       retry_after_s=settings.retry_after_s, keys=keys,
                       metrics_key=settings.metrics_key.get_secret_value() if settings.metrics_key else None,
                       log_json=settings.log_json, body_read_timeout_s=settings.body_read_timeout_s,
                       max_json_elements=json_element_limit(settings.max_items_per_request),
                       keyless_tenants={"/rm": settings.rm_tenant} if settings.rm_tenant else None,
                       spans=RequestSpans(tracer_provider) if tracer_provider is not None else None)
    for feature in (reward, slime, evaluation, ops):
        app.include_router(feature.router)
    return app
