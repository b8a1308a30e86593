"""Admission: where every 429 is decided (requests and items in flight per tenant, the rate limit) and sizes."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from pydantic import BaseModel

from service.runtime import tracing
from service.runtime.exceptions import InvalidRequest, Overloaded
from service.runtime.metrics import Metrics
from service.runtime.ratelimit import RateLimiter
from service.runtime.scheduling import ANONYMOUS
from service.settings import Settings


def texts_of(value: Any, param: str = "") -> Iterator[tuple[str, str]]:
    """Every string a request carries, with the field it sits in (`items[3].ground_truth.answer`)."""
    if isinstance(value, str):
        yield param, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from texts_of(getattr(value, name), f"{param}.{name}" if param else name)
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from texts_of(v, f"{param}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from texts_of(v, f"{param}.{k}")


def check_request(body: BaseModel, list_param: str, settings: Settings) -> int:
    """Raise 422 for too many items or any text over the length limit, naming it; return the item count."""
    n_items = len(getattr(body, list_param))
    if n_items > settings.max_items_per_request:
        raise InvalidRequest(f"{n_items} items is over the limit of {settings.max_items_per_request} per request; "
                             "split the batch", param=list_param)
    limit = settings.max_text_chars
    for param, text in texts_of(body):
        if len(text) > limit:
            raise InvalidRequest(f"{param} has {len(text)} characters, over the limit of {limit}", param=param)
    return n_items


class BodyBytes:
    """One request's hold on MEDIX_MAX_PARSING_BYTES: the bytes of its body taken as they are read, given back
    once the body is parsed (or refused)."""

    def __init__(self, admission: Admission) -> None:
        self._admission, self.held = admission, 0

    def take(self, n: int) -> None:
        """Hold `n` more bytes; Overloaded when other requests' bodies already hold the budget."""
        self._admission._take_body_bytes(self, n)

    def release(self) -> None:
        self._admission._parsing -= self.held
        self.held = 0


class Admission:
    """Every 429 is decided here, per tenant (API key): the requests it has in flight (taken by the HTTP guard
    before the body is read), then, after parsing, a request's size (422), the items the tenant already has in
    flight (items, not requests: 512 one-item requests are the work of one 512-item batch) and the key's rate
    limit, charged last so that a refused request costs nothing. One limit is the replica's, not a tenant's: the
    bytes of bodies being read and parsed at once (MEDIX_MAX_PARSING_BYTES)."""

    def __init__(self, settings: Settings, metrics: Metrics, limiter: RateLimiter | None = None) -> None:
        self._settings, self._metrics = settings, metrics
        self.limiter = limiter or RateLimiter(None, settings.rate_limit_burst)
        self._requests: dict[str, int] = {}  # per tenant: one tenant's burst never turns another's requests away
        self._items: dict[str, int] = {}
        self._parsing = 0  # bytes of bodies being read and parsed, all tenants together

    def hold_request(self, tenant: str) -> Callable[[], None]:
        """Take one of the tenant's request slots (the body is read and served in it); returns its release."""
        held, limit = self._requests.get(tenant, 0), self._settings.max_inflight_requests
        if held >= limit:
            raise Overloaded(f"{held} requests of this key in flight, the limit is {limit}; retry later")
        self._requests[tenant] = held + 1
        self._metrics.inflight.inc()

        def release() -> None:
            _release(self._requests, tenant, 1)
            self._metrics.inflight.dec()

        return release

    def hold_body_bytes(self) -> BodyBytes:
        """A request's hold on the bytes of bodies being read and parsed on this replica (all tenants together:
        what parsing costs in memory is the replica's), taken as its body arrives."""
        return BodyBytes(self)

    def _take_body_bytes(self, holder: BodyBytes, n: int) -> None:
        others, limit = self._parsing - holder.held, self._settings.max_parsing_bytes
        if others and self._parsing + n > limit:  # a lone body bigger than the budget still gets through
            raise Overloaded(f"this replica is reading and parsing {others} bytes of other request bodies; "
                             f"{holder.held + n} more would pass the limit of {limit} (MEDIX_MAX_PARSING_BYTES); "
                             "retry later", param="body")
        self._parsing += n
        holder.held += n

    def check(self, body: BaseModel, list_param: str) -> int:
        """The size checks alone (422 naming the field), for a route that must translate the body first."""
        return check_request(body, list_param, self._settings)

    @asynccontextmanager
    async def admit(self, request: Request, body: BaseModel, list_param: str,
                    calls_per_item: int = 1) -> AsyncIterator[str]:
        """Hold the request's items against its tenant while the block runs; yields the tenant. The rate limit is
        charged `calls_per_item` tokens an item: the judge calls each item costs at least (a /judge round each)."""
        start = time.perf_counter()
        request.state.items = n_items = check_request(body, list_param, self._settings)
        tenant = getattr(request.state, "key_name", None) or ANONYMOUS
        held, limit = self._items.get(tenant, 0), self._settings.max_inflight_items
        if held and held + n_items > limit:  # a lone request bigger than the limit still gets through
            raise Overloaded(f"this key has {held} items in flight; {n_items} more would pass the limit of "
                             f"{limit}; retry later", param=list_param)
        await self._charge(tenant, n_items * calls_per_item, list_param)
        # Read again after the await: other requests of the tenant may have come or gone meanwhile.
        self._items[tenant] = self._items.get(tenant, 0) + n_items
        waited = time.perf_counter() - start
        self._metrics.phase_duration.labels("admission").observe(waited)
        if self.limiter.enabled:  # a span when the key's rate limit was asked (Redis); without one, CPU alone
            tracing.span_since("admission", waited)
        try:
            yield tenant
        finally:
            _release(self._items, tenant, n_items)

    async def _charge(self, tenant: str, cost: int, list_param: str) -> None:
        limiter = self.limiter
        if not limiter.enabled:
            return
        if cost > limiter.burst:  # could never be admitted: say so instead of answering 429 forever
            raise InvalidRequest(f"this request costs {cost} tokens (an item each, a /judge round each), more than "
                                 f"this key's burst of {limiter.burst} (rate limit {limiter.rate:g} items/s); split "
                                 "the batch", param=list_param)
        wait = await limiter.wait_s(tenant, cost)
        if wait > 0:
            self._metrics.rate_limited.inc()
            raise Overloaded(f"rate limit of {limiter.rate:g} items/s for this key; this request's {cost} tokens "
                             f"need {wait:.1f} s more", param=list_param, retry_after_s=max(1, math.ceil(wait)))


def _release(held: dict[str, int], tenant: str, n: int) -> None:
    held[tenant] -= n
    if not held[tenant]:
        del held[tenant]
