"""Backend interfaces, and the one place where backend calls are retried, timed and counted."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from service.backends.breaker import CircuitBreaker
from service.exceptions import BackendUnavailable
from service.metrics import Metrics

T = TypeVar("T")


class TransientBackendError(Exception):
    """Worth retrying: connection refused or reset, 5xx, 429 from the backend."""


class PermanentBackendError(Exception):
    """Retrying will not help: a 4xx, a reply that does not parse."""


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    # Top alternatives at the first generated token: decoded token -> logprob.
    first_token_logprobs: dict[str, float] | None = None


class JudgeBackend(Protocol):
    name: str

    @property
    def model_id(self) -> str: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> dict[str, Any]:
        """Raises when the backend cannot answer; returns details otherwise."""
        ...

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        choice: list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
        top_logprobs: int | None = None,
    ) -> Completion:
        """One greedy chat completion; raises TransientBackendError / PermanentBackendError."""
        ...


class Embedder(Protocol):
    name: str

    @property
    def model_id(self) -> str: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> dict[str, Any]: ...

    async def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised embeddings, one row per text, in order."""
        ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int
    backoff_s: float
    timeout_s: float


async def call_backend(
    kind: str,
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    metrics: Metrics,
    retry_after_s: int,
    breaker: CircuitBreaker | None = None,
) -> T:
    """Run one backend call with timeout, jittered exponential backoff, circuit breaker and metrics.

    Exhausted retries, an open circuit or a permanent error become BackendUnavailable (503), never a score.
    """
    if breaker is not None:
        await breaker.before_call(policy.timeout_s)
    # The breaker judges whole calls: a call that succeeds on a retry (e.g. on another replica) is a success;
    # one that failed an attempt and was then cancelled (a sibling's failure ended the request) is a failure.
    outcome: bool | None = None  # None: cancelled before any failure, or a caller error
    failed_attempts = 0
    try:
        last = "no attempt"
        for attempt in range(policy.retries + 1):
            if attempt:
                delay = policy.backoff_s * (2 ** (attempt - 1))
                await asyncio.sleep(delay * (0.5 + random.random()))
            start = time.perf_counter()
            try:
                result = await asyncio.wait_for(fn(), policy.timeout_s)
            except TimeoutError:
                failed_attempts += 1
                metrics.backend_requests.labels(kind, "timeout").inc()
                last = f"timed out after {policy.timeout_s:g} s"
                continue
            except TransientBackendError as exc:
                failed_attempts += 1
                metrics.backend_requests.labels(kind, "error").inc()
                last = str(exc) or type(exc).__name__
                continue
            except PermanentBackendError as exc:
                metrics.backend_requests.labels(kind, "error").inc()
                raise BackendUnavailable(kind, str(exc), retry_after_s=retry_after_s) from exc
            finally:
                metrics.backend_duration.labels(kind).observe(time.perf_counter() - start)
            metrics.backend_requests.labels(kind, "ok").inc()
            outcome = True
            return result
        outcome = False
    finally:
        if breaker is not None:
            breaker.record(outcome if outcome is not None or not failed_attempts else False)
    raise BackendUnavailable(kind, f"unavailable after {policy.retries + 1} attempts: {last}",
                             retry_after_s=retry_after_s)
