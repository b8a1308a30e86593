"""One ASGI guard in front of every route: body size, in-flight admission, request metrics."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import PayloadTooLarge, error_response
from service.metrics import Metrics

SCORING_ROUTES = frozenset({"/reward", "/get_reward", "/judge"})
KNOWN_ROUTES = SCORING_ROUTES | {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}


class RequestGuard:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, max_body_bytes: int, max_inflight: int,
                 retry_after_s: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body_bytes
        self.max_inflight = max_inflight
        self.retry_after = retry_after_s
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in KNOWN_ROUTES else "other"
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._guarded(scope, receive, send_status, route)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_duration.labels(route).observe(time.perf_counter() - start)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await error_response(413, PayloadTooLarge.type, f"body of {length} bytes is over the limit of "
                                 f"{self.max_body}", "body")(scope, receive, send)
            return
        if route not in SCORING_ROUTES:
            await self.app(scope, receive, send)
            return
        if self.inflight >= self.max_inflight:
            await error_response(429, "overloaded", f"{self.inflight} requests in flight, the limit is "
                                 f"{self.max_inflight}; retry later", None, self.retry_after)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise PayloadTooLarge(f"body is over the limit of {self.max_body} bytes", param="body")
            return message

        self.inflight += 1
        self.metrics.inflight.inc()
        try:
            await self.app(scope, counting_receive, send)
        finally:
            self.inflight -= 1
            self.metrics.inflight.dec()


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
