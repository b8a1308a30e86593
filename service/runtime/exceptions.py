"""Errors the core raises. They say what went wrong and for which field; they know nothing of HTTP.

`service/api/errors.py` maps each kind to its status and writes the one error shape.
"""

from __future__ import annotations

import re

# A URL's scheme (bounded: real ones are short, and a long run of scheme characters then costs linear time),
# its user-info (up to the last `@` of the token) and its host. A host never holds `@`: a text cut right after
# `user:secret@` shows an empty host, not the secret.
_URL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]{0,31}://)(?:[^\s'\"]*@)?([^\s/?#@'\"]*)[^\s'\"]*")


def redact(text: str, limit: int | None = None) -> str:
    """URLs cut to scheme://host:port: no credentials, paths or query strings reach a caller or a log that
    callers read; then the text cut to `limit` characters (after, never before: a cut inside a URL can leave
    its credentials bare)."""
    return (_URL.sub(r"\1\2", text) if "://" in text else text)[:limit]


class ServiceError(Exception):
    """Base of the core's errors: a message for the caller and, where it applies, the field it concerns."""

    def __init__(self, message: str, *, param: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s


class InvalidRequest(ServiceError):
    """The request (or the named field of it) cannot be scored as sent."""


class Overloaded(ServiceError):
    """Over a limit that frees up with time (rate limit, admission); `retry_after_s` says when to come back."""


class ClientDisconnected(ServiceError):
    """The client went away and its work was cancelled; nobody reads the reply."""


class BackendUnavailable(ServiceError):
    """A judge or embedder could not answer after its retries, or its circuit is open: never turned into a score."""

    def __init__(self, backend: str, message: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(f"{backend}: {message}", param=backend, retry_after_s=retry_after_s)
        self.backend = backend


class InputRejected(ServiceError):
    """A backend answered but refused this one input (e.g. longer than the judge's context). Retrying will not
    help; the item fails alone, with this error, and its batch is still scored."""
