"""Where a request's time goes: each phase timed into medix_phase_duration_seconds, a span of the request's trace
(when it is traced: runtime/tracing.py), and one debug trace line.

The request id travels in a context variable that the HTTP guard sets, so the core can name the request in
its trace without knowing HTTP.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar

from opentelemetry.trace import Span

from service.runtime import tracing
from service.runtime.metrics import Metrics

T = TypeVar("T")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("medix_request_id", default=None)
log = logging.getLogger("medix.trace")
# Phases under which nothing is traced: their spans need not be the current one (runtime/tracing.py, `leaf`).
LEAVES = frozenset({"cache_lookup"})
# The service's own CPU work between its waits: timed, and on the request's span as `medix.<phase>_ms`, but no span
# each. A span costs the request about 0.1 ms of CPU (the SDK's, measured in `medix-reward bench --modes tracing`):
# these two would put a traced warm batch over its 2% (docs/operations.md, "What it costs").
CPU_PHASES = frozenset({"rules", "compose"})


def phase_span(name: str, traced: bool = True) -> AbstractContextManager[Span | None]:
    """The span of phase `name` in the request's trace (none when `traced` is false: a phase with nothing to do;
    none for a CPU phase)."""
    return tracing.span(name, leaf=name in LEAVES) if traced and name not in CPU_PHASES else nullcontext()


class PhaseTimer:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def record(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds
        self._metrics.phase_duration.labels(phase).observe(seconds)

    @contextmanager
    def phase(self, name: str, traced: bool = True) -> Iterator[Span | None]:
        """Time the block as phase `name`; gives its span (None when the request is not traced, or `traced` is
        false: a phase with nothing to do)."""
        start = time.perf_counter()
        try:
            with phase_span(name, traced) as span:
                yield span
        finally:
            self.record(name, time.perf_counter() - start)

    def trace(self, route: str, **counts: Any) -> None:
        if tracing.traced():  # the counts on the request's span, but those it has (tenant, items: set by the guard)
            # or its cache_lookup span has (its keys: pairs, texts)
            tracing.describe_request(**{f"medix.{k}": v for k, v in counts.items()
                                        if v and k not in ("tenant", "items", "pairs", "texts")},
                                     **{f"medix.{p}_ms": round(s * 1000, 3) for p, s in self.seconds.items()
                                        if p in CPU_PHASES})
        if log.isEnabledFor(logging.DEBUG):
            log.debug("trace %s %s total=%.1fms %s", route, request_id.get() or "-",
                      (time.perf_counter() - self._start) * 1000,
                      " ".join(f"{k}={v}" for k, v in {**counts, **{p: f"{s * 1000:.1f}ms"
                                                                      for p, s in self.seconds.items()}}.items()))
