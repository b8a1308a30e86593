"""Waiting for a server the bench (or a test) started to answer: one poll loop for every such start-up."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx


def wait_until_up(url: str, *, what: str, timeout_s: float, every_s: float = 0.2,
                  exited: Callable[[], str | None] = lambda: None) -> httpx.Response:
    """GET `url` until it answers 200 and give that reply. `exited` says why the server's process is gone (None
    while it runs): then, or after `timeout_s`, RuntimeError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        gone = exited()
        if gone is not None:
            raise RuntimeError(f"{what} exited during start-up: {gone}")
        try:
            reply = httpx.get(url, timeout=min(5.0, timeout_s))
            if reply.status_code == 200:
                return reply
        except httpx.HTTPError:
            pass
        time.sleep(every_s)
    raise RuntimeError(f"{what} did not answer {url} in {timeout_s:.0f} s")
