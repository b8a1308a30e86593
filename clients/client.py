"""Python client of the MediX reward service, sync and async, over pooled httpx.

Retries 429 and 503 (honouring Retry-After) and connection errors; splits big batches into the
server's per-request limit; raises MedixError with what the server said. A judge outage reaches the
caller as MedixUnavailable, never as a reward of 0. While the caller has an OpenTelemetry span active, each
request carries its trace context (clients/http.py), so the service's trace of it joins the caller's.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from clients.http import PooledAsyncClient, auth_headers, send_trace_context, send_trace_context_async

DEFAULT_URL = "http://127.0.0.1:8000"
# The plain client's defaults: a try may take 10 minutes and 5 retries follow (6 tries), since a CI evaluation or
# `medix-judge` batch of up to 1,024 items with /judge rounds may legitimately take minutes and nothing waits on it.
# The trainer adapters use shorter ones (clients/adapters/common.py: TRAINER_TIMEOUT, TRAINER_RETRIES).
DEFAULT_TIMEOUT = 600.0
DEFAULT_RETRIES = 5
RETRY_STATUSES = {429, 502, 503, 504}
# Sent with every retry (2, 3, ...): the service counts them (medix_client_retries_total), so that the retry layers
# of client, balancer and service are seen end to end.
ATTEMPT_HEADER = "X-Medix-Attempt"


class ClientSettings(BaseSettings):
    """Where trainers and CI jobs find the service: MEDIX_URL and MEDIX_API_KEY; MEDIX_TIMEOUT (seconds a try) and
    MEDIX_RETRIES (retries after the first try) replace the caller's defaults when no value is passed in code."""

    model_config = SettingsConfigDict(env_prefix="MEDIX_", extra="ignore")
    url: str = DEFAULT_URL
    api_key: SecretStr | None = None
    timeout: float | None = Field(None, gt=0)
    retries: int | None = Field(None, ge=0)

    def timeouts(self, timeout: float | None, retries: int | None, default_timeout: float = DEFAULT_TIMEOUT,
                 default_retries: int = DEFAULT_RETRIES) -> tuple[float, int]:
        """(seconds a try, retries): the values passed, else MEDIX_TIMEOUT / MEDIX_RETRIES, else the defaults."""
        t = timeout if timeout is not None else self.timeout if self.timeout is not None else default_timeout
        r = retries if retries is not None else self.retries if self.retries is not None else default_retries
        return float(t), int(r)


class MedixError(Exception):
    def __init__(self, status: int, type_: str, message: str, param: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {type_}: {message}" + (f" (param {param})" if param else ""))
        self.status, self.type, self.message, self.param, self.retry_after = status, type_, message, param, retry_after


class MedixUnavailable(MedixError):
    """The service or one of its backends could not answer after the client's retries."""


class RewardScore(BaseModel):
    """One /reward result. `error` is set (and `overall` null) when this item alone could not be scored."""

    model_config = ConfigDict(extra="allow")
    id: str
    overall: float | None
    format: float
    accuracy_llm: float | None
    accuracy_embed: float | None
    modality: float | None
    details: dict[str, Any] = {}
    error: dict[str, Any] | None = None


class JudgeScore(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    task: str
    rubric: str
    score: float | None
    votes: list[int] = []
    raw_score: float | None = None
    error: dict[str, Any] | None = None


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _retry_after(resp: httpx.Response | None, attempt: int, backoff: float) -> float:
    if resp is not None:
        try:
            return min(60.0, float(resp.headers.get("retry-after", "")))
        except ValueError:
            pass
    return min(30.0, backoff * (2 ** attempt)) * (0.5 + random.random())


@dataclass(frozen=True)
class RetryAfter:
    """An attempt that is worth another: wait this long, then send the request again."""

    seconds: float


def _error(resp: httpx.Response) -> MedixError:
    try:
        e = resp.json()["error"]
        type_, message, param = e.get("type", "error"), e.get("message", resp.text), e.get("param")
    except (ValueError, KeyError, TypeError):
        type_, message, param = "http_error", resp.text[:300], None
    ra = resp.headers.get("retry-after")
    cls = MedixUnavailable if resp.status_code in RETRY_STATUSES else MedixError
    return cls(resp.status_code, type_, message, param, float(ra) if ra and ra.isdigit() else None)


def _attempt(attempt: int) -> dict[str, str]:
    return {ATTEMPT_HEADER: str(attempt + 1)} if attempt else {}


class _Base:
    def __init__(self, base_url: str | None, api_key: str | None, timeout: float | None, retries: int | None,
                 backoff: float, max_items: int) -> None:
        env = ClientSettings()
        self.base_url = (base_url or env.url).rstrip("/")
        key = api_key or (env.api_key.get_secret_value() if env.api_key else None)
        self.headers = auth_headers(key)
        self.timeout, self.retries = env.timeouts(timeout, retries)
        self.backoff = backoff
        self.max_items = max_items

    def _settle(self, result: httpx.Response | httpx.TransportError, attempt: int) -> dict[str, Any] | RetryAfter:
        """One attempt's result: the reply's JSON when done, else how long to wait before the next attempt.
        Raises what the server said (or the connection error) when it is final or no attempt is left."""
        last = attempt >= self.retries
        if isinstance(result, httpx.TransportError):
            if last:
                raise MedixUnavailable(0, "connection_error", repr(result)) from result
            return RetryAfter(_retry_after(None, attempt, self.backoff))
        if result.status_code < 400:
            return result.json()
        if result.status_code not in RETRY_STATUSES or last:
            raise _error(result)
        return RetryAfter(_retry_after(result, attempt, self.backoff))


class MedixClient(_Base):
    """`timeout` (seconds a try) and `retries` default to MEDIX_TIMEOUT / MEDIX_RETRIES, else 600 and 5."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float | None = None,
                 retries: int | None = None, backoff: float = 0.5, max_items: int = 1024) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff, max_items)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout,
                                  event_hooks={"request": [send_trace_context]})

    def __enter__(self) -> MedixClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in itertools.count():
            try:
                outcome = self._settle(self._http.post(path, json=body, headers=_attempt(attempt)), attempt)
            except httpx.TransportError as exc:
                outcome = self._settle(exc, attempt)
            if not isinstance(outcome, RetryAfter):
                return outcome
            time.sleep(outcome.seconds)
        raise AssertionError("unreachable")

    def reward(self, items: Sequence[dict[str, Any]], profile: str | None = None) -> list[RewardScore]:
        out: list[RewardScore] = []
        for chunk in _chunks(items, self.max_items):
            body = self._post("/reward", {"items": list(chunk), "profile": profile})
            out.extend(RewardScore.model_validate(r) for r in body["results"])
        return out

    def judge(self, items: Sequence[dict[str, Any]], rounds: int = 3, explain: bool = False) -> list[JudgeScore]:
        out: list[JudgeScore] = []
        for chunk in _chunks(items, self.max_items):
            body = self._post("/judge", {"items": list(chunk), "rounds": rounds, "explain": explain})
            out.extend(JudgeScore.model_validate(r) for r in body["results"])
        return out


class AsyncMedixClient(_Base):
    """`max_connections` bounds the requests in flight: per-sample callers (verl's reward loop, OpenRLHF) send
    hundreds at once, which httpx's default pool of 100 would queue in the client; they are spread over small
    pools (clients/http.py). `on_response` is awaited with every HTTP reply, retried ones included (e.g. to count
    429s). `timeout` and `retries` default as MedixClient's do."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *, timeout: float | None = None,
                 retries: int | None = None, backoff: float = 0.5, max_items: int = 1024, max_connections: int = 1024,
                 on_response: Callable[[httpx.Response], Awaitable[None]] | None = None) -> None:
        super().__init__(base_url, api_key, timeout, retries, backoff, max_items)
        hooks: dict[str, list[Any]] = {"request": [send_trace_context_async]}
        if on_response is not None:
            hooks["response"] = [on_response]
        self._http = PooledAsyncClient(max_connections=max_connections, base_url=self.base_url,
                                       headers=self.headers, timeout=self.timeout, event_hooks=hooks)

    async def __aenter__(self) -> AsyncMedixClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        for attempt in itertools.count():
            try:
                outcome = self._settle(await self._http.post(path, json=body, headers=_attempt(attempt)), attempt)
            except httpx.TransportError as exc:
                outcome = self._settle(exc, attempt)
            if not isinstance(outcome, RetryAfter):
                return outcome
            await asyncio.sleep(outcome.seconds)
        raise AssertionError("unreachable")

    async def reward(self, items: Sequence[dict[str, Any]], profile: str | None = None) -> list[RewardScore]:
        parts = await asyncio.gather(*(self._post("/reward", {"items": list(c), "profile": profile})
                                       for c in _chunks(items, self.max_items)))
        return [RewardScore.model_validate(r) for p in parts for r in p["results"]]

    async def judge(self, items: Sequence[dict[str, Any]], rounds: int = 3,
                    explain: bool = False) -> list[JudgeScore]:
        parts = await asyncio.gather(*(self._post("/judge", {"items": list(c), "rounds": rounds, "explain": explain})
                                       for c in _chunks(items, self.max_items)))
        return [JudgeScore.model_validate(r) for p in parts for r in p["results"]]
