"""The judge and embedding work one request used, in tokens, counted for its tenant.

The HTTP layer opens a `Usage` for each scoring request (its tenant and route) in `CURRENT`; the backends report
each reply's token counts through `judge_reply` and `embed_reply`, knowing nothing of requests. Counts go to the
Prometheus counters as they arrive, so work finished for a request that went away is still counted. A
computation shared by concurrent requests runs in the context of the request that started it: the tokens are
that request's, once. A cached result costs no tokens.
"""

from __future__ import annotations

import numbers
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from service.runtime.metrics import Metrics

# Larger than any context a judge has: a count above it is a malformed reply, not usage.
MAX_TOKENS = 2**31


@dataclass(slots=True)
class Usage:
    tenant: str
    route: str
    metrics: Metrics | None = field(default=None, repr=False)
    judge_prompt_tokens: int = 0
    judge_completion_tokens: int = 0
    embed_tokens: int = 0
    judge_calls: int = 0

    def add_judge(self, prompt: int | None, completion: int | None) -> None:
        self.judge_calls += 1
        self.judge_prompt_tokens += prompt or 0
        self.judge_completion_tokens += completion or 0
        if self.metrics is not None:
            for kind, n in (("prompt", prompt), ("completion", completion)):
                if n:
                    self.metrics.judge_tokens.labels(self.tenant, self.route, kind).inc(n)

    def add_embed(self, tokens: int | None) -> None:
        if not tokens:
            return
        self.embed_tokens += tokens
        if self.metrics is not None:
            self.metrics.embed_tokens.labels(self.tenant, self.route).inc(tokens)

    def counts(self) -> dict[str, int]:
        return {"judge_prompt_tokens": self.judge_prompt_tokens,
                "judge_completion_tokens": self.judge_completion_tokens,
                "embed_tokens": self.embed_tokens, "judge_calls": self.judge_calls}

    def header(self) -> str:
        """The counts as one header value: `judge_prompt_tokens=1520, judge_completion_tokens=4, ...`."""
        return ", ".join(f"{k}={v}" for k, v in self.counts().items())


CURRENT: ContextVar[Usage | None] = ContextVar("medix_usage", default=None)


def token_count(value: Any) -> int | None:
    """A token count as a server reported it, or None when it is not one (absent, negative, fractional, a
    boolean, a string, beyond any context): such a count is left out, the reply itself stands."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
        return int(value)
    return None


def judge_reply(prompt: Any, completion: Any) -> None:
    """One judge call answered, with the token counts its reply gave (each read by `token_count`)."""
    usage = CURRENT.get()
    if usage is not None:
        usage.add_judge(token_count(prompt), token_count(completion))


def embed_reply(tokens: Any) -> None:
    usage = CURRENT.get()
    if usage is not None:
        usage.add_embed(token_count(tokens))
