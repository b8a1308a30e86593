"""Per-request admission after parsing: item count, text lengths, the key's rate limit."""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import Request

from service.exceptions import InvalidRequest, Overloaded
from service.security import RateLimiter
from service.settings import Settings


async def admit(request: Request, settings: Settings, limiter: RateLimiter, n_items: int, list_param: str,
                texts: Iterable[tuple[str, str | None]]) -> None:
    """Raise 422 for too many items or too long a text (naming it), 429 over the key's rate limit."""
    request.state.items = n_items
    if n_items > settings.max_items_per_request:
        raise InvalidRequest(f"{n_items} items is over the limit of {settings.max_items_per_request} per request; "
                             "split the batch", param=list_param)
    for param, text in texts:
        if text is not None and len(text) > settings.max_text_chars:
            raise InvalidRequest(f"{param} has {len(text)} characters, over the limit of {settings.max_text_chars}",
                                 param=param)
    try:
        await limiter.take(getattr(request.state, "key_name", None) or "anonymous", n_items)
    except Overloaded:
        request.app.state.metrics.rate_limited.inc()
        raise
