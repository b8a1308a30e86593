"""Spans of a request's phases for OpenTelemetry tracing, a no-op unless the request is traced.

The HTTP layer puts the request's tracer in `TRACER` (the SDK and its exporters are set up in api/tracing.py);
every layer below makes its spans through these helpers, with the OpenTelemetry API only, and knows nothing of
how spans are exported. With tracing off `TRACER` holds None and a helper costs one context-variable read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, Tracer

# The tracer of the request the current task serves; None: not traced.
TRACER: ContextVar[Tracer | None] = ContextVar("medix_tracer", default=None)


@contextmanager
def span(name: str, *, leaf: bool = False, **attributes: Any) -> Iterator[Span | None]:
    """A child span of the current one around the block (None when the request is not traced). A `leaf` is not made
    the current span, which costs less: nothing made inside the block may hang below it."""
    tracer = TRACER.get()
    if tracer is None:
        yield None
        return
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
    tracer = TRACER.get()
    if tracer is None:
        return
    end = time.time_ns()
    tracer.start_span(name, start_time=end - int(seconds * 1e9), attributes=attributes or None).end(end_time=end)


def traced() -> bool:
    """Whether the current request is traced."""
    return TRACER.get() is not None


def annotate(**attributes: Any) -> None:
    """Attributes on the current span, when the request is traced."""
    if TRACER.get() is not None:
        trace.get_current_span().set_attributes(attributes)
