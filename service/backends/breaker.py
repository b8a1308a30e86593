"""A circuit breaker per backend: opens after repeated failures, refuses at once while open, then probes."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Literal

from service.runtime.exceptions import BackendUnavailable
from service.runtime.metrics import Metrics

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
        self._probe_done = asyncio.Event()
        self._metrics = metrics
        self._set("closed")

    def _set(self, state: State) -> None:
        self.state = state
        if self._metrics is not None:
            self._metrics.circuit_state.labels(self.kind).set(STATE_VALUE[state])

    def _refuse_if_open(self) -> None:
        left = self.open_s - (time.monotonic() - self._opened_at)
        if left > 0:
            raise BackendUnavailable(self.kind, "circuit open after repeated failures",
                                     retry_after_s=max(1, math.ceil(left)))
        self._set("half_open")

    async def before_call(self, wait_s: float) -> None:
        """Raise 503 at once while open. Half-open: one call probes; the others wait (up to `wait_s`) for its
        verdict, then go on if it closed the circuit and fail fast if it opened it again."""
        if self.state == "open":
            self._refuse_if_open()
        while self.state == "half_open" and self._probing:
            try:
                await asyncio.wait_for(asyncio.shield(self._probe_done.wait()), wait_s)
            except TimeoutError:
                raise BackendUnavailable(self.kind, "circuit half-open, the probe did not finish",
                                         retry_after_s=1) from None
            if self.state == "open":
                self._refuse_if_open()
        if self.state == "half_open":
            self._probing = True
            self._probe_done = asyncio.Event()

    def record(self, ok: bool | None) -> None:
        """True: the backend answered; False: it failed; None: no verdict (cancelled), only frees the probe."""
        if self._probing:
            self._probing = False
            self._probe_done.set()
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
