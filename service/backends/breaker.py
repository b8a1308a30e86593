"""A circuit breaker per backend: opens after repeated failures, refuses at once while open, then probes."""

from __future__ import annotations

import math
import time
from typing import Literal

from service.errors import BackendUnavailable
from service.metrics import Metrics

State = Literal["closed", "open", "half_open"]
STATE_VALUE = {"closed": 0, "open": 1, "half_open": 2}


class CircuitBreaker:
    def __init__(self, kind: str, *, failures: int, open_s: float, metrics: Metrics | None = None) -> None:
        self.kind = kind
        self.failures, self.open_s = failures, open_s
        self.state: State = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._probing = False
        self._metrics = metrics
        self._set("closed")

    def _set(self, state: State) -> None:
        self.state = state
        if self._metrics is not None:
            self._metrics.circuit_state.labels(self.kind).set(STATE_VALUE[state])

    def before_call(self) -> None:
        """Raise 503 at once while open (or while another call probes a half-open circuit)."""
        if self.state == "open":
            left = self.open_s - (time.monotonic() - self._opened_at)
            if left > 0:
                raise BackendUnavailable(self.kind, "circuit open after repeated failures",
                                         retry_after=max(1, math.ceil(left)))
            self._set("half_open")
        if self.state == "half_open":
            if self._probing:
                raise BackendUnavailable(self.kind, "circuit half-open, a probe is in flight", retry_after=1)
            self._probing = True

    def record(self, ok: bool | None) -> None:
        """True: the backend answered; False: it failed; None: no verdict (cancelled), only frees the probe."""
        self._probing = False
        if ok is None:
            return
        if ok:
            self._consecutive = 0
            if self.state != "closed":
                self._set("closed")
            return
        self._consecutive += 1
        if self.state == "half_open" or self._consecutive >= self.failures:
            self._opened_at = time.monotonic()
            self._set("open")
