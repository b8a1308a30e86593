"""The load sections of `medix-reward bench`: the service against the engine's own limit (same calls fired
straight at the engine), per-sample traffic (one request per item) against one batch, and two tenants sharing
the judge. Each figure is a ratio of two runs in the same process, against the same judge server.

Every run starts from an empty reward cache and, where the judge server allows it (vLLM's development routes,
which the bench's own judge server enables), from an empty engine prefix cache, so that no run is served from
another's work.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from clients.client import AsyncMedixClient
from service.backends.base import TransientBackendError
from service.backends.http import auth_headers
from service.reward.prompt import CHOICES
from service.reward.wire import RewardRequest
from service.runtime.metrics import PHASES, Metrics

PER_SAMPLE_TARGET = 1.5  # 512 one-item requests against one 512-item request
LIMIT_TARGET = 0.95  # the service's cold batch against the same judge calls fired straight at the engine
FAIRNESS_TARGET = 3.0  # a small tenant's batch beside a large tenant's burst, against the same batch alone


async def reset_prefix_cache(judge_url: str) -> bool:
    """Empty the judge engine's prefix cache (vLLM with VLLM_SERVER_DEV_MODE=1); False where it is not offered."""
    root = judge_url.rstrip("/").removesuffix("/v1")
    try:
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(40):  # vLLM refuses while blocks are held (requests finishing): try again shortly
                resp = await client.post(f"{root}/reset_prefix_cache")
                if resp.status_code != 200:
                    return False
                if resp.json().get("success", True):
                    return True
                await asyncio.sleep(0.25)
    except (httpx.HTTPError, ValueError):
        pass
    return False


PREFIX_COUNTERS = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")


async def vllm_counters(judge_url: str) -> dict[str, float] | None:
    """The vLLM server's counters (each summed over its labels and engines) from its /metrics; None where the
    server does not answer there."""
    from prometheus_client.parser import text_string_to_metric_families

    root = judge_url.rstrip("/").removesuffix("/v1")
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            resp = await client.get(f"{root}/metrics")
        resp.raise_for_status()
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(resp.text):
            for sample in family.samples:
                if sample.name.startswith("vllm:") and sample.name.endswith("_total"):
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    except (httpx.HTTPError, ValueError):
        return None
    return totals


async def prefix_cache_tokens(judge_url: str) -> tuple[float, float] | None:
    """(prompt tokens looked up, tokens found) in the judge engine's prefix cache so far; None where the server
    does not report them."""
    totals = await vllm_counters(judge_url)
    if totals is None or not all(name in totals for name in PREFIX_COUNTERS):
        return None
    return totals[PREFIX_COUNTERS[0]], totals[PREFIX_COUNTERS[1]]


@dataclass
class HitShare:
    """The share of prompt tokens the engine served from its prefix cache between `start` and `stop`."""

    judge_url: str
    before: tuple[float, float] | None = None

    async def start(self) -> None:
        self.before = await prefix_cache_tokens(self.judge_url)

    async def stop(self) -> float | None:
        """The share since `start`; None where the server does not report it or nothing was looked up."""
        after = await prefix_cache_tokens(self.judge_url)
        if self.before is None or after is None or after[0] <= self.before[0]:
            return None
        return (after[1] - self.before[1]) / (after[0] - self.before[0])


def unshared(calls: list[list[dict[str, str]]]) -> list[list[dict[str, str]]]:
    """The same calls with each system message opened by its own tag: no call finds another's prefix in the
    engine's cache, so every prompt token is computed (the engine's time per verdict without reuse)."""
    return [[{**m, "content": f"[call {i}] {m['content']}"} if m["role"] == "system" else m for m in call]
            for i, call in enumerate(calls)]


@dataclass
class Fresh:
    """Before each run: the service's reward cache cleared and the prefix cache of each judge server (one URL, or
    every replica's) emptied, or kept."""

    judge_urls: str | Sequence[str]
    clear_cache: Callable[[], None]
    prefix_reset: bool | None = None  # learned on first use

    async def __call__(self, empty_prefix: bool = True) -> None:
        self.clear_cache()
        if empty_prefix:
            for url in [self.judge_urls] if isinstance(self.judge_urls, str) else self.judge_urls:
                ok = await reset_prefix_cache(url)
                self.prefix_reset = ok if self.prefix_reset is None else self.prefix_reset and ok


def phase_seconds(metrics: Metrics) -> dict[str, float]:
    """Cumulative seconds per request phase (medix_phase_duration_seconds' sums) as the app's registry has them."""
    get = metrics.registry.get_sample_value
    return {p: get("medix_phase_duration_seconds_sum", {"phase": p}) or 0.0 for p in PHASES}


def judged_calls(scorer: Any, items: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    """The messages of the distinct judge calls the service makes for this batch, built as the service builds them."""
    request = RewardRequest.model_validate({"items": items})
    plan = scorer._plan(request, scorer.profile(None))
    return [scorer.prompt.messages(p.answer, p.reference, p.question, scorer._max_chars) for p in plan.pairs.values()]


async def engine_alone(judge: Any, calls: list[list[dict[str, str]]], *, concurrency: int, max_tokens: int,
                       top_logprobs: int, pilot: bool = False) -> float:
    """Seconds for `calls` fired straight at the engine through the service's own judge backend, `concurrency`
    in flight: the service's limit for this batch. With `pilot`, the first call goes alone and the rest follow
    once it is done (the engine then computes the shared prompt prefix once), as the service does."""
    slots = asyncio.Semaphore(concurrency)

    async def one(messages: list[dict[str, str]]) -> None:
        async with slots:
            for attempt in range(3):  # a dropped connection is retried, as the service's judge policy does
                try:
                    await judge.verdict(messages, choices=CHOICES, max_tokens=max_tokens,
                                        top_logprobs=top_logprobs)
                    return
                except TransientBackendError:
                    if attempt == 2:
                        raise

    start = time.perf_counter()
    if pilot and calls:
        await one(calls[0])
        calls = calls[1:]
    await asyncio.gather(*(one(m) for m in calls))
    return time.perf_counter() - start


async def one_batch(url: str, items: list[dict[str, Any]], key: str | None = None) -> float:
    """Seconds for one /reward request of the whole batch."""
    headers = auth_headers(key)
    async with httpx.AsyncClient(base_url=url, timeout=1200, headers=headers) as client:
        start = time.perf_counter()
        resp = await client.post("/reward", json={"items": items})
        elapsed = time.perf_counter() - start
    resp.raise_for_status()
    if any(r["overall"] is None for r in resp.json()["results"]):
        raise RuntimeError("the service left items of the bench batch unscored")
    return elapsed


@dataclass
class PerSample:
    seconds: float
    replies_429: int
    unscored: int


async def per_sample(url: str, items: list[dict[str, Any]], key: str | None = None) -> PerSample:
    """Every item in its own /reward request, all at once, through the client as a trainer uses it (verl's reward
    loop and OpenRLHF send one request per sample). The client runs in its own process, as a trainer's does: in
    the bench's process its 512 requests' work would contend with the service for the interpreter."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"url": url, "key": key, "items": items}, f)
    try:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "service.bench.load", f.name,
                                                    stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"the per-sample client exited with {proc.returncode}")
    return PerSample(**json.loads(out))


async def _per_sample_client(url: str, key: str | None, items: list[dict[str, Any]]) -> dict[str, Any]:
    statuses: list[int] = []

    async def seen(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    async with AsyncMedixClient(url, key, timeout=1200, retries=20, on_response=seen) as client:
        start = time.perf_counter()
        scores = await asyncio.gather(*(client.reward([item]) for item in items))
        elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "replies_429": sum(s == 429 for s in statuses),
            "unscored": sum(s[0].overall is None for s in scores)}


@dataclass
class Fairness:
    alone_s: float
    beside_s: float
    burst_items: int
    burst_s: float
    ratio: float = field(init=False)

    def __post_init__(self) -> None:
        self.ratio = self.beside_s / self.alone_s


async def fairness(url: str, small: list[dict[str, Any]], bursts: list[list[dict[str, Any]]], *, key_a: str,
                   key_b: str, fresh: Fresh, head_start_s: float = 3.0) -> Fairness:
    """Tenant B's batch alone, then the same batch (caches emptied) while tenant A has `bursts` in flight."""
    await fresh()
    alone = await one_batch(url, small, key_b)
    await fresh()
    start = time.perf_counter()
    burst = [asyncio.create_task(one_batch(url, b, key_a)) for b in bursts]
    await asyncio.sleep(head_start_s)  # A's calls fill the judge first
    beside = await one_batch(url, small, key_b)
    await asyncio.gather(*burst)
    return Fairness(alone, beside, sum(len(b) for b in bursts), time.perf_counter() - start)


if __name__ == "__main__":  # the per-sample client's own process
    job = json.loads(Path(sys.argv[1]).read_text())
    print(json.dumps(asyncio.run(_per_sample_client(job["url"], job["key"], job["items"]))))
