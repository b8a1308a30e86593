"""Backend interfaces, and the one place where backend calls are retried, timed and counted."""

from __future__ import annotations

import asyncio
import math
import numbers
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from service.backends.breaker import CircuitBreaker
from service.runtime.cache import UNRESOLVED_MODEL as UNRESOLVED_MODEL
from service.runtime.exceptions import BackendUnavailable, InputRejected
from service.runtime.metrics import Metrics
from service.runtime.scheduling import CALL_AFFINITY as CALL_AFFINITY
from service.runtime.scheduling import CALL_PRIORITY as CALL_PRIORITY

T = TypeVar("T")

# What a judge backend asks at start to learn how its tokenizer begins each verdict choice.
PROBE_MESSAGES = [{"role": "system", "content": "Answer with one word: YES or NO."},
                  {"role": "user", "content": "Is the sky blue on a clear day? YES or NO."}]


class TransientBackendError(Exception):
    """Worth retrying: connection refused or reset, 5xx, 429 from the backend."""


class PermanentBackendError(Exception):
    """Retrying will not help: a 4xx, a reply that does not parse."""


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    # Top alternatives at the first generated token: decoded token -> logprob. From a single-step verdict:
    # each choice -> the logprob of its first tokens together.
    first_token_logprobs: dict[str, float] | None = None


# How a backend asks for a YES/NO verdict (see `plan_verdict`).
SINGLE_STEP = "single-step"
CONSTRAINED = "constrained"
DEFAULT_CHOICES = ("YES", "NO")


@dataclass(frozen=True, slots=True)
class VerdictPlan:
    """One decoding step restricted to the tokens that can begin a choice (`token_choice`: token id -> the choice
    it begins), or, where that cannot be done, the constrained multi-token call (`token_choice` None)."""

    choices: tuple[str, ...]
    token_choice: dict[int, str] | None
    reason: str

    @property
    def mode(self) -> str:
        return SINGLE_STEP if self.token_choice else CONSTRAINED

    @property
    def token_ids(self) -> list[int]:
        return sorted(self.token_choice or ())

    def describe(self) -> dict[str, Any]:
        return {"verdict": self.mode, "verdict_reason": self.reason,
                "verdict_tokens": {str(t): c for t, c in sorted((self.token_choice or {}).items())}}


def choice_prefixes(choices: Sequence[str]) -> list[str]:
    """Every non-empty prefix of every choice, once: `YES`, `NO` -> Y, YE, YES, N, NO."""
    return list(dict.fromkeys(c[:k] for c in choices for k in range(1, len(c) + 1)))


def plan_verdict(choices: Sequence[str], reply_ids: Mapping[str, Sequence[int]]) -> VerdictPlan:
    """Which first tokens decide the verdict, from how the judge's tokenizer writes each prefix of each choice as
    the start of the assistant's reply (`reply_ids`, from the chat template the model sees).

    A prefix that is one token can be the first step of constrained decoding (SmolLM2: `Y` for YES, `N` and `NO`
    for NO); allowing exactly those keeps the verdict of the constrained call, whose choices part at the first
    step. When two choices share a first token, one step cannot tell them apart: the constrained call it is.
    """
    choices = tuple(choices)
    if len(choices) < 2:
        return VerdictPlan(choices, None, "fewer than two choices")
    firsts: dict[int, str] = {}
    for c in choices:
        ids = list(reply_ids.get(c) or ())
        if not ids:
            return VerdictPlan(choices, None, f"the tokenizer writes {c!r} as no token")
        if ids[0] in firsts:
            return VerdictPlan(choices, None, f"{firsts[ids[0]]!r} and {c!r} begin with the same token {ids[0]}")
        firsts[ids[0]] = c
    token_choice = dict(firsts)  # each choice's own first token, and every prefix that is one token
    for c in choices:
        for k in range(1, len(c) + 1):
            ids = list(reply_ids.get(c[:k]) or ())
            if len(ids) != 1:
                continue
            other = token_choice.setdefault(ids[0], c)
            if other != c:
                return VerdictPlan(choices, None, f"token {ids[0]} ({c[:k]!r}) begins both {other!r} and {c!r}")
    shown = ", ".join(f"{t}->{c}" for t, c in sorted(token_choice.items()))
    return VerdictPlan(choices, token_choice, f"one decoding step among the first tokens {shown}")


def finite_logprobs(entries: Iterable[tuple[T, Any]]) -> dict[T, float]:
    """token -> logprob, leaving out a missing or non-finite logprob (NaN, Infinity, -Infinity): no evidence at
    all, as if the backend had not sent it. Every backend reads its logprobs through this."""
    out: dict[T, float] = {}
    for token, lp in entries:
        if isinstance(lp, numbers.Real) and not isinstance(lp, bool) and math.isfinite(lp):
            out[token] = float(lp)
    return out


def single_step_completion(plan: VerdictPlan, token_id: int, logprobs: Mapping[int, float]) -> Completion | None:
    """The verdict from one decoded token: its choice as the text, and each choice's logprob (its first tokens'
    together) for p(YES); None when the token is not one the plan allows (the server ignored the restriction)."""
    if plan.token_choice is None or token_id not in plan.token_choice:
        return None
    by_choice: dict[str, list[float]] = {}
    for tid, lp in finite_logprobs(logprobs.items()).items():
        c = plan.token_choice.get(tid)
        if c is not None:
            by_choice.setdefault(c, []).append(lp)
    first = {}
    for c, lps in by_choice.items():
        top = max(lps)
        first[c] = top + math.log(sum(math.exp(lp - top) for lp in lps))
    return Completion(text=plan.token_choice[token_id], first_token_logprobs=first or None)


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

    async def verdict(
        self,
        messages: list[dict[str, str]],
        *,
        choices: Sequence[str],
        max_tokens: int,
        top_logprobs: int,
    ) -> Completion:
        """The reward's verdict: `text` is one of `choices`, `first_token_logprobs` gives p(YES) at the step that
        decided it. One decoding step where the backend learned the choices' first tokens at start (see
        `plan_verdict`), else a constrained `complete` of up to `max_tokens`."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the backend runs with (dtype, verdict mode and why), for logs, /readyz and the bench."""
        ...


class Embedder(Protocol):
    name: str

    @property
    def model_id(self) -> str: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def health(self) -> dict[str, Any]: ...

    async def embed(self, texts: list[str], tenant: str = "") -> np.ndarray:
        """L2-normalised embeddings, one row per text, in order; `tenant` may be used to batch fairly."""
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
                async with asyncio.timeout(policy.timeout_s):  # in this task: wait_for would make one per attempt
                    result = await fn()
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
            except InputRejected:
                metrics.backend_requests.labels(kind, "rejected").inc()
                outcome = True  # the backend answered: it is healthy, the input is not
                raise
            except PermanentBackendError as exc:
                metrics.backend_requests.labels(kind, "error").inc()
                outcome = False  # a 401, a malformed reply: the backend failed, and the breaker counts it
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
