"""Wire types every route shares: a client's text (valid Unicode) and the one error shape."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel

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
