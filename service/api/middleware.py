"""One ASGI guard in front of every route: request id, auth, body size, in-flight admission, metrics, access log."""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.admission import Admission
from service.api.auth import KeyRing
from service.api.errors import core_error_response, error_response
from service.runtime import phases
from service.runtime.exceptions import Overloaded
from service.runtime.metrics import Metrics
from service.runtime.scheduling import ANONYMOUS

SCORING_ROUTES = frozenset({"/reward", "/get_reward", "/judge"})
KNOWN_ROUTES = SCORING_ROUTES | {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_log = logging.getLogger("medix.access")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestGuard:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, admission: Admission, max_body_bytes: int,
                 retry_after_s: int, keys: KeyRing | None = None, metrics_key: str | None = None,
                 log_json: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.admission = admission
        self.max_body = max_body_bytes
        self.retry_after = retry_after_s
        self.keys = keys or KeyRing({})
        self.metrics_keys = KeyRing({"metrics": metrics_key} if metrics_key else {})
        self.log_json = log_json

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in KNOWN_ROUTES else "other"
        offered = _header(scope, b"x-request-id")
        request_id = offered if offered and _REQUEST_ID.match(offered) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        phases.request_id.set(request_id)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self._guarded(scope, receive, send_with_id, route)
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_duration.labels(route).observe(elapsed)
            if self.log_json:
                access_log.info("request", extra={
                    "request_id": request_id, "method": scope.get("method"), "route": route, "status": status,
                    "duration_ms": round(elapsed * 1000, 2), "key": scope["state"].get("key_name"),
                    "items": scope["state"].get("items"),
                })

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, type_: str, message: str,
                      param: str | None = None, retry_after: int | None = None, auth: bool = False) -> None:
        response = error_response(status, type_, message, param, retry_after)
        if auth:
            response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)

    async def _read_limited(self, receive: Receive) -> tuple[bytes, bool]:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks), False
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", True
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), False

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        if route == "/metrics" and self.metrics_keys.enabled:
            if self.metrics_keys.identify(_header(scope, b"authorization")) is None:
                await self._refuse(scope, receive, send, 401, "unauthorized", "/metrics needs its bearer key",
                                   "authorization", auth=True)
                return
        if route not in SCORING_ROUTES:
            await self.app(scope, receive, send)
            return
        if self.keys.enabled:
            name = self.keys.identify(_header(scope, b"authorization"))
            if name is None:
                await self._refuse(scope, receive, send, 401, "unauthorized",
                                   "missing or invalid API key: send Authorization: Bearer <key>", "authorization",
                                   auth=True)
                return
            scope["state"]["key_name"] = name
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await self._refuse(scope, receive, send, 413, "payload_too_large",
                               f"body of {length} bytes is over the limit of {self.max_body}", "body")
            return
        tenant = scope["state"].get("key_name") or ANONYMOUS
        try:
            release = self.admission.hold_request(tenant)
        except Overloaded as exc:
            await core_error_response(exc, self.retry_after)(scope, receive, send)
            return
        # Held from here, while a chunked body is still arriving: slow uploads hold a slot like any request.
        try:
            if length is None:  # chunked: read it here, within the limit, and hand it on
                body, too_big = await self._read_limited(receive)
                if too_big:
                    await self._refuse(scope, receive, send, 413, "payload_too_large",
                                       f"body is over the limit of {self.max_body} bytes", "body")
                    return
                receive = _replay(body, receive)
            await self.app(scope, receive, send)
        finally:
            release()


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect as usual

    return replay


def _content_length(scope: dict[str, Any]) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
