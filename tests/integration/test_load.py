"""Load: N concurrent clients for a fixed time on a warm cache; zero errors; p50/p99 and items/s reported."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from clients.datasets import grpo_batch

pytestmark = pytest.mark.integration
CLIENTS, SECONDS = 16, 8.0
REPORT: dict = {}


def test_load_on_a_warm_cache_has_zero_errors(service, slake):
    items = grpo_batch(slake, questions=16, samples=4, seed=40)
    assert httpx.post(f"{service.url}/reward", json={"items": items}, timeout=300).status_code == 200  # warm

    async def client(http: httpx.AsyncClient, stop: float, latencies: list[float], errors: list[int]) -> None:
        while time.monotonic() < stop:
            start = time.perf_counter()
            r = await http.post("/reward", json={"items": items})
            latencies.append(time.perf_counter() - start)
            if r.status_code != 200:
                errors.append(r.status_code)

    async def run() -> tuple[list[float], list[int], float]:
        latencies: list[float] = []
        errors: list[int] = []
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(base_url=service.url, timeout=60, limits=limits) as http:
            start = time.monotonic()
            await asyncio.gather(*(client(http, start + SECONDS, latencies, errors) for _ in range(CLIENTS)))
            return latencies, errors, time.monotonic() - start

    latencies, errors, elapsed = asyncio.run(run())
    REPORT.update(clients=CLIENTS, seconds=round(elapsed, 1), requests=len(latencies),
                  items_per_s=round(len(latencies) * len(items) / elapsed),
                  p50_ms=round(float(np.percentile(latencies, 50)) * 1000, 1),
                  p99_ms=round(float(np.percentile(latencies, 99)) * 1000, 1))
    assert errors == [] and len(latencies) > CLIENTS
