"""What every adapter shares: a framework's sample as a /reward item, pooled clients, and `checked` results.

A result the service could not score (an outage, or an item it refused) never becomes a number here unless the
caller opts in: the pooled clients raise `MedixUnavailable` after their retries, and `checked` raises `ItemFailed`
for a refused item. Each adapter then surfaces that the way its framework can bear it, and turns the scored results
into its numbers with `scores` (`clients.contract.numeric_scores`). With `on_refused="skip"` a refused item gets
the caller's neutral reward (`refused_reward`) and `medix_refused` 1.0 instead (`clients.contract.refused_scores`),
and the count is logged; an outage still raises.

Trainer-sized timeouts: the adapters' clients wait TRAINER_TIMEOUT seconds a try and retry TRAINER_RETRIES times
(the plain MedixClient: 600 s and 5), unless `timeout` / `retries` are passed or MEDIX_TIMEOUT / MEDIX_RETRIES set.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from collections.abc import Sequence
from typing import Any, Literal

from clients.client import AsyncMedixClient, ClientSettings, MedixClient, MedixError, RewardScore
from clients.contract import COMPONENTS, REFUSED_KEY, numeric_scores, refused_scores

log = logging.getLogger("medix.adapters")

# Client options an adapter accepts as keyword arguments (a framework's reward kwargs); everything else is ignored.
CLIENT_OPTIONS = ("url", "api_key", "timeout", "retries")
# A try may take 3 minutes (OpenRLHF's own per-try timeout) and 3 retries follow: a service that hangs holds a
# training step for about 12 minutes (4 x 180 s plus back-off) before MedixUnavailable, not an hour (6 x 600 s).
TRAINER_TIMEOUT = 180.0
TRAINER_RETRIES = 3
ON_REFUSED = ("raise", "skip")
OnRefused = Literal["raise", "skip"]


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


def trainer_timeouts(timeout: float | None = None, retries: int | None = None) -> tuple[float, int]:
    """(seconds a try, retries) for a trainer: the values passed, else MEDIX_TIMEOUT / MEDIX_RETRIES, else
    TRAINER_TIMEOUT / TRAINER_RETRIES."""
    return ClientSettings().timeouts(timeout, retries, TRAINER_TIMEOUT, TRAINER_RETRIES)


def refused_options(kwargs: dict[str, Any]) -> tuple[OnRefused, float]:
    """`on_refused` ("raise", the default, or "skip") and `refused_reward` (default 0.0) among a framework's
    keyword arguments; a wrong value is a ValueError, raised before anything is sent."""
    on_refused = kwargs.get("on_refused") or "raise"
    if on_refused not in ON_REFUSED:
        raise ValueError(f"on_refused must be 'raise' or 'skip', not {on_refused!r}")
    reward = kwargs.get("refused_reward")
    return on_refused, 0.0 if reward is None else float(reward)


_lock = threading.Lock()
_clients: dict[tuple[Any, ...], MedixClient] = {}
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[Any, ...], AsyncMedixClient]] = (
    weakref.WeakKeyDictionary())


def _key(url: str | None, api_key: str | None, timeout: float, retries: int) -> tuple[Any, ...]:
    # The environment's address and key are part of the key: a process that changes MEDIX_URL gets a new client.
    return (url or os.environ.get("MEDIX_URL"), api_key or os.environ.get("MEDIX_API_KEY"), timeout, retries)


def shared_client(url: str | None = None, api_key: str | None = None, *, timeout: float | None = None,
                  retries: int | None = None) -> MedixClient:
    """One pooled, thread-safe client per set of options, for the synchronous adapters. Address and key default to
    MEDIX_URL and MEDIX_API_KEY, `timeout` and `retries` to `trainer_timeouts()`."""
    timeout, retries = trainer_timeouts(timeout, retries)
    key = _key(url, api_key, timeout, retries)
    with _lock:
        if key not in _clients:
            _clients[key] = MedixClient(url, api_key, timeout=timeout, retries=retries)
        return _clients[key]


def shared_async_client(url: str | None = None, api_key: str | None = None, *, timeout: float | None = None,
                        retries: int | None = None) -> AsyncMedixClient:
    """One pooled async client per set of options and per event loop (an httpx pool belongs to the loop that
    opened it); must be called from a coroutine. Defaults as `shared_client`'s."""
    loop = asyncio.get_running_loop()
    timeout, retries = trainer_timeouts(timeout, retries)
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


def unscored(result: RewardScore) -> bool:
    return result.overall is None or bool(result.error)


def log_refused(framework: str, results: Sequence[RewardScore], names: Sequence[str] | None = None) -> int:
    """Log (WARNING, logger `medix.adapters`) how many of `results` the service refused, naming the first three;
    returns the count."""
    refused = [(names[i] if names is not None else f"items[{i}]", (r.error or {}).get("message", "no score"))
               for i, r in enumerate(results) if unscored(r)]
    if refused:
        log.warning("%s: MediX refused %d of %d samples (left unscored): %s", framework, len(refused), len(results),
                    refused[:3])
    return len(refused)


def scores(framework: str, results: Sequence[RewardScore], names: Sequence[str] | None = None, *,
           on_refused: OnRefused = "raise", refused_reward: float = 0.0,
           overall_key: str = "overall") -> list[dict[str, float]]:
    """The results as a framework's numbers, the same keys for every sample. `on_refused="raise"`: the first item the
    service refused raises `ItemFailed` (`checked`). `"skip"`: a refused item gets `refused_reward` and every sample
    `medix_refused` (1.0 refused, else 0.0), and the count is logged."""
    if on_refused == "raise":
        return [numeric_scores(r, overall_key) for r in checked(results, names)]
    log_refused(framework, results, names)
    return [refused_scores(r, refused_reward, overall_key) if unscored(r)
            else {**numeric_scores(r, overall_key), REFUSED_KEY: 0.0} for r in results]
