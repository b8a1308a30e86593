"""What the OpenAI-compatible servers answer, as typed models: only the fields we use, extra fields ignored.

A reply is read from its bytes through these models (`read`): whatever does not fit (`content: 5`, a logprob entry
that is a bare string, embeddings of `null` or base64 text, JSON nested past the parser's limit, a body that is not
JSON) is the backend's failure, a PermanentBackendError (503 with Retry-After, counted by the circuit breaker), never
an exception that escapes as a 500. Numbers are strict: a string where a number belongs is malformed, not coerced.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.backends.base import PermanentBackendError

M = TypeVar("M", bound=BaseModel)


class Reply(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# -- chat completions -----------------------------------------------------------------------------------------
class TopLogprob(Reply):
    token: str
    logprob: float | None = None  # NaN and Infinity parse (as in Python's JSON): base.finite_logprobs drops them


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] | None = None


class ChoiceLogprobs(Reply):
    content: list[TokenLogprob] | None = None


class Message(Reply):
    content: str | None = None


class Choice(Reply):
    message: Message
    logprobs: ChoiceLogprobs | None = None

    @property
    def first_step(self) -> TokenLogprob | None:
        """The first generated token with its alternatives, when logprobs came back."""
        content = self.logprobs.content if self.logprobs is not None else None
        return content[0] if content else None


def reported(usage: Any, name: str) -> Any:
    """`usage.<name>` as the server sent it, unchecked (runtime/usage.py reads it). `usage` is not validated with
    the reply: a malformed token count is left out of the accounting, it does not fail the verdict."""
    return usage.get(name) if isinstance(usage, dict) else None


class ChatCompletion(Reply):
    choices: list[Choice] = Field(min_length=1)
    usage: Any = None

    @property
    def tokens(self) -> tuple[Any, Any]:
        """(prompt tokens, completion tokens) as reported."""
        return reported(self.usage, "prompt_tokens"), reported(self.usage, "completion_tokens")


# -- the server's own routes ----------------------------------------------------------------------------------
class ModelCard(Reply):
    id: str


class ModelList(Reply):
    data: list[ModelCard] | None = None


class Tokens(Reply):
    tokens: list[int]


class TEIInfo(Reply):
    model_id: str | None = None


# -- embeddings -----------------------------------------------------------------------------------------------
class Embedding(Reply):
    index: int
    embedding: list[float]  # a float list: `encoding_format: base64` text or null is malformed


class Embeddings(Reply):
    data: list[Embedding]
    usage: Any = None  # vLLM reports `prompt_tokens`; TEI may not

    @property
    def tokens(self) -> Any:
        return reported(self.usage, "prompt_tokens")


def read(model: type[M], resp: httpx.Response, what: str) -> M:
    """The reply's body as `model`; PermanentBackendError when it is not that (not JSON, nested too deep, a field
    of another type)."""
    try:
        return model.model_validate_json(resp.content)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.error_count() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "the body"
        raise PermanentBackendError(f"malformed reply from {what} ({where}: {first.get('msg', exc)}): "
                                    f"{resp.text[:200]!r}") from exc


def embedding_matrix(data: list[Embedding], count: int, what: str) -> np.ndarray:
    """The `count` vectors in index order as float32 rows; PermanentBackendError unless the indexes are exactly
    0..count-1, every vector has the same non-zero length, and every number is finite (also as float32)."""
    if count == 0 and not data:
        return np.zeros((0, 0), np.float32)
    by_index = sorted(data, key=lambda d: d.index)
    if [d.index for d in by_index] != list(range(count)):
        raise PermanentBackendError(f"{what}: asked for {count} embeddings, got indexes "
                                    f"{[d.index for d in data][:20]}")
    dims = {len(d.embedding) for d in by_index}
    if count and (len(dims) != 1 or 0 in dims):
        raise PermanentBackendError(f"{what}: embeddings of unequal or zero length {sorted(dims)[:10]}")
    with np.errstate(over="ignore", invalid="ignore"):
        vecs = np.asarray([d.embedding for d in by_index], dtype=np.float32).reshape(count, -1)
    if not np.isfinite(vecs).all():
        raise PermanentBackendError(f"{what}: embeddings with non-finite numbers (NaN, Infinity or beyond float32)")
    return vecs
