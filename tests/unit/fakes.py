"""Fakes for pure-logic unit tests only; integration tests use the real backends."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from service.backends.base import Completion, TransientBackendError
from service.runtime.usage import embed_reply, judge_reply


def words(texts: list[str]) -> int:
    """The fakes' token count, as a server's `usage` would report it: words."""
    return sum(len(t.split()) for t in texts)


class FakeJudge:
    """Says YES when the answer's first word appears in the reference, ignoring case."""

    name = "fake"
    model_id = "fake-judge"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[dict[str, str]]] = []
        self.fail = fail

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def health(self) -> dict[str, Any]:
        if self.fail:
            raise TransientBackendError("down")
        return {}

    async def complete(self, messages, *, max_tokens, choice=None, json_schema=None, top_logprobs=None):
        self.calls.append(messages)
        if self.fail:
            raise TransientBackendError("connection refused")
        judge_reply(words([m["content"] for m in messages]), 1)
        if json_schema is not None:
            return Completion(self.grade(messages, json_schema))
        user = messages[-1]["content"]
        ref = user.split("Reference answer: ")[1].split("\n")[0].lower()
        ans = user.split("Candidate answer: ")[1].split("\n")[0].lower()
        yes = ans.split()[0] in ref
        return Completion("YES" if yes else "NO", {"Y": -0.1 if yes else -3.0, "NO": -3.0 if yes else -0.1})

    async def verdict(self, messages, *, choices, max_tokens, top_logprobs):
        # As a backend without a single-step plan does: the constrained call.
        return await self.complete(messages, max_tokens=max_tokens, choice=list(choices), top_logprobs=top_logprobs)

    def describe(self) -> dict[str, Any]:
        return {"verdict": "constrained", "verdict_reason": "fake"}

    def grade(self, messages, json_schema) -> str:
        """Evaluation judge: 1 (or 5) when the prediction contains the reference, ignoring case."""
        first = messages[1]["content"]
        ref = first.split("Reference answer:\n")[1].split("\n\nPrediction:")[0].lower()
        pred = first.split("Prediction:\n")[1].lower()
        top = max(json_schema["properties"]["score"]["enum"])
        if "garbage" in pred:
            return "not json"
        return json.dumps({"score": top if ref in pred else 0})


class FakeEmbedder:
    """Deterministic unit vectors from a hash of the lower-cased text: equal texts -> cosine 1."""

    name = "fake"
    model_id = "fake-embed"

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.fail = fail

    async def start(self) -> None: ...
    async def close(self) -> None: ...

    async def health(self) -> dict[str, Any]:
        return {}

    async def embed(self, texts: list[str], tenant: str = "") -> np.ndarray:
        self.calls.append(list(texts))
        if self.fail:
            raise TransientBackendError("embedder down")
        embed_reply(words(texts))
        rows = []
        for t in texts:
            seed = int(hashlib.sha256(t.lower().encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).standard_normal(8).astype(np.float32)
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows)
