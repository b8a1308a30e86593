"""An httpx client for hundreds of requests in flight: several small connection pools instead of one big one.

One httpx pool does work in proportion to its connections and queued requests on every request it serves, so
its cost per request grows with the requests in flight (measured here: 512 small requests with 128 in flight
took 5.6 s on one pool of 128 connections, 0.8 s on 16 pools of 8, 0.45 s one at a time). The service's judge
backend keeps up to 128 calls in flight and per-sample trainers send hundreds of one-item requests at once: both
go through this client. Used by the client side and the service alike, so it depends on httpx only.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import certifi
import httpx

try:  # optional (`pip install './clients[tracing]'`): with it, the caller's trace context goes with each request
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:
    _propagate = _trace = None  # type: ignore[assignment]

PER_POOL = 4  # connections per pool
KEEPALIVE_S = 2.0


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The `Authorization: Bearer` header for a key; no header without one."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def send_trace_context(request: httpx.Request) -> None:
    """An httpx request hook: while the caller has an OpenTelemetry span active, the request carries its W3C trace
    context (`traceparent`, `tracestate`), written by OpenTelemetry's propagators, so that the service's trace of
    the request joins the caller's. Without OpenTelemetry installed, or with no span active, nothing is added."""
    if _trace is not None and _trace.get_current_span().get_span_context().is_valid:
        _propagate.inject(request.headers)


async def send_trace_context_async(request: httpx.Request) -> None:
    send_trace_context(request)


def _tls_context(verify: Any) -> Any:
    """httpx's `verify` (True, a CA bundle path, False or an SSLContext) as one context to share."""
    if verify is True or isinstance(verify, str):
        return ssl.create_default_context(cafile=verify if isinstance(verify, str) else certifi.where())
    return verify


class PooledAsyncClient:
    """`httpx.AsyncClient`'s `get`/`post` over ceil(max_connections / 4) pools; each request goes to the pool with
    the fewest requests in flight. `event_hooks` is one dict of lists for all pools (append to it at any time)."""

    def __init__(self, *, max_connections: int, per_pool: int = PER_POOL, **kwargs: Any) -> None:
        pools = max(1, math.ceil(max_connections / per_pool))
        per = math.ceil(max_connections / pools)
        given = kwargs.pop("event_hooks", None) or {}
        self.event_hooks: dict[str, list[Callable[[Any], Awaitable[None]]]] = {
            "request": list(given.get("request", [])), "response": list(given.get("response", []))}
        # Idle connections are dropped before the usual server keep-alive of 5 s (uvicorn's, vLLM's) would close
        # them: a request sent on a connection the server is closing fails with a read error.
        limits = httpx.Limits(max_connections=per, max_keepalive_connections=per, keepalive_expiry=KEEPALIVE_S)
        hooks = {"request": [self._on_request], "response": [self._on_response]}
        # One TLS context for every pool: each would otherwise load the CA bundle (about 30 ms apiece).
        kwargs["verify"] = _tls_context(kwargs.get("verify", True))
        self._pools = [httpx.AsyncClient(limits=limits, event_hooks=hooks, **kwargs) for _ in range(pools)]
        self._busy = [0] * pools

    @property
    def pools(self) -> int:
        return len(self._pools)

    @property
    def clients(self) -> list[httpx.AsyncClient]:
        """The pools' own clients (e.g. to instrument them)."""
        return list(self._pools)

    async def _on_request(self, request: httpx.Request) -> None:
        for hook in self.event_hooks["request"]:
            await hook(request)

    async def _on_response(self, response: httpx.Response) -> None:
        for hook in self.event_hooks["response"]:
            await hook(response)

    async def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        i = min(range(len(self._pools)), key=self._busy.__getitem__)
        self._busy[i] += 1
        try:
            return await self._pools[i].request(method, url, **kwargs)
        finally:
            self._busy[i] -= 1

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)

    async def aclose(self) -> None:
        await asyncio.gather(*(p.aclose() for p in self._pools))
