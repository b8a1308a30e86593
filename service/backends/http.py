"""Helpers shared by the HTTP backends."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx
from opentelemetry.trace import TracerProvider

from clients.http import send_trace_context_async
from service.backends.base import PermanentBackendError, TransientBackendError
from service.runtime.exceptions import InputRejected


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def traced(clients: Iterable[Any], provider: TracerProvider | None) -> None:
    """With a provider (tracing on): each call these clients make inside a traced request carries the request's W3C
    trace context (written by OpenTelemetry's propagators: the client's request hook, clients/http.py), so that a
    judge or embeddings server that traces (vLLM with --otlp-traces-endpoint) puts its span of the call into the
    request's trace, below the phase that made it (`judge_call`, `embed`). Calls made outside a request (probes,
    start-up) carry none.

    No span per HTTP call of the service's own: OpenTelemetry's httpx instrumentation would add one, at about 0.12 ms
    of CPU a call (it parses the URL and copies the headers again), a third of what tracing may cost a cold batch
    (docs/operations.md, "What it costs"); the phase's span and the server's own say what it would."""
    if provider is None:
        return
    for client in clients:  # an httpx.AsyncClient or a PooledAsyncClient: both keep their hooks in event_hooks
        client.event_hooks["request"].append(send_trace_context_async)


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
