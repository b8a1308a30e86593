"""The one poll loop that waits for a started server: its reply once up, a named error when the process is gone or
the time is out."""

from __future__ import annotations

import time

import pytest
from fastapi import FastAPI

from service.bench.waiting import wait_until_up
from tests.integration.stack import free_port


def test_gives_the_first_200_reply(served):
    app = FastAPI()
    app.get("/ready")(lambda: {"ok": True})
    with served(app, ready_path="/ready") as url:
        assert wait_until_up(f"{url}/ready", what="x", timeout_s=5).json() == {"ok": True}


def test_a_gone_process_stops_the_wait_at_once():
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="the judge exited during start-up: exit code 1"):
        wait_until_up(f"http://127.0.0.1:{free_port()}/", what="the judge", timeout_s=30,
                      exited=lambda: "exit code 1")
    assert time.monotonic() - started < 5


def test_nothing_answering_is_an_error_after_the_timeout():
    with pytest.raises(RuntimeError, match=r"the judge did not answer http://127\.0\.0\.1:\d+/models in 1 s"):
        wait_until_up(f"http://127.0.0.1:{free_port()}/models", what="the judge", timeout_s=1, every_s=0.1)
