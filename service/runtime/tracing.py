"""Spans of a request's phases for OpenTelemetry tracing, a no-op unless the request is traced.

The HTTP layer puts the traced request in `TRACED` (the SDK and its exporters are set up in api/tracing.py);
every layer below makes its spans through these helpers, with the OpenTelemetry API only, and knows nothing of
how spans are exported. With tracing off `TRACED` holds None and a helper costs one context-variable read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer


@dataclass(slots=True)
class Traced:
    """A traced request: the tracer of the spans below its own, and what the layers below say of the request (its
    counts, its CPU phases' times), set on its span by the HTTP layer together with its own attributes, in one
    call when the span ends (each call costs the span a lock and a check of every value)."""

    tracer: Tracer
    attributes: dict[str, Any] = field(default_factory=dict)


# The request the current task serves, when it is traced; None: not traced.
TRACED: ContextVar[Traced | None] = ContextVar("medix_traced", default=None)


@contextmanager
def span(name: str, *, leaf: bool = False, **attributes: Any) -> Iterator[Span | None]:
    """A child span of the current one around the block (None when the request is not traced). A `leaf` is not made
    the current span, which costs less: nothing made inside the block may hang below it."""
    request = TRACED.get()
    if request is None:
        yield None
        return
    tracer = request.tracer
    if leaf:
        made = tracer.start_span(name, attributes=attributes or None)
        try:
            yield made
        except BaseException as exc:
            made.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            made.end()
        return
    # An error is recorded by its type alone: its message may hold a backend's URL or a reply's text.
    with tracer.start_as_current_span(name, attributes=attributes or None, record_exception=False,
                                      set_status_on_exception=False) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def span_since(name: str, seconds: float, **attributes: Any) -> None:
    """A child span that ends now and lasted `seconds`: a wait measured by someone else (a judge slot's)."""
    request = TRACED.get()
    if request is None:
        return
    end = time.time_ns()
    made = request.tracer.start_span(name, start_time=end - int(seconds * 1e9), attributes=attributes or None)
    made.end(end_time=end)


def traced() -> bool:
    """Whether the current request is traced."""
    return TRACED.get() is not None


def annotate(**attributes: Any) -> None:
    """Attributes on the current span, when the request is traced."""
    if TRACED.get() is not None:
        trace.get_current_span().set_attributes(attributes)


def describe_request(**attributes: Any) -> None:
    """Attributes on the request's own span, when the request is traced (set when it ends)."""
    request = TRACED.get()
    if request is not None:
        request.attributes.update(attributes)
