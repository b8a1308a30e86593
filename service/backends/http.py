"""Helpers shared by the HTTP backends."""

from __future__ import annotations

from collections.abc import Iterable

import httpx
from opentelemetry.trace import TracerProvider

from service.backends.base import PermanentBackendError, TransientBackendError
from service.runtime.exceptions import InputRejected
from service.runtime.tracing import ChildSpansOnly


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def traced(clients: Iterable[httpx.AsyncClient], provider: TracerProvider | None) -> None:
    """With a provider (tracing on): each call of these clients made for a traced request is a span of its trace,
    and the W3C trace context goes to the server, so that a judge or embeddings server that traces (vLLM with
    --otlp-traces-endpoint) joins the request's trace. Calls made outside a request start no trace."""
    if provider is None:
        return
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.metrics import NoOpMeterProvider

    for client in clients:  # spans only: the backends' metrics are Prometheus's (medix_backend_*)
        HTTPXClientInstrumentor.instrument_client(client, tracer_provider=ChildSpansOnly(provider),
                                                  meter_provider=NoOpMeterProvider())


def raise_for_status(resp: httpx.Response, what: str) -> None:
    """5xx and 429 are worth a retry. 400, 413 and 422 refuse this input (e.g. a prompt longer than the
    model's context): the item fails alone. Other 4xx (401, 404: a misconfigured backend) are not retried."""
    if resp.status_code < 400:
        return
    detail = resp.text[:300]
    if resp.status_code >= 500 or resp.status_code == 429:
        raise TransientBackendError(f"{what} answered {resp.status_code}: {detail}")
    if resp.status_code in (400, 413, 422):
        raise InputRejected(f"{what} refused the input ({resp.status_code}): {detail}")
    raise PermanentBackendError(f"{what} answered {resp.status_code}: {detail}")
