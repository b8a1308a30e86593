"""Wire types every route shares: a client's text (valid Unicode), the one error shape, and a request's usage."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _valid_unicode(value: str) -> str:
    # JSON may carry lone surrogates ("\ud800"); they cannot be encoded, hashed or sent to a backend.
    m = _SURROGATE.search(value)
    if m:
        raise ValueError(f"contains a lone surrogate (U+{ord(m.group()):04X}) at character {m.start()}; "
                         "send valid Unicode")
    return value


# Every text a client sends: valid Unicode. Lengths are checked at admission against MEDIX_MAX_TEXT_CHARS.
Text = Annotated[str, AfterValidator(_valid_unicode)]


class ErrorDetail(BaseModel):
    type: str
    message: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class UsageInfo(BaseModel):
    """The judge and embedding work this request used (cached results cost none; a call shared with another of
    the key's requests in flight is counted for the request that made it)."""

    judge_prompt_tokens: int = Field(description="Prompt tokens of this request's judge calls, as the judge counts "
                                     "them.")
    judge_completion_tokens: int = Field(description="Tokens the judge generated for this request.")
    embed_tokens: int = Field(description="Input tokens of this request's embedding calls, where the embeddings "
                              "server reports them (0 otherwise, and in process).")
    judge_calls: int = Field(description="Judge calls made for this request, retries and re-asks included.")
