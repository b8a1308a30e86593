"""The `replicas` section of `medix-reward bench`: the cold batch over two judge replicas, calls spread to the
least busy replica and kept on one replica per shared prompt prefix (MEDIX_JUDGE_ROUTING), with each replica's
calls and share of prompt tokens served from its prefix cache, read from its own /metrics."""

from __future__ import annotations

import asyncio
import os
import statistics
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from service.settings import Settings

ROUTINGS = ("least_busy", "affinity")
REQUESTS = "vllm:request_success_total"
PROMPT_TOKENS = "vllm:prompt_tokens_total"


async def _counters(urls: list[str]) -> list[dict[str, float]]:
    from service.bench import load

    return [await load.vllm_counters(url) or {} for url in urls]


def _spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    queries, hits = (delta(n) for n in ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"))
    return {"calls": delta(REQUESTS), "prompt_tokens": delta(PROMPT_TOKENS),
            "hit_share": hits / queries if queries > 0 else None}


def run_replicas(settings: Settings, judge_url: str, items: list[dict[str, Any]], *, port: int, eager: bool,
                 dtype: str | None, block_size: int | None, repeats: int, key: str,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """A second judge server beside the bench's, then the cold batch through the service over both, per routing,
    alternated, each run from emptied reward and prefix caches."""
    from service.bench.main import (
        ServiceThread,
        _service_under_test,
        _stop_judge_server,
        start_judge_server,
        wait_judge,
    )

    second_url = f"http://127.0.0.1:{port}/v1"
    log(f"replicas: starting a second judge server on port {port} ...")
    proc = start_judge_server(port, eager, Path(os.environ.get("TMPDIR", "/tmp")) / "medix-bench-judge-2.log",
                              dtype, block_size)
    urls = [judge_url, second_url]
    try:
        wait_judge(second_url, proc)
        services = {routing: _service_under_test(settings.model_copy(
            update={"judge_urls": [second_url], "judge_routing": routing})) for routing in ROUTINGS}
        runs: dict[str, list[dict[str, Any]]] = {routing: [] for routing in ROUTINGS}
        log(f"replicas: the {len(items)}-item cold batch over 2 judge replicas, least busy and by prefix, "
            f"{repeats} each ...")
        with ExitStack() as stack:
            threads = {routing: stack.enter_context(ServiceThread(svc.app, port + 1 + i))
                       for i, (routing, svc) in enumerate(services.items())}
            for _ in range(repeats):
                for routing, svc in services.items():
                    runs[routing].append(asyncio.run(_one_run(svc, threads[routing].url, urls, items, key)))
    finally:
        _stop_judge_server(proc)
    return {routing: _summary(r, urls) for routing, r in runs.items()}


async def _one_run(svc: Any, url: str, urls: list[str], items: list[dict[str, Any]], key: str) -> dict[str, Any]:
    from service.bench import load

    await load.Fresh(urls, svc.app.state.scorer.cache.store.clear)()
    before = await _counters(urls)
    seconds = await load.one_batch(url, items, key)
    after = await _counters(urls)
    return {"seconds": seconds, "replicas": [_spent(b, a) for b, a in zip(before, after, strict=True)]}


def _summary(runs: list[dict[str, Any]], urls: list[str]) -> dict[str, Any]:
    """Medians over the runs: seconds, and per replica its calls, prompt tokens and prefix-cache hit share."""

    def median(values: list[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return statistics.median(known) if known else None

    replicas = []
    for i, url in enumerate(urls):
        per = [r["replicas"][i] for r in runs]
        replicas.append({"url": url, **{k: median([p[k] for p in per]) for k in ("calls", "prompt_tokens",
                                                                                  "hit_share")}})
    tokens = [sum(r["replicas"][i]["prompt_tokens"] for i in range(len(urls))) for r in runs]
    hit_tokens = [sum((p["hit_share"] or 0.0) * p["prompt_tokens"] for p in r["replicas"]) for r in runs]
    overall = [h / t if t else None for h, t in zip(hit_tokens, tokens, strict=True)]
    return {"seconds": [r["seconds"] for r in runs], "median_s": statistics.median(r["seconds"] for r in runs),
            "replicas": replicas, "hit_share": median(overall)}


def report_replicas(x: dict[str, Any], items: int, echo: Callable[[str], None], show: Callable[[Any], None]) -> None:
    from rich.table import Table

    from service.bench.main import _share

    table = Table(title=f"the cold {items}-item batch over 2 judge replicas (medians)")
    for col in ("routing", "s", "replica", "calls", "prompt tokens", "from prefix cache"):
        table.add_column(col, justify="right")
    for routing, r in x.items():
        for i, rep in enumerate(r["replicas"]):
            share = _share(rep["hit_share"])
            table.add_row(routing if i == 0 else "", f"{r['median_s']:.2f}" if i == 0 else "",
                          rep["url"].removesuffix("/v1").rsplit(":", 1)[-1], f"{rep['calls']:.0f}",
                          f"{rep['prompt_tokens']:.0f}", share)
    show(table)
    shares = {k: _share(v["hit_share"]) for k, v in x.items()}
    echo(f"replicas: prompt tokens served from the prefix caches, both replicas together: "
         f"{', '.join(f'{k} {v}' for k, v in shares.items())}")
