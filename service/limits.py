"""Per-request admission after parsing: item count and text lengths first, then the key's rate limit.

The rate limit is charged last, so a request refused for its content costs the key nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import Request
from pydantic import BaseModel

from service.exceptions import InvalidRequest, Overloaded
from service.security import RateLimiter
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


async def admit(request: Request, settings: Settings, limiter: RateLimiter, body: BaseModel, list_param: str) -> None:
    """Check the request's size, then charge the key's rate limit (429 over it)."""
    request.state.items = n_items = check_request(body, list_param, settings)
    try:
        await limiter.take(getattr(request.state, "key_name", None) or "anonymous", n_items)
    except Overloaded:
        request.app.state.metrics.rate_limited.inc()
        raise
