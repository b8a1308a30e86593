"""One ASGI guard in front of every route: request id, auth, body size, in-flight admission, metrics, access log."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.admission import Admission, BodyBytes
from service.api.auth import KeyRing
from service.api.body import JSON_ELEMENTS_PER_ITEM, RELEASE_BODY_BYTES, ElementCount, is_json
from service.api.errors import core_error_response, error_response
from service.api.tracing import RequestSpans
from service.runtime import phases, usage
from service.runtime.exceptions import Overloaded
from service.runtime.metrics import Metrics
from service.runtime.scheduling import ANONYMOUS

SCORING_ROUTES = frozenset({"/reward", "/get_reward", "/judge", "/rm"})
KNOWN_ROUTES = SCORING_ROUTES | {"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"}
# Open with API keys set: the health probes, and the API's own description (the schema of a public API, no
# tenant data; Swagger UI fetches it without a key). /metrics has its own key. Every other path needs a key.
OPEN_ROUTES = frozenset({"/healthz", "/readyz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
# Probes, scrapes and the API's description: no trace each.
UNTRACED_ROUTES = OPEN_ROUTES | {"/metrics"}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

access_log = logging.getLogger("medix.access")


def route_path(scope: Scope) -> str:
    """The path as routing matches it: under a root path (`uvicorn --root-path /api`, a mount under a prefix)
    the prefix is cut off, as Starlette does."""
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        if path == root:
            return ""
        if path[len(root)] == "/":
            return path[len(root):]
    return path


class _TooLarge(Exception):
    """A body the guard will not hand on: over the body limit, or holding too many JSON elements."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


class RequestGuard:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, admission: Admission, max_body_bytes: int,
                 retry_after_s: int, keys: KeyRing | None = None, metrics_key: str | None = None,
                 log_json: bool = True, body_read_timeout_s: float = 30.0,
                 max_json_elements: int | None = None, keyless_tenants: dict[str, str] | None = None,
                 spans: RequestSpans | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.admission = admission
        self.max_body = max_body_bytes
        self.retry_after = retry_after_s
        self.keys = keys or KeyRing({})
        self.metrics_keys = KeyRing({"metrics": metrics_key} if metrics_key else {})
        self.log_json = log_json
        self.read_timeout = body_read_timeout_s
        self.max_elements = max_json_elements
        # With keys set: the paths a request with no Authorization header at all is served on, and as which tenant
        # (slime's /rm, which cannot send a header; MEDIX_RM_TENANT). A wrong key is still a 401 there.
        self.keyless = dict(keyless_tenants or {})
        # Tracing on: each request's span, and the tracer of its phases' spans below it.
        self.spans = spans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = route_path(scope)
        route = path if path in KNOWN_ROUTES else "other"
        offered = _header(scope, b"x-request-id")
        request_id = offered if offered and _REQUEST_ID.match(offered) else uuid.uuid4().hex
        if (_header(scope, b"x-medix-attempt") or "1") not in ("1", ""):  # the client's retries, counted here
            self.metrics.client_retries.labels(route).inc()
        scope.setdefault("state", {})["request_id"] = request_id
        phases.request_id.set(request_id)
        status = 500
        start = time.perf_counter()
        traced = self.spans.start(scope, None if route == "other" else route) \
            if self.spans is not None and path not in UNTRACED_ROUTES else None
        trace_id = traced.trace_id if traced is not None else None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                extra = [(b"x-request-id", request_id.encode())]
                if trace_id:  # where to find this request in the trace viewer
                    extra.append((b"x-trace-id", trace_id.encode()))
                spent = scope["state"].get("usage")
                if spent is not None:  # the judge and embedding tokens this request used
                    extra.append((b"x-medix-usage", spent.header().encode()))
                message["headers"] = [*message["headers"], *extra]
            await send(message)

        try:
            if await self._guarded(scope, receive, send_with_id, path) == "gone":
                status = 499  # the client left while its body was arriving: nothing was sent
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.request_duration.labels(route).observe(elapsed)
            spent = scope["state"].get("usage")
            if traced is not None:
                traced.end(status, lambda: self._attributes(scope, request_id, spent))
            if self.log_json:
                access_log.info("request", extra={
                    "request_id": request_id, "method": scope.get("method"), "route": route, "status": status,
                    "duration_ms": round(elapsed * 1000, 2), "key": scope["state"].get("key_name"),
                    "items": scope["state"].get("items"), "trace_id": trace_id,
                    "usage": spent.counts() if spent is not None else None,
                })

    @staticmethod
    def _attributes(scope: Scope, request_id: str, spent: usage.Usage | None) -> dict[str, Any]:
        """The request's id, tenant (the key's name, never the key), items and usage, for its span."""
        attributes: dict[str, Any] = {"medix.request_id": request_id}
        tenant = spent.tenant if spent is not None else scope["state"].get("key_name")
        if tenant:
            attributes["medix.tenant"] = tenant
        if scope["state"].get("items") is not None:
            attributes["medix.items"] = scope["state"]["items"]
        if spent is not None:  # a count of zero is left out: each attribute costs the request its encoding
            attributes.update({f"medix.{k}": v for k, v in spent.counts().items() if v})
        return attributes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, type_: str, message: str,
                      param: str | None = None, retry_after: int | None = None, auth: bool = False,
                      close: bool = False) -> None:
        response = error_response(status, type_, message, param, retry_after)
        if auth:
            response.headers["WWW-Authenticate"] = "Bearer"
        if close:  # the rest of the body is never read: the connection cannot carry another request
            response.headers["Connection"] = "close"
        await response(scope, receive, send)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, path: str) -> str | None:
        # Deny by default: with API keys set, only OPEN_ROUTES (and /metrics, behind its own key) go without one,
        # so a path the guard does not know (a new route, a prefix it missed) is never an open door.
        if path in OPEN_ROUTES:
            await self.app(scope, receive, send)
            return None
        if path == "/metrics":
            if self.metrics_keys.enabled and self.metrics_keys.identify(_header(scope, b"authorization")) is None:
                await self._refuse(scope, receive, send, 401, "unauthorized", "/metrics needs its bearer key",
                                   "authorization", auth=True)
                return None
            await self.app(scope, receive, send)
            return None
        if self.keys.enabled:
            offered = _header(scope, b"authorization")
            name = self.keys.identify(offered)
            if name is None and offered is None:
                name = self.keyless.get(path)
            if name is None:
                await self._refuse(scope, receive, send, 401, "unauthorized",
                                   "missing or invalid API key: send Authorization: Bearer <key>", "authorization",
                                   auth=True)
                return None
            scope["state"]["key_name"] = name
        if path not in SCORING_ROUTES:
            await self.app(scope, receive, send)
            return None
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await self._refuse(scope, receive, send, 413, "payload_too_large",
                               f"body of {length} bytes is over the limit of {self.max_body}", "body")
            return None
        tenant = scope["state"].get("key_name") or ANONYMOUS
        # The judge and embedding work of this request, counted for its tenant and route as the backends reply.
        spent = scope["state"]["usage"] = usage.Usage(tenant, path, self.metrics)
        counting = usage.CURRENT.set(spent)
        try:
            return await self._admitted(scope, receive, send, length, tenant)
        finally:
            usage.CURRENT.reset(counting)

    async def _admitted(self, scope: Scope, receive: Receive, send: Send, length: int | None,
                        tenant: str) -> str | None:
        try:
            release = self.admission.hold_request(tenant)
        except Overloaded as exc:
            await core_error_response(exc, self.retry_after)(scope, receive, send)
            return None
        # Held from here, while the body is still arriving: slow uploads hold a slot like any request, until the
        # body-read deadline. The body's bytes are held against MEDIX_MAX_PARSING_BYTES until it is parsed.
        reading = self.admission.hold_body_bytes()
        try:
            try:
                async with asyncio.timeout(self.read_timeout):
                    body, elements = await self._read_body(receive, length, reading)
                if body is not None:
                    await self._check_elements(scope, body, elements)
            except Overloaded as exc:
                response = core_error_response(exc, self.retry_after)
                response.headers["Connection"] = "close"  # the body is left unread
                await response(scope, receive, send)
                return None
            except _TooLarge as exc:
                await self._refuse(scope, receive, send, 413, "payload_too_large", str(exc), "body", close=True)
                return None
            except TimeoutError:
                await self._refuse(scope, receive, send, 408, "request_timeout",
                                   f"the body did not arrive within {self.read_timeout:g} s "
                                   "(MEDIX_BODY_READ_TIMEOUT_S)", "body", close=True)
                return None
            if body is None:
                return "gone"
            scope["state"][RELEASE_BODY_BYTES] = reading.release
            await self.app(scope, _replay(body, receive), send)
        finally:
            reading.release()
            release()
        return None

    async def _read_body(self, receive: Receive, length: int | None,
                         reading: BodyBytes) -> tuple[bytes | None, ElementCount]:
        """The whole body (None when the client went away), its bytes counted as they arrive whatever the headers
        say (Content-Length included), within the body limit and the parsing budget; its JSON elements counted on
        the way."""
        if length is not None and length > 0:
            reading.take(length)  # a declared size: refused before a byte is read when the budget is spent
        chunks, size, elements = [], 0, ElementCount()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, elements
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise _TooLarge(f"body is over the limit of {self.max_body} bytes")
            if size > reading.held:
                reading.take(size - reading.held)
            elements.add(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), elements

    async def _check_elements(self, scope: Scope, body: bytes, elements: ElementCount) -> None:
        """A JSON body holds at most `max_elements` elements: what parsing it costs in time and memory is bounded
        before it is parsed (pydantic then stops at the first item past MEDIX_MAX_ITEMS_PER_REQUEST)."""
        if self.max_elements is None or not is_json(_header(scope, b"content-type")):
            return
        count = await elements.over(body, self.max_elements)
        if count is not None:
            raise _TooLarge(f"body holds {count} JSON elements or more, over the limit of {self.max_elements} "
                            f"({JSON_ELEMENTS_PER_ITEM} per item of MEDIX_MAX_ITEMS_PER_REQUEST); split the batch")
        if elements.bound > self.max_elements:
            await asyncio.sleep(0)  # a turn for other requests between counting a big body and parsing it


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
