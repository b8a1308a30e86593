"""A scoring route stops its work when its HTTP client goes away: nobody would read the result."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request

from service.runtime.exceptions import ClientDisconnected

T = TypeVar("T")


def with_cancellation(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Run the route (which takes `request: Request`) until it returns or its client disconnects; on disconnect
    cancel it (its judge calls included) and raise ClientDisconnected (status 499 in metrics and logs)."""

    @functools.wraps(handler)  # FastAPI reads the handler's signature through the wrapper
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        request: Request = kwargs["request"]
        return await cancel_on_disconnect(request.receive, handler(*args, **kwargs))

    return wrapper


async def cancel_on_disconnect(receive: Any, work: Awaitable[Any]) -> Any:
    """Run `work` until it finishes or the HTTP client disconnects; on disconnect cancel it and raise."""
    task = asyncio.ensure_future(work)

    async def watch() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(watch())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise ClientDisconnected("client disconnected; work cancelled")
