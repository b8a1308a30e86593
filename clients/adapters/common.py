"""What every adapter shares: a framework's sample as a /reward item, pooled clients, and `checked` results.

A result the service could not score (an outage, or an item it refused) never becomes a number here: the pooled
clients raise `MedixUnavailable` after their retries, and `checked` raises `ItemFailed` for a refused item. Each
adapter then surfaces that the way its framework can bear it, and turns the scored results into its numbers
with `clients.contract.numeric_scores`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any

from clients.client import AsyncMedixClient, MedixClient, MedixError, RewardScore
from clients.contract import COMPONENTS

# Client options an adapter accepts as keyword arguments (a framework's reward kwargs); everything else is ignored.
CLIENT_OPTIONS = ("url", "api_key", "timeout", "retries")


class ItemFailed(MedixError):
    """The service answered, but could not score this item (e.g. the judge refused an input longer than its
    context). Retrying does not help; the sample must not be trained on with a made-up reward."""


def text_of(message: Any) -> str:
    """A completion or prompt as text: plain strings pass; chat messages give the last message's content."""
    if isinstance(message, str):
        return message
    if isinstance(message, list) and message:
        last = message[-1]
        content = last.get("content", "") if isinstance(last, dict) else last
        if isinstance(content, list):  # multimodal content parts: keep the text parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    if isinstance(message, dict):
        return str(message.get("content", ""))
    return str(message)


def component_means(results: list[Any]) -> dict[str, float]:
    out = {}
    for name in COMPONENTS:
        values = [getattr(r, name) for r in results if getattr(r, name) is not None]
        if values:
            out[name] = sum(values) / len(values)
    return out


def client_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The client options among a framework's keyword arguments (`url`, `api_key`, `timeout`, `retries`)."""
    out = {k: kwargs[k] for k in CLIENT_OPTIONS if kwargs.get(k) is not None}
    if "timeout" in out:
        out["timeout"] = float(out["timeout"])
    if "retries" in out:
        out["retries"] = int(out["retries"])
    return out


_lock = threading.Lock()
_clients: dict[tuple[Any, ...], MedixClient] = {}
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], AsyncMedixClient]] = (
    weakref.WeakKeyDictionary())


def _key(url: str | None, api_key: str | None, timeout: float, retries: int) -> tuple[Any, ...]:
    # The environment's address and key are part of the key: a process that changes MEDIX_URL gets a new client.
    return (url or os.environ.get("MEDIX_URL"), api_key or os.environ.get("MEDIX_API_KEY"), timeout, retries)


def shared_client(url: str | None = None, api_key: str | None = None, *, timeout: float = 600,
                  retries: int = 5) -> MedixClient:
    """One pooled, thread-safe client per set of options, for the synchronous adapters. Address and key default to
    MEDIX_URL and MEDIX_API_KEY."""
    key = _key(url, api_key, timeout, retries)
    with _lock:
        if key not in _clients:
            _clients[key] = MedixClient(url, api_key, timeout=timeout, retries=retries)
        return _clients[key]


def shared_async_client(url: str | None = None, api_key: str | None = None, *, timeout: float = 600,
                        retries: int = 5) -> AsyncMedixClient:
    """One pooled async client per set of options and per event loop (an httpx pool belongs to the loop that
    opened it); must be called from a coroutine."""
    loop = asyncio.get_running_loop()
    key = _key(url, api_key, timeout, retries)
    with _lock:
        per_loop = _async_clients.setdefault(loop, {})
        if key not in per_loop:
            per_loop[key] = AsyncMedixClient(url, api_key, timeout=timeout, retries=retries)
        return per_loop[key]


def checked(results: Sequence[RewardScore], names: Sequence[str] | None = None) -> list[RewardScore]:
    """The results, all scored; the first item the service could not score raises `ItemFailed`, naming it
    (`names[i]`, default `items[i]`)."""
    for i, r in enumerate(results):
        if r.overall is None or r.error:
            err = r.error or {}
            name = names[i] if names is not None else f"items[{i}]"
            raise ItemFailed(422, str(err.get("type", "item_failed")),
                             f"{name} was not scored: {err.get('message', 'no score returned')}", name)
    return list(results)

