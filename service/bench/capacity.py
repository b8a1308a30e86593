"""`medix-reward bench --modes capacity`: how many items a second one service core sustains when the judge engine
is fast, and so how many service cores keep one judge GPU busy.

The judge and the embedder are the simulator of service/bench/simserver.py (a test double answering with a GPU
engine's latency: continuous batching at a set prompt-token rate), in a process of its own on the other cores; the
service runs in this process, pinned to one core, on its real `openai` judge and embed backends. Each run sends one
cold batch of distinct answers (every item judged, no pair or answer twice, so nothing is cached or shared; the
reward cache cleared before it) as one /reward request, and reads:

- items/s: the batch over the request's wall time;
- engine busy share: the simulated judge engine's busy seconds over the same wall time;
- service CPU per item: this process's CPU time during the request less this (client) thread's, over the items;
- service cores per engine: the service's CPU seconds over the engine's busy seconds for the same batch, i.e. the
  engine's items/s at full load over what one core sustains.

Rates are interleaved over the repeats, so that other load on the machine spreads over all of them.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from clients.datasets import modality_tag, read_jsonl, row_ground_truth
from service.backends.http import auth_headers
from service.bench.simserver import DEFAULT_DIM, EMBED_MODEL, JUDGE_MODEL, SimProcess
from service.reward.profiles import PROFILES
from service.reward.scorer import prepare
from service.reward.wire import RewardItem
from service.settings import Settings

if TYPE_CHECKING:
    from rich.table import Table

DEFAULT_ITEMS = 1432
DEFAULT_RATES = (15_000.0, 60_000.0, 240_000.0)
EMBED_TOKENS_PER_S = 1_000_000.0  # an embedding model a tenth of the judge's size, on its own share of a GPU
SAMPLES = 8  # answers per question, as a GRPO group
KEY = "bench-capacity"
PROFILE = PROFILES["medix-r1"]
THINKING = "The image and the question point to this answer."
# How a sampled answer words the reference or another answer.
FORMS = ("{a}", "It is {a}", "{a}, most likely", "Findings indicate {low}", "the {low}", "Probably {low}",
         "{a} is seen", "Consistent with {low}", "{a} on this image", "Likely {low}", "{a} ({where})",
         "{a} in the {where_low}", "Looking at the {where_low}: {low}", "{a}, judging by the {where_low}")


@dataclass
class CapacityOptions:
    items: int = DEFAULT_ITEMS
    rates: tuple[float, ...] = DEFAULT_RATES
    embed_tokens_per_s: float = EMBED_TOKENS_PER_S
    repeats: int = 3
    profile: Path | None = None  # write a profile of the service's thread at the highest rate here
    dim: int = DEFAULT_DIM


def parse_rates(text: str) -> tuple[float, ...]:
    """`15000,60k,240000` -> (15000.0, 60000.0, 240000.0)."""
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if part:
            out.append(float(part[:-1]) * 1000 if part.endswith("k") else float(part))
    if not out or any(r <= 0 for r in out):
        raise ValueError(f"not a list of positive token rates: {text!r}")
    return tuple(out)


# -- the batch ------------------------------------------------------------------------------------------------------
def distinct_batch(rows: list[dict[str, Any]], n: int, samples: int = SAMPLES, seed: int = 0) -> list[dict[str, Any]]:
    """`n` /reward items, `samples` a question, each one the judge must see: no exact or malformed answer, no
    (answer, reference) pair and no answer text twice in the batch (answers are the reference or other questions'
    answers in one of FORMS; references repeat within a question's group and across questions)."""
    rng = random.Random(seed)
    order = rows[:]
    rng.shuffle(order)
    answers = sorted({str(r["answer"]) for r in rows})
    seen_pairs: set[tuple[str, str]] = set()
    seen_answers: set[str] = set()
    items: list[dict[str, Any]] = []
    for q, row in enumerate(order):
        ref, tag = str(row["answer"]), modality_tag(row)
        others = rng.sample(answers, min(len(answers), 4 * samples))
        where = str(row.get("location") or "image")
        candidates = [form.format(a=a, low=a.lower(), where=where, where_low=where.lower())
                      for a in [ref, *others] for form in FORMS]
        rng.shuffle(candidates)
        got = 0
        for ans in candidates:
            if got == samples or len(items) == n:
                break
            item = {"id": f"{row.get('id', q)}-{got}", "question": row.get("question"),
                    "response": f"<{tag}><thinking>{THINKING}</thinking>\n<answer>{ans}</answer>" if tag
                    else f"<thinking>{THINKING}</thinking>\n<answer>{ans}</answer>",
                    "ground_truth": row_ground_truth(row)}
            p = prepare(len(items), RewardItem.model_validate(item), PROFILE)
            if p.decided_by != "backends" or (p.answer, p.reference) in seen_pairs or p.answer in seen_answers:
                continue
            seen_pairs.add((p.answer, p.reference))
            seen_answers.add(p.answer)
            items.append(item)
            got += 1
        if len(items) == n:
            return items
    raise ValueError(f"the data gives only {len(items)} distinct judged items, not {n}")


# -- cores ----------------------------------------------------------------------------------------------------------
def split_cores() -> tuple[set[int] | None, set[int] | None]:
    """(the service's one core, the simulator's cores): the highest core for the service, the others for the
    simulator; (None, None) with fewer than two cores (nothing pinned)."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return {available[-1]}, set(available[:-1])


@contextmanager
def pinned(cores: set[int] | None) -> Iterator[None]:
    """This thread (and the threads it starts meanwhile) on `cores`; the former affinity back afterwards."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


# -- the service under test -----------------------------------------------------------------------------------------
def capacity_settings(sim: SimProcess, items: int) -> Settings:
    """The service on its `openai` backends against the simulator: one tenant's key, the batch in one request."""
    return Settings(judge_backend="openai", judge_url=sim.judge_url, judge_model=JUDGE_MODEL,
                    embed_backend="openai", embed_url=sim.embed_url, embed_model=EMBED_MODEL, engine_cpus="",
                    pin_service=False, max_items_per_request=max(4096, items), judge_timeout_s=600,
                    api_keys=[KEY], cache_ttl_s=600)  # with MEDIX_REDIS_URL: the runs' entries go in 10 minutes


class LoopRecorder:
    """The app, and the event loop it runs on (so that a profiler can be started in the service's thread)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` in the service's thread and return its result."""
        assert self.loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)


def clear_cache(app: Any) -> None:
    """Empty the reward cache: the in-process store is cleared; a Redis store gets a fresh namespace instead (other
    users of that Redis keep their keys)."""
    cache = app.state.scorer.cache
    if hasattr(cache.store, "clear"):
        cache.store.clear()
    else:
        cache._ns = f"medix-bench-capacity:{uuid.uuid4().hex}"


# -- runs -----------------------------------------------------------------------------------------------------------
@dataclass
class Run:
    rate: float
    seconds: float
    service_cpu_s: float
    client_cpu_s: float
    judge: dict[str, Any]
    embed: dict[str, Any]
    unscored: int
    sim_cpu_s: float | None = None


def one_run(client: httpx.Client, sim: SimProcess, app: Any, items: list[dict[str, Any]], rate: float,
            embed_rate: float) -> Run:
    """One cold batch at `rate`: the cache cleared and the simulator's counters reset first."""
    clear_cache(app)
    sim.reset(rate, embed_rate)
    sim_cpu0 = sim.cpu_seconds()
    cpu0, mine0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
    resp = client.post("/reward", json={"items": items})
    seconds = time.perf_counter() - t0
    cpu1, mine1 = time.process_time(), time.thread_time()
    stats = sim.stats()
    sim_cpu1 = sim.cpu_seconds()
    resp.raise_for_status()
    results = resp.json()["results"]
    client_cpu = time.thread_time() - mine0  # sending the batch and reading the reply, in this thread
    unscored = sum(r.get("overall") is None or r["details"].get("judge_verdict") is None for r in results)
    return Run(rate=rate, seconds=seconds, service_cpu_s=(cpu1 - cpu0) - (mine1 - mine0), client_cpu_s=client_cpu,
               judge=stats["judge"], embed=stats["embed"], unscored=unscored,
               sim_cpu_s=None if sim_cpu0 is None or sim_cpu1 is None else sim_cpu1 - sim_cpu0)


def rate_row(n: int, runs: list[Run]) -> dict[str, Any]:
    """Medians and ranges over a rate's runs."""

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    busy = [r.judge["busy_s"] for r in runs]
    return {
        "rate": runs[0].rate, "runs": len(runs),
        "tokens_per_verdict": runs[0].judge["prompt_tokens"] / max(1, runs[0].judge["requests"]),
        "engine_items_per_s": spread([n / b for b in busy]),
        "items_per_s": spread([n / r.seconds for r in runs]),
        "busy_share": spread([r.judge["busy_s"] / r.seconds for r in runs]),
        "embed_busy_share": spread([r.embed["busy_s"] / r.seconds for r in runs]),
        "cpu_ms_per_item": spread([1000 * r.service_cpu_s / n for r in runs]),
        "items_per_core_s": spread([n / r.service_cpu_s for r in runs]),
        "cores_per_engine": spread([r.service_cpu_s / r.judge["busy_s"] for r in runs]),
        "service_cpu_share": spread([r.service_cpu_s / r.seconds for r in runs]),
        "sim_cpu_share": spread([r.sim_cpu_s / r.seconds for r in runs if r.sim_cpu_s is not None] or [float("nan")]),
        "judge_calls": runs[0].judge["requests"], "embed_calls": runs[0].embed["requests"],
        "unscored": max(r.unscored for r in runs),
    }


def run_section(data: Path, options: CapacityOptions | None, *, port: int, seed: int,
                log: Callable[[str], None]) -> dict[str, Any]:
    """The section as `medix-reward bench --modes capacity` runs it, on the questions of `data`."""
    return run(rows=list(read_jsonl(data)), options=options or CapacityOptions(), port=port, seed=seed, log=log)


Variant = Callable[[LoopRecorder], AbstractContextManager[Any]]


def as_is(app: LoopRecorder) -> AbstractContextManager[Any]:
    return nullcontext()


def run(*, rows: list[dict[str, Any]], options: CapacityOptions, port: int, seed: int, log: Callable[[str], None],
        variants: Mapping[str, Variant] | None = None) -> dict[str, Any]:
    """The capacity section: the simulator started, the service in this process pinned to one core, `repeats` cold
    batches per rate (rates interleaved), and optionally a profile of the service at the highest rate.

    `variants` (name -> a context manager given the running app, e.g. one that swaps a backend's HTTP client) run
    each rate's batch once per variant, alternated, so that a change is measured before and after in one run;
    by default the service as it is."""
    from service.app import build_app
    from service.bench.main import ServiceThread
    from service.engine import cpu

    variants = variants or {"service": as_is}
    items = distinct_batch(rows, options.items, seed=seed)
    warm = distinct_batch(rows, min(256, options.items), seed=seed + 1)
    service_cores, sim_cores = split_cores()
    log(f"capacity: {len(items)} distinct judged items, simulated judge at "
        f"{', '.join(f'{r:,.0f}' for r in options.rates)} tokens/s (embedder {options.embed_tokens_per_s:,.0f}), "
        f"service on core {sorted(service_cores or [])}, simulator on {sorted(sim_cores or [])}, "
        f"{options.repeats} runs per rate ...")
    out: dict[str, Any] = {"items": len(items), "cpu": cpu.cpu_summary(), "service_cores": sorted(service_cores or []),
                           "sim_cores": sorted(sim_cores or []), "options": {**asdict(options),
                                                                             "profile": str(options.profile or "")}}
    with SimProcess(port + 200, judge_tokens_per_s=options.rates[0], embed_tokens_per_s=options.embed_tokens_per_s,
                    dim=options.dim, cpus=sim_cores) as sim, pinned(service_cores):
        app = LoopRecorder(build_app(capacity_settings(sim, len(items))))
        with ServiceThread(app, port) as svc, httpx.Client(base_url=svc.url, timeout=600,
                                                             headers=auth_headers(KEY)) as client:
            inner = app.app
            out["verdict"] = inner.state.scorer.judge.describe().get("verdict")
            out["cache"] = inner.state.scorer.cache.store.name
            runs: dict[tuple[str, float], list[Run]] = {(v, r): [] for r in options.rates for v in variants}
            for variant in variants.values():
                with variant(app):  # connections opened, code paths and the verdict plan warmed, outside the clocks
                    one_run(client, sim, inner, warm, options.rates[-1], options.embed_tokens_per_s)
            for _ in range(options.repeats):
                for rate in options.rates:
                    for name, variant in variants.items():
                        with variant(app):
                            runs[name, rate].append(one_run(client, sim, inner, items, rate,
                                                            options.embed_tokens_per_s))
            out["rows"] = [{"variant": v, **rate_row(len(items), rs)} for (v, _), rs in runs.items()]
            out["runs"] = [{"variant": v, **asdict(r)} for (v, _), rs in runs.items() for r in rs]
            if options.profile is not None:
                log(f"capacity: profiling the service at {options.rates[-1]:,.0f} tokens/s ...")
                out["profile"] = profile_runs(app, client, sim, items, options, options.profile)
    return out


def profile_runs(app: LoopRecorder, client: httpx.Client, sim: SimProcess, items: list[dict[str, Any]],
                 options: CapacityOptions, path: Path) -> dict[str, Any]:
    """`repeats` more runs at the highest rate with a profiler in the service's thread (pyinstrument when installed,
    else cProfile); its text goes to `path`."""
    try:
        from pyinstrument import Profiler

        profiler: Any = Profiler(interval=0.0005, async_mode="disabled")
        kind = "pyinstrument"
    except ImportError:
        import cProfile

        profiler, kind = cProfile.Profile(), "cProfile"
    app.call(profiler.start if kind == "pyinstrument" else profiler.enable)
    try:
        runs = [one_run(client, sim, app.app, items, options.rates[-1], options.embed_tokens_per_s)
                for _ in range(options.repeats)]
    finally:
        app.call(profiler.stop if kind == "pyinstrument" else profiler.disable)
    if kind == "pyinstrument":
        text = profiler.output_text(unicode=False, color=False, show_all=False)
    else:
        import io
        import pstats

        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("tottime").print_stats(60)
        text = buf.getvalue()
    path.write_text(text)
    return {"profiler": kind, "path": str(path), "runs": len(runs),
            "cpu_ms_per_item_profiled": statistics.median(1000 * r.service_cpu_s / len(items) for r in runs)}


# -- the report -----------------------------------------------------------------------------------------------------
def report(c: dict[str, Any], echo: Callable[[str], None], show: Callable[[Any], None]) -> None:
    show(capacity_table(c))
    rows = c["rows"]
    echo(f"CPU: {c['cpu']}; service on core {c['service_cores']}, simulator on {c['sim_cores']}; verdict "
         f"{c['verdict']}, cache {c['cache']}; a verdict is {rows[0]['tokens_per_verdict']:.0f} prompt tokens "
         "(characters / 4); medians of "
         f"{rows[0]['runs']} runs, ranges in brackets")
    sim = max((r["sim_cpu_share"]["max"] for r in rows), default=float("nan"))
    echo(f"the simulator used at most {sim:.2f} of a core"
         + (": near its limit, so items/s and engine busy are lower bounds" if sim > 0.8 else ""))
    if any(r["unscored"] for r in rows):
        echo(f"warning: {max(r['unscored'] for r in rows)} items came back without a verdict")
    if "profile" in c:
        p = c["profile"]
        echo(f"profile ({p['profiler']}, {p['runs']} runs, {p['cpu_ms_per_item_profiled']:.2f} ms/item under it): "
             f"{p['path']}")


def capacity_table(c: dict[str, Any]) -> Table:
    from rich.table import Table

    def fmt(x: dict[str, float], spec: str) -> str:
        return f"{x['median']:{spec}} [{x['min']:{spec}}-{x['max']:{spec}}]"

    table = Table(title=f"capacity: one service core, a cold batch of {c['items']} distinct items, simulated judge "
                  "(engine items/s: at full load; CPU: the service's)")
    several = len({r["variant"] for r in c["rows"]}) > 1
    for col in (("variant",) if several else ()) + (
            "judge tokens/s", "engine items/s", "items/s", "engine busy", "CPU ms/item", "items/s a core",
            "cores/engine"):
        table.add_column(col, justify="right")
    for r in c["rows"]:
        table.add_row(*([r["variant"]] if several else []), f"{r['rate']:,.0f}",
                      f"{r['engine_items_per_s']['median']:,.0f}", fmt(r["items_per_s"], ",.0f"),
                      fmt(r["busy_share"], ".2f"), fmt(r["cpu_ms_per_item"], ".2f"),
                      fmt(r["items_per_core_s"], ",.0f"), fmt(r["cores_per_engine"], ".2f"))
    return table
