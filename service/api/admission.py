"""Per-request admission after parsing: size first, then the tenant's work in flight and its rate limit."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request
from pydantic import BaseModel

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


class Admission:
    """What a scoring request must pass after parsing, per tenant (API key): its size, the work the tenant
    already has in flight (items, not requests: 512 one-item requests are the work of one 512-item batch),
    and the key's rate limit, charged last so that a refused request costs nothing."""

    def __init__(self, settings: Settings, limiter: RateLimiter, metrics: Metrics) -> None:
        self._settings, self._limiter, self._metrics = settings, limiter, metrics
        self._items: dict[str, int] = {}

    def check(self, body: BaseModel, list_param: str) -> int:
        """The size checks alone (422 naming the field), for a route that must translate the body first."""
        return check_request(body, list_param, self._settings)

    def items_in_flight(self, tenant: str) -> int:
        return self._items.get(tenant, 0)

    @asynccontextmanager
    async def admit(self, request: Request, body: BaseModel, list_param: str) -> AsyncIterator[str]:
        """Hold the request's items against its tenant while the block runs; yields the tenant."""
        start = time.perf_counter()
        request.state.items = n_items = check_request(body, list_param, self._settings)
        tenant = getattr(request.state, "key_name", None) or ANONYMOUS
        held, limit = self._items.get(tenant, 0), self._settings.max_inflight_items
        if held and held + n_items > limit:  # a lone request bigger than the limit still gets through
            raise Overloaded(f"this key has {held} items in flight; {n_items} more would pass the limit of "
                             f"{limit}; retry later", param=list_param)
        try:
            await self._limiter.take(tenant, n_items)
        except Overloaded:
            self._metrics.rate_limited.inc()
            raise
        self._items[tenant] = self._items.get(tenant, 0) + n_items
        self._metrics.phase_duration.labels("admission").observe(time.perf_counter() - start)
        try:
            yield tenant
        finally:
            self._items[tenant] -= n_items
            if not self._items[tenant]:
                del self._items[tenant]
