"""`medix-reward bench`: the published one-item-at-a-time reward against the service, in one process and one run.

Both sides use the same judge server, judge prompt and embedding model on the same GRPO-shaped batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from clients.datasets import DEFAULT_MIX, grpo_batch, read_jsonl
from service.backends.base import Completion
from service.backends.http import auth_headers
from service.bench.waiting import wait_until_up
from service.engine import cpu
from service.reward import rules
from service.reward.profiles import PROFILES
from service.reward.prompt import CHOICES, DEFAULT_PROMPT, VerdictPrompt, p_yes, read_verdict
from service.reward.scorer import prepare
from service.reward.wire import RewardRequest
from service.runtime.metrics import Metrics
from service.settings import Settings

if TYPE_CHECKING:
    from rich.table import Table

PROFILE = PROFILES["medix-r1"]
COLD_TARGET = 6.0  # the service, cold cache, against the published one-item-at-a-time reward


@dataclass
class BusyClock:
    """Wall time during which at least one backend call was in flight."""

    active: int = 0
    since: float = 0.0
    busy: float = 0.0

    async def timed(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        if self.active == 0:
            self.since = time.perf_counter()
        self.active += 1
        try:
            return await fn()
        finally:
            self.active -= 1
            if self.active == 0:
                self.busy += time.perf_counter() - self.since


@dataclass
class Timed:
    """A judge or embedder whose calls run on a BusyClock; everything else is the wrapped backend's."""

    inner: Any
    clock: BusyClock

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    async def complete(self, messages: list[dict[str, str]], **kw: Any) -> Completion:
        return await self.clock.timed(lambda: self.inner.complete(messages, **kw))

    async def verdict(self, messages: list[dict[str, str]], **kw: Any) -> Completion:
        return await self.clock.timed(lambda: self.inner.verdict(messages, **kw))

    async def embed(self, texts: list[str], **kw: Any) -> np.ndarray:
        return await self.clock.timed(lambda: self.inner.embed(texts, **kw))


@dataclass
class Outcome:
    seconds: list[float] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    overhead_s: list[float] = field(default_factory=list)


# -- the baseline: the published semantics, one item at a time -------------------------------------------
async def baseline(items: list[dict[str, Any]], judge_url: str, model: str, encoder: Any) -> Outcome:
    """One chat completion and one two-text encode per item that needs the backends; no cache, no batching."""
    parsed = RewardRequest.model_validate({"items": items}).items
    out = Outcome()
    async with httpx.AsyncClient(base_url=judge_url, timeout=60) as client:
        start = time.perf_counter()
        for i, item in enumerate(parsed):
            p = prepare(i, item, PROFILE)
            verdict = sim = None
            if p.decided_by == "backends":
                body = {"model": model, "temperature": 0, "max_tokens": 4, "logprobs": True, "top_logprobs": 10,
                        "messages": DEFAULT_PROMPT.messages(p.answer, p.reference, p.question, 4000),
                        "structured_outputs": {"choice": CHOICES}, "chat_template_kwargs": {"enable_thinking": False}}
                resp = (await client.post("/chat/completions", json=body)).json()["choices"][0]
                verdict = read_verdict(resp["message"]["content"]) or "NO"
                top = {t["token"]: t["logprob"] for t in resp["logprobs"]["content"][0]["top_logprobs"]}
                vecs = encoder.encode([p.answer, p.reference], normalize_embeddings=True, show_progress_bar=False)
                sim = float(np.dot(vecs[0], vecs[1]))
                acc_llm, acc_embed = float(verdict == "YES"), float(sim >= PROFILE.embed_threshold)
                p_y = p_yes(top, verdict)
            else:
                acc_llm = acc_embed = 1.0 if p.decided_by == "exact" else 0.0
                p_y = None
            overall = rules.compose(format_=p.format, accuracy_llm=acc_llm, accuracy_embed=acc_embed,
                                    modality=p.modality, weights=PROFILE.weights,
                                    content_weight=PROFILE.content_weight, format_weight=PROFILE.format_weight)
            out.results.append({"format": p.format, "modality": p.modality, "accuracy_llm": acc_llm,
                                "accuracy_embed": acc_embed, "overall": overall, "decided_by": p.decided_by,
                                "verdict": verdict, "p_yes": p_y, "similarity": sim})
        out.seconds.append(time.perf_counter() - start)
    return out


# -- the service, in this process on a real port -----------------------------------------------------------
class ServiceThread:
    def __init__(self, app: Any, port: int, ready_path: str = "/readyz", timeout_s: float = 300) -> None:
        import uvicorn

        self.ready_path, self.timeout_s = ready_path, timeout_s
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> ServiceThread:
        self.thread.start()
        try:
            wait_until_up(f"{self.url}{self.ready_path}", what="the service", timeout_s=self.timeout_s,
                          exited=lambda: None if self.thread.is_alive() else "its thread ended")
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


async def service_run(url: str, items: list[dict[str, Any]], repeats: int, clock: BusyClock,
                      clear_cache: Callable[[], Awaitable[None]] | None, key: str | None = None) -> Outcome:
    out = Outcome()
    headers = auth_headers(key)
    async with httpx.AsyncClient(base_url=url, timeout=600, headers=headers) as client:
        for _ in range(repeats):
            if clear_cache:
                await clear_cache()
            busy0 = clock.busy
            start = time.perf_counter()
            resp = await client.post("/reward", json={"items": items})
            elapsed = time.perf_counter() - start
            resp.raise_for_status()
            out.seconds.append(elapsed)
            out.overhead_s.append(elapsed - (clock.busy - busy0))
            out.results = resp.json()["results"]
    return out


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def compare(base: list[dict[str, Any]], svc: list[dict[str, Any]]) -> dict[str, Any]:
    det_mismatch = 0
    judged = agree = 0
    sim_diff = 0.0
    for b, s in zip(base, svc, strict=True):
        same = b["format"] == s["format"] and b["modality"] == s["modality"]
        if b["decided_by"] != "backends":
            same = same and b["accuracy_llm"] == s["accuracy_llm"] and b["accuracy_embed"] == s["accuracy_embed"]
            same = same and b["decided_by"] == s["details"]["decided_by"]
        else:
            judged += 1
            agree += b["verdict"] == s["details"]["judge_verdict"]
            sim_diff = max(sim_diff, abs(b["similarity"] - s["details"]["similarity"]))
        det_mismatch += not same
    return {"deterministic_mismatches": det_mismatch, "judged_items": judged,
            "verdict_agreement": agree / judged if judged else 1.0, "max_similarity_diff": sim_diff}


# -- the engine check: how fast the judge engine gives verdicts, one at a time and 16 at once --------------------
# Prompts of three lengths for the price of a prompt token; the short one is two lines.
SHORT_PROMPT = VerdictPrompt(version="bench-short", system="Reply YES or NO.",
                             user="Reference: {reference}\nCandidate: {answer}\nSame answer? YES or NO.")
LONG_PROMPT = VerdictPrompt(version="bench-long", system="\n\n".join([DEFAULT_PROMPT.system] * 3),
                            user=DEFAULT_PROMPT.user)
PATHS = {"constrained": "constrained (max_tokens 4)", "single-step": "single step (max_tokens 1)"}


def judged_pairs(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The distinct (answer, reference) pairs of the batch that need the judge, in order."""
    parsed = RewardRequest.model_validate({"items": items}).items
    prepared = (prepare(i, item, PROFILE) for i, item in enumerate(parsed))
    return list(dict.fromkeys((p.answer, p.reference) for p in prepared if p.decided_by == "backends"))


async def prompt_tokens(judge_url: str, model: str, prompt: VerdictPrompt, pair: tuple[str, str]) -> int | None:
    root = judge_url.rstrip("/").removesuffix("/v1")
    body = {"model": model, "messages": prompt.messages(pair[0], pair[1], None, 4000), "add_generation_prompt": True}
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            return int((await client.post(f"{root}/tokenize", json=body)).json()["count"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


async def engine_check(judge: Any, pairs: list[tuple[str, str]], *, judge_url: str, model: str,
                       top_logprobs: int, concurrency: int = 16, sequential: int = 8,
                       cost_pairs: int = 32, prompt_cost: bool = True) -> dict[str, Any]:
    """Verdicts per second one at a time and `concurrency` at once, on the constrained call and on the judge's
    verdict path (single step where it took); then the single step on prompts of three lengths, with every prompt
    token computed, and with the shared system prompt left to the engine's prefix cache as the service does.

    Every run's system prompt starts with its own tag, so that no run finds another's prompts in the engine's
    prefix cache; within a run the shared system prompt is cached after a first call (in whole blocks: 128 tokens
    on vLLM's CPU backend), as in the service, unless each call has its own tag (`shared=False`)."""
    tags = itertools.count()

    async def call(path: str, prompt: VerdictPrompt, pair: tuple[str, str]) -> Completion:
        messages = prompt.messages(pair[0], pair[1], None, 4000)
        if path == "constrained":
            return await judge.complete(messages, max_tokens=4, choice=CHOICES, top_logprobs=top_logprobs)
        return await judge.verdict(messages, choices=CHOICES, max_tokens=4, top_logprobs=top_logprobs)

    async def run(path: str, prompt: VerdictPrompt, todo: list[tuple[str, str]], at_once: int,
                  shared: bool = True) -> float:
        tag = next(tags)

        def tagged(i: int) -> VerdictPrompt:
            label = f"[bench run {tag}]" if shared else f"[bench run {tag}.{i}]"
            return VerdictPrompt(version=prompt.version, system=f"{label} {prompt.system}", user=prompt.user)

        await call(path, tagged(-1), ("warm-up", "warm-up"))
        slots = asyncio.Semaphore(at_once)

        async def one(i: int, pair: tuple[str, str]) -> None:
            async with slots:
                await call(path, tagged(i), pair)

        start = time.perf_counter()
        await asyncio.gather(*(one(i, pair) for i, pair in enumerate(todo)))
        return time.perf_counter() - start

    out: dict[str, Any] = {"pairs": len(pairs), "concurrency": concurrency, "judge": judge.describe()}
    for path in PATHS:
        one_s = await run(path, DEFAULT_PROMPT, pairs[:sequential], 1)
        many_s = await run(path, DEFAULT_PROMPT, pairs, concurrency)
        one_rate, many_rate = min(sequential, len(pairs)) / one_s, len(pairs) / many_s
        out[path] = {"one_at_a_time_per_s": one_rate, "at_once_per_s": many_rate,
                     "ms_per_verdict": 1000 / many_rate, "batching_gain": many_rate / one_rate}
    costs: list[dict[str, Any]] = []
    few = pairs[:cost_pairs]
    lengths = (("two-line", SHORT_PROMPT), ("default", DEFAULT_PROMPT), ("long", LONG_PROMPT)) if prompt_cost else ()
    for name, prompt in lengths:
        every = await run("single-step", prompt, few, concurrency, shared=False)
        cached = await run("single-step", prompt, few, concurrency, shared=True)
        costs.append({"prompt": name, "tokens": await prompt_tokens(judge_url, model, prompt, few[0]),
                      "ms_per_verdict": 1000 * every / len(few), "ms_per_verdict_cached": 1000 * cached / len(few)})
    known = [(c["tokens"], c["ms_per_verdict"]) for c in costs if c["tokens"] is not None]
    if len(known) >= 2:
        slope, _ = np.polyfit([t for t, _ in known], [m for _, m in known], 1)
        out["ms_per_100_prompt_tokens"] = float(slope) * 100
    out["prompt_cost"] = costs
    out["cost_pairs"] = len(few)
    return out


def start_judge_server(port: int, eager: bool, log: Path, dtype: str | None = None,
                       block_size: int | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "service.cli", "judge-server", "--port", str(port)] + (["--eager"] if eager else [])
    argv += ["--dtype", dtype] if dtype else []
    argv += ["--block-size", str(block_size)] if block_size else []
    # vLLM's development routes give /reset_prefix_cache: each load run starts from an empty engine cache.
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
    return subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, env=env)


def wait_judge(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 600) -> str:
    """The model id of the judge server at `url`, once it answers."""
    def exited() -> str | None:
        return None if proc is None or proc.poll() is None else f"exit code {proc.returncode}"

    reply = wait_until_up(f"{url}/models", what="the judge server", timeout_s=timeout, every_s=1, exited=exited)
    return str(reply.json()["data"][0]["id"])


MODES = ("engine", "baseline", "limit", "per-sample", "fairness", "tracing", "replicas", "capacity")
BENCH_KEYS = {"key1": "bench-tenant-a", "key2": "bench-tenant-b"}  # tenants key1 (A) and key2 (B)


def run_bench(*, data: Path, questions: int, samples: int, seed: int, judge_url: str | None, eager: bool,
              warm_repeats: int, cold_repeats: int, port: int, log: Callable[[str], None],
              dtype: str | None = None, engine_pairs: int = 64, prompt_cost: bool = True,
              modes: tuple[str, ...] = MODES, block_size: int | None = None,
              capacity_options: Any = None) -> dict[str, Any]:
    # Against a simulated judge and embedder (service/bench/capacity.py): alone, nothing else is started.
    capacity_out = None
    if "capacity" in modes:
        from service.bench.capacity import run_section

        capacity_out = run_section(data, capacity_options, port=port, seed=seed, log=log)
        if set(modes) == {"capacity"}:
            return {"modes": list(modes), "cpu": cpu.cpu_summary(), "capacity": capacity_out}
    from sentence_transformers import SentenceTransformer

    from service.backends.embed_st import bundled_model_path

    rows = list(read_jsonl(data))
    items = grpo_batch(rows, questions, samples, seed=seed)
    kinds = {k: sum(i["kind"] == k for i in items) for k in DEFAULT_MIX}
    engine: dict[str, Any] | None = None
    out: dict[str, Any] = {"items": len(items), "mix": kinds, "modes": list(modes)}
    if capacity_out is not None:
        out["capacity"] = capacity_out
    judge_url, judge_proc, engine_dtype, engine_blocks = _judge_server(judge_url, port + 100, eager=eager,
                                                                       dtype=dtype, log=log, block_size=block_size)
    try:
        model = wait_judge(judge_url, judge_proc)
        cpu.pin_service(cpu.engine_cores("auto"))
        service = _service_under_test(_bench_settings(judge_url, model, len(items)))
        encoder = SentenceTransformer(bundled_model_path())
        log(f"batch: {questions} questions x {samples} samples = {len(items)} items; mix {kinds}")
        # Warm the judge server's compiled paths and the encoders once, outside the clocks.
        asyncio.run(baseline(items[:8], judge_url, model, encoder))
        if "engine" in modes and engine_pairs:
            engine = _run_engine_check(service.settings, items, engine_pairs, judge_url=judge_url, model=model,
                                       prompt_cost=prompt_cost, log=log)
        base = _run_baseline(items, judge_url, model, encoder, log) if "baseline" in modes else None
        with ServiceThread(service.app, port) as thread:
            out.update(_service_sections(service, thread.url, judge_url, rows=rows, items=items, base=base,
                                         modes=modes, questions=questions, samples=samples, seed=seed,
                                         cold_repeats=cold_repeats, warm_repeats=warm_repeats, log=log))
        if "replicas" in modes:
            from service.bench.replicas import run_replicas

            out["replicas"] = run_replicas(service.settings, judge_url, items, port=port + 101, eager=eager,
                                           dtype=engine_dtype if judge_proc is not None else dtype,
                                           block_size=block_size, repeats=cold_repeats, key=BENCH_KEYS["key1"],
                                           log=log)
        if "tracing" in modes:
            out["tracing"] = _run_tracing(service.settings, judge_url, items, port=port + 10,
                                          cold_repeats=cold_repeats, warm_repeats=warm_repeats, log=log)
    finally:
        _stop_judge_server(judge_proc)
    out.update({
        "judge_model": model,
        "judge_mode": ("eager" if eager else "compiled") if judge_proc is not None else "server at --judge-url",
        "dtype": engine_dtype, "cpu": cpu.cpu_summary(), "verdict": service.judge.describe(), "engine": engine,
        "block_size": engine_blocks,
    })
    return out


def _judge_server(judge_url: str | None, port: int, *, eager: bool, dtype: str | None,
                  log: Callable[[str], None],
                  block_size: int | None = None) -> tuple[str, subprocess.Popen[bytes] | None, str, int | str]:
    """The judge server at `judge_url`, else one started here on `port`: its URL, the process started (None for
    a given server) and what the run reports as its dtype and KV block."""
    if judge_url is not None:
        given = "set by the judge server at --judge-url"
        return judge_url, None, given, given
    settings = Settings()
    engine_dtype, why = cpu.engine_dtype(dtype or settings.judge_dtype)
    blocks = cpu.engine_block_size(block_size or settings.vllm_block_size, cpu.has_gpu())
    log(f"starting the judge server ({'eager' if eager else 'compiled'}, {engine_dtype}: {why}; KV block "
        f"{blocks or 'default'}) on core 0 ...")
    proc = start_judge_server(port, eager, Path(os.environ.get("TMPDIR", "/tmp")) / "medix-bench-judge.log",
                              engine_dtype, blocks)
    return f"http://127.0.0.1:{port}/v1", proc, engine_dtype, blocks or "default"


def _stop_judge_server(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        proc.terminate()
        proc.wait(30)


def _bench_settings(judge_url: str, model: str, items: int) -> Settings:
    """The service's settings for the bench: the judge server's model, no core pinning of its own, the whole
    batch in one request, and the two bench tenants' keys."""
    # A long judge timeout: on an engine that does not batch (bf16 emulated on a CPU), verdicts queue for minutes.
    return Settings(judge_backend="openai", judge_url=judge_url, judge_model=model, engine_cpus="",
                    pin_service=False, max_items_per_request=max(4096, items), judge_timeout_s=600,
                    api_keys=list(BENCH_KEYS.values()))


@dataclass
class ServiceUnderTest:
    """The service's app, built in this process, with its judge and embedder calls timed on `clock`."""

    app: Any
    settings: Settings
    judge: Timed
    metrics: Metrics
    clock: BusyClock


def _service_under_test(settings: Settings, tracer_provider: TracerProvider | None = None) -> ServiceUnderTest:
    from service.app import build_app, make_embedder, make_judge

    clock = BusyClock()
    judge = Timed(make_judge(settings, tracer_provider), clock)
    metrics = Metrics()
    embedder = Timed(make_embedder(settings, metrics, tracer_provider), clock)
    app = build_app(settings, judge=judge, embedder=embedder, metrics=metrics, tracer_provider=tracer_provider)
    return ServiceUnderTest(app=app, settings=settings, judge=judge, metrics=metrics, clock=clock)


def _run_engine_check(settings: Settings, items: list[dict[str, Any]], pairs: int, *, judge_url: str, model: str,
                      prompt_cost: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """The engine check on the batch's first `pairs` judged pairs, through a judge backend of its own."""
    from service.app import make_judge

    log(f"engine check: {pairs} verdicts, one at a time and 16 at once, per path and prompt length ...")

    async def check() -> dict[str, Any]:
        checked = make_judge(settings)
        await checked.start()
        try:
            return await engine_check(checked, judged_pairs(items)[:pairs], judge_url=judge_url, model=model,
                                      top_logprobs=settings.verdict_top_logprobs,
                                      prompt_cost=prompt_cost)
        finally:
            await checked.close()

    return asyncio.run(check())


def _run_baseline(items: list[dict[str, Any]], judge_url: str, model: str, encoder: Any,
                  log: Callable[[str], None]) -> Outcome:
    from service.bench import load

    log("baseline: one item at a time ...")
    asyncio.run(load.reset_prefix_cache(judge_url))  # from an empty engine cache, as the cold runs
    return asyncio.run(baseline(items, judge_url, model, encoder))


def _service_sections(service: ServiceUnderTest, url: str, judge_url: str, *, rows: list[dict[str, Any]],
                      items: list[dict[str, Any]], base: Outcome | None, modes: tuple[str, ...], questions: int,
                      samples: int, seed: int, cold_repeats: int, warm_repeats: int,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """The sections run against the service at `url` (its judge server at `judge_url`), each from emptied
    caches."""
    from service.app import make_judge
    from service.bench import load

    key_a = BENCH_KEYS["key1"]
    fresh = load.Fresh(judge_url, service.app.state.scorer.cache.store.clear)
    out: dict[str, Any] = {}
    if base is not None:
        cold, held, warm = _cold_held_warm(url, items, service.clock, fresh, key_a, cold_repeats=cold_repeats,
                                           warm_repeats=warm_repeats, log=log)
        out.update(baseline_section(items, base, cold, warm, held))
    if "limit" in modes:
        log(f"limit: the batch's judge calls straight at the engine vs the service, {cold_repeats} each ...")
        out["limit"] = asyncio.run(limit_section(service.app, service.settings, items, fresh, url, key_a,
                                                 cold_repeats, service.metrics, make_judge))
    if "per-sample" in modes:
        log(f"per-sample: {len(items)} one-item requests at once vs one {len(items)}-item request ...")
        out["per_sample"] = asyncio.run(per_sample_section(url, items, fresh, key_a))
    if "fairness" in modes:
        out["fairness"] = _run_fairness(url, rows, items, questions=questions, samples=samples, seed=seed,
                                        fresh=fresh, log=log)
    out["prefix_cache_reset"] = fresh.prefix_reset
    return out


def _cold_held_warm(url: str, items: list[dict[str, Any]], clock: BusyClock, fresh: Any, key: str, *,
                    cold_repeats: int, warm_repeats: int,
                    log: Callable[[str], None]) -> tuple[Outcome, Outcome, Outcome]:
    """The service's runs of the batch: cold, cold with the engine holding the prompts, and warm."""
    log("service: cold cache ...")
    # Cold: the reward cache cleared and the engine's prefix cache emptied, as for a new batch's
    # prompts; then the same with the engine still holding this batch's prompts (a repeated batch).
    cold = asyncio.run(service_run(url, items, cold_repeats, clock, fresh, key))

    async def clear_only() -> None:
        await fresh(empty_prefix=False)

    log("service: reward cache cleared, engine holding the prompts ...")
    held = asyncio.run(service_run(url, items, cold_repeats, clock, clear_only, key))
    log("service: warm cache ...")
    warm = asyncio.run(service_run(url, items, warm_repeats, clock, None, key))
    return cold, held, warm


def _run_fairness(url: str, rows: list[dict[str, Any]], items: list[dict[str, Any]], *, questions: int,
                  samples: int, seed: int, fresh: Any, log: Callable[[str], None]) -> dict[str, Any]:
    """Tenant B's small batch alone, then beside tenant A's four batches the size of the bench's."""
    from service.bench import load

    small = grpo_batch(rows, max(1, 64 // samples), samples, seed=seed + 1000)
    bursts = [grpo_batch(rows, questions, samples, seed=seed + 2000 + i) for i in range(4)]
    log(f"fairness: tenant B's {len(small)}-item batch alone, then beside tenant A's 4 x "
        f"{len(items)}-item batches ...")
    fair = asyncio.run(load.fairness(url, small, bursts, key_a=BENCH_KEYS["key1"], key_b=BENCH_KEYS["key2"],
                                     fresh=fresh))
    return {**fair.__dict__, "small_items": len(small), "target": load.FAIRNESS_TARGET}


def baseline_section(items: list[dict[str, Any]], base: Outcome, cold: Outcome, warm: Outcome,
                     held: Outcome) -> dict[str, Any]:
    n = len(items)
    base_ips = n / base.seconds[0]

    def row(run: Outcome) -> dict[str, float]:
        ips = n / statistics.median(run.seconds)
        return {"items_per_s": ips, "ratio": ips / base_ips, "p50_s": _pct(run.seconds, 50),
                "p99_s": _pct(run.seconds, 99), "overhead_s_p50": _pct(run.overhead_s, 50)}

    return {"baseline": {"items_per_s": base_ips, "seconds": base.seconds[0]},
            "cold": row(cold), "held": row(held), "warm": row(warm),
            "agreement": compare(base.results, cold.results)}


async def limit_section(app: Any, settings: Settings, items: list[dict[str, Any]], fresh: Any, url: str, key: str,
                        repeats: int, metrics: Metrics, make_judge: Callable[[Settings], Any]) -> dict[str, Any]:
    """Engine alone and the service, alternated, each from empty caches; the service's phases over its runs."""
    from service.bench import load

    calls = load.judged_calls(app.state.scorer, items)
    direct = make_judge(settings)
    await direct.start()
    # "no reuse": the same calls, each with its own system prompt, so that every prompt token is computed.
    ways = {"all at once": (calls, False), "one call first": (calls, True), "no reuse": (load.unshared(calls), False)}
    engine_s: dict[str, list[float]] = {way: [] for way in ways}
    hits: dict[str, list[float]] = {way: [] for way in [*ways, "service"]}
    service_s: list[float] = []
    phases = {p: 0.0 for p in load.phase_seconds(metrics)}
    share = load.HitShare(settings.judge_url or "")
    try:
        for _ in range(repeats):
            for way, (sent, pilot) in ways.items():
                await fresh()
                await share.start()
                engine_s[way].append(await load.engine_alone(direct, sent, concurrency=settings.judge_concurrency,
                                                             max_tokens=settings.verdict_max_tokens,
                                                             top_logprobs=settings.verdict_top_logprobs,
                                                             pilot=pilot))
                _keep(hits[way], await share.stop())
            await fresh()
            before = load.phase_seconds(metrics)
            await share.start()
            service_s.append(await load.one_batch(url, items, key))
            _keep(hits["service"], await share.stop())
            phases = {p: phases[p] + v - before[p] for p, v in load.phase_seconds(metrics).items()}
    finally:
        await direct.close()
    engine_med = {way: statistics.median(runs) for way, runs in engine_s.items()}
    # The engine's own limit: the faster way of sending it the calls as the service sends them.
    limit = min(engine_med["all at once"], engine_med["one call first"])
    service_med = statistics.median(service_s)
    return {"judge_calls": len(calls), "concurrency": settings.judge_concurrency, "engine_s": engine_s,
            "service_s": service_s, "engine_median_s": engine_med, "engine_limit_s": limit,
            "engine_ms_per_verdict": {way: 1000 * sec / max(1, len(calls)) for way, sec in engine_med.items()},
            "prefix_hit_share": {way: statistics.median(v) if v else None for way, v in hits.items()},
            "service_median_s": service_med, "ratio": limit / service_med, "target": load.LIMIT_TARGET,
            "phases_s_per_request": {p: v / repeats for p, v in phases.items()}}


def _keep(values: list[float], value: float | None) -> None:
    if value is not None:
        values.append(value)


async def per_sample_section(url: str, items: list[dict[str, Any]], fresh: Any, key: str) -> dict[str, Any]:
    """One batch request and one request per item, with the engine's prefix cache emptied and then warm."""
    from service.bench import load

    out: dict[str, Any] = {"target": load.PER_SAMPLE_TARGET}
    for prefix in ("emptied", "warm"):
        await fresh(empty_prefix=prefix == "emptied")
        batch = await load.one_batch(url, items, key)
        await fresh(empty_prefix=prefix == "emptied")
        each = await load.per_sample(url, items, key)
        out[prefix] = {"batch_s": batch, "per_sample_s": each.seconds, "ratio": each.seconds / batch,
                       "replies_429": each.replies_429, "unscored": each.unscored}
    return out


def report(r: dict[str, Any], echo: Callable[[str], None], show: Callable[[Any], None]) -> bool:
    """Print the bench's tables and ratios; False when the service's deterministic components disagreed with the
    baseline's (the one outcome that fails the bench)."""
    if "verdict" in r:  # a judge server ran (not for the capacity section alone)
        _report_setup(r, echo)
    if r.get("engine"):
        _report_engine(r["engine"], echo, show)
    ok = _report_baseline(r, echo, show) if "baseline" in r else True
    if "limit" in r:
        _report_limit(r["limit"], r["items"], echo, show)
    if "per_sample" in r:
        _report_per_sample(r["per_sample"], r["items"], echo)
    if "fairness" in r:
        _report_fairness(r["fairness"], echo)
    if "replicas" in r:
        from service.bench.replicas import report_replicas

        report_replicas(r["replicas"], r["items"], echo, show)
    if "tracing" in r:
        _report_tracing(r["tracing"], r["items"], echo, show)
    if "capacity" in r:
        from service.bench.capacity import report as report_capacity

        report_capacity(r["capacity"], echo, show)
    return ok


def _report_setup(r: dict[str, Any], echo: Callable[[str], None]) -> None:
    """The judge, its dtype and verdict path, the CPU, and whether runs could start from an empty prefix cache."""
    verdict = r["verdict"]
    echo(f"judge {r['judge_model']} ({r['judge_mode']}), dtype {r['dtype']}, KV block {r.get('block_size')}; verdict: "
         f"{verdict.get('verdict')} ({verdict.get('verdict_reason', '')})\nCPU: {r['cpu']}")
    if r.get("prefix_cache_reset") is False:
        echo("note: the judge server does not offer /reset_prefix_cache; runs may reuse each other's prefixes")


def _report_engine(e: dict[str, Any], echo: Callable[[str], None], show: Callable[[Any], None]) -> None:
    show(_engine_table(e))
    if e["prompt_cost"]:
        show(_prompt_cost_table(e))
    if "ms_per_100_prompt_tokens" in e:
        echo(f"a judge prompt costs {e['ms_per_100_prompt_tokens']:.0f} ms of engine time per verdict "
             "per 100 tokens computed")


def _engine_table(e: dict[str, Any]) -> Table:
    """Verdicts per second one at a time and all at once, per verdict path."""
    from rich.table import Table

    engine = Table(title=f"engine check: {e['pairs']} distinct verdicts, default prompt")
    for col in ("path", "verdicts/s, 1 at a time", f"verdicts/s, {e['concurrency']} at once", "batching gain",
                "engine ms/verdict"):
        engine.add_column(col, justify="right")
    for path, label in PATHS.items():
        x = e[path]
        engine.add_row(label, f"{x['one_at_a_time_per_s']:.2f}", f"{x['at_once_per_s']:.2f}",
                       f"{x['batching_gain']:.1f}x", f"{x['ms_per_verdict']:.0f}")
    return engine


def _prompt_cost_table(e: dict[str, Any]) -> Table:
    """Engine time per verdict for prompts of three lengths, every token computed and system prompt cached."""
    from rich.table import Table

    cost = Table(title=f"prompt length (single step, {e['cost_pairs']} verdicts, {e['concurrency']} at once)")
    for col in ("prompt", "prompt tokens", "ms/verdict, every token computed",
                "ms/verdict, system prompt cached"):
        cost.add_column(col, justify="right")
    for c in e["prompt_cost"]:
        cost.add_row(c["prompt"], str(c["tokens"] or "?"), f"{c['ms_per_verdict']:.0f}",
                     f"{c['ms_per_verdict_cached']:.0f}")
    return cost


def _report_baseline(r: dict[str, Any], echo: Callable[[str], None], show: Callable[[Any], None]) -> bool:
    """The baseline against the service, cold and warm, and the agreement of their scores; False when a
    deterministic component disagreed."""
    show(_baseline_table(r))
    echo(f"cold: {r['cold']['ratio']:.1f}x the sequential baseline (target {COLD_TARGET:g}x); "
         f"{r['held']['ratio']:.1f}x with the engine still holding the batch's prompts")
    a = r["agreement"]
    echo(f"deterministic component mismatches: {a['deterministic_mismatches']} of {r['items']}; "
         f"judge verdict agreement {a['verdict_agreement']:.1%} on {a['judged_items']} judged items; "
         f"max similarity difference {a['max_similarity_diff']:.2e}")
    return not a["deterministic_mismatches"]


def _baseline_table(r: dict[str, Any]) -> Table:
    from rich.table import Table

    table = Table(title=f"{r['items']} items, judge {r['judge_model']} ({r['judge_mode']}, {r['dtype']}), "
                  f"mix {r['mix']}")
    for col in ("run", "items/s", "x baseline", "p50 s", "p99 s", "overhead p50 ms"):
        table.add_column(col, justify="right")
    table.add_row("baseline (1 item at a time)", f"{r['baseline']['items_per_s']:.1f}", "1.0",
                  f"{r['baseline']['seconds']:.2f}", "", "")
    rows = {"cold": "service, cold (caches emptied)", "held": "service, cold, engine holding the prompts",
            "warm": "service, warm cache"}
    for name, label in rows.items():
        x = r[name]
        table.add_row(label, f"{x['items_per_s']:.1f}", f"{x['ratio']:.1f}",
                      f"{x['p50_s']:.3f}", f"{x['p99_s']:.3f}", f"{x['overhead_s_p50'] * 1000:.1f}")
    return table


def _report_limit(x: dict[str, Any], items: int, echo: Callable[[str], None], show: Callable[[Any], None]) -> None:
    """The service's phases, a judge call's wait and time at the engine, and the service against the engine's
    own limit."""
    show(_phases_table(x, items))
    per_call = {k: x["phases_s_per_request"][k] / max(1, x["judge_calls"]) for k in ("judge_queue", "judge_call")}
    echo(f"per judge call: {per_call['judge_queue']:.3f} s waiting for a slot, {per_call['judge_call']:.3f} s "
         "at the engine (mean)")
    show(_reuse_table(x))
    limit = {way: sec for way, sec in x["engine_median_s"].items() if way != "no reuse"}
    ways = ", ".join(f"{way} {sec:.2f} s" for way, sec in limit.items())
    echo(f"engine limit: the batch's {x['judge_calls']} judge calls straight at the engine ({x['concurrency']} in "
         f"flight): {ways}; the service's cold batch {x['service_median_s']:.2f} s (medians of "
         f"{len(x['service_s'])}, prefix-cache hit share {_share(x['prefix_hit_share'].get('service'))}): "
         f"{x['ratio']:.2f} of the engine's limit (target >= {x['target']:g})")


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _reuse_table(x: dict[str, Any]) -> Table:
    """Engine time per verdict of the cold batch's calls with the verdict prompt's shared part reused or not, and
    the share of prompt tokens the engine served from its prefix cache (vLLM's prefix_cache_hits/queries)."""
    from rich.table import Table

    table = Table(title=f"the cold batch's {x['judge_calls']} judge calls at the engine, prefix cache emptied "
                  "before each run")
    for col in ("sent", "s (median)", "engine ms/verdict", "prompt tokens from cache"):
        table.add_column(col, justify="right")
    for way, sec in x["engine_median_s"].items():
        table.add_row(way, f"{sec:.2f}", f"{x['engine_ms_per_verdict'][way]:.1f}",
                      _share(x["prefix_hit_share"].get(way)))
    base = x["engine_median_s"].get("no reuse")
    if base:
        table.caption = f"reuse gain: {base / x['engine_limit_s']:.2f}x less engine time than with no reuse"
    return table


def _phases_table(x: dict[str, Any], items: int) -> Table:
    from rich.table import Table

    phases = Table(title=f"service phases, seconds per cold {items}-item request (phases overlap: judge "
                   "and embed run together; judge_queue and judge_call are summed over calls)")
    for col in ("phase", "s per request"):
        phases.add_column(col, justify="right")
    for name, seconds in x["phases_s_per_request"].items():
        phases.add_row(name, f"{seconds:.3f}")
    return phases


def _report_per_sample(x: dict[str, Any], items: int, echo: Callable[[str], None]) -> None:
    for prefix in ("emptied", "warm"):
        y = x[prefix]
        echo(f"per-sample, engine prefix cache {prefix}: {items} one-item requests at once "
             f"{y['per_sample_s']:.2f} s vs one {items}-item request {y['batch_s']:.2f} s: "
             f"{y['ratio']:.2f}x (target <= {x['target']:g}x); {y['replies_429']} replies 429, "
             f"{y['unscored']} items unscored")


def _report_fairness(x: dict[str, Any], echo: Callable[[str], None]) -> None:
    echo(f"fairness: tenant B's {x['small_items']}-item batch alone {x['alone_s']:.2f} s, beside tenant A's "
         f"{x['burst_items']} items in flight {x['beside_s']:.2f} s: {x['ratio']:.2f}x "
         f"(target <= {x['target']:g}x); A's burst took {x['burst_s']:.1f} s")


# -- tracing: what OpenTelemetry tracing costs the service --------------------------------------------------------
TRACING_TARGET = 1.02  # with tracing on, the cold and the warm batch take at most 2% longer
# A warm batch takes 20-40 ms on a CPU, where one run's noise is a few percent: this many runs each at least (with
# 100, two identical copies differed by up to 1%; with 300, by 0.1-0.6%).
TRACING_WARM_RUNS = 300


class EncodedSpans(SpanExporter):
    """A span exporter that encodes each batch as the OTLP exporters do and then drops it: the whole cost of exporting
    in the service's process, with no collector to send to. Counts the spans and the CPU seconds spent encoding."""

    def __init__(self) -> None:
        self.spans = 0
        self.seconds = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        start = time.thread_time()  # the encoding's own CPU time, not its waits for the interpreter lock
        encode_spans(spans).SerializeToString()
        self.seconds += time.thread_time() - start
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _run_tracing(settings: Settings, judge_url: str, items: list[dict[str, Any]], *, port: int, cold_repeats: int,
                 warm_repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The batch cold and warm on two copies of the service, tracing off and on (the SDK's batching processor, spans
    encoded for OTLP), against the same judge server, the runs alternated so that drift hits both alike. Exporting is
    counted: what the SDK's thread encodes during a run is in that run's time, and what is left queued is encoded
    after the run (a cold one) or after all of them (the warm ones, whose few spans the SDK batches together) and its
    time added to the runs it came from."""
    from service.bench import load

    exporter = EncodedSpans()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))  # the SDK's defaults: batches of up to 512 spans
    # Off whatever the environment says; on with this provider.
    # A second copy with tracing off beside them: what two identical services differ by here (the noise).
    services = {"off": _service_under_test(settings.model_copy(update={"tracing": False})),
                "on": _service_under_test(settings, provider),
                "control": _service_under_test(settings.model_copy(update={"tracing": False}))}
    key = BENCH_KEYS["key1"]
    warm_repeats = max(warm_repeats, TRACING_WARM_RUNS)
    log(f"tracing: the {len(items)}-item batch with tracing off and on, alternated: {cold_repeats} cold and "
        f"{warm_repeats} warm runs each ...")
    out: dict[str, Any] = {"target": TRACING_TARGET}
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(ServiceThread(svc.app, port + i)).url for i, (name, svc)
                in enumerate(services.items())}
        fresh = {name: load.Fresh(judge_url, svc.app.state.scorer.cache.store.clear) for name, svc in services.items()}
        names = list(services)
        for run, repeats in (("cold", cold_repeats), ("warm", warm_repeats)):
            by: dict[str, list[float]] = {name: [] for name in names}
            spans, encoding = exporter.spans, exporter.seconds
            for i in range(repeats):
                for name in names[i % len(names):] + names[:i % len(names)]:
                    outcome = asyncio.run(service_run(urls[name], items, 1, services[name].clock,
                                                      fresh[name] if run == "cold" else None, key))
                    by[name] += outcome.seconds
                    if name == "on" and run == "cold":  # a cold batch's spans fill batches of their own
                        by["on"][-1] += _flush(provider, exporter)
            # Warm batches' few spans go out together, as the SDK batches them; each run gets its share.
            flushed = _flush(provider, exporter) / repeats
            by["on"] = [s + flushed for s in by["on"]]
            off_s, on_s = statistics.median(by["off"]), statistics.median(by["on"])
            out[run] = {"off_s": by["off"], "on_s": by["on"], "off_median_s": off_s, "on_median_s": on_s,
                        "ratio": on_s / off_s, "control_ratio": statistics.median(by["control"]) / off_s,
                        "spans_per_request": (exporter.spans - spans) / repeats,
                        "export_ms": 1000 * (exporter.seconds - encoding) / repeats}
    provider.shutdown()
    return out


def _flush(provider: TracerProvider, exporter: EncodedSpans) -> float:
    """Seconds the exporter spent on what was still queued (an export the SDK made during a run is in its time)."""
    before = exporter.seconds
    provider.force_flush()
    return exporter.seconds - before


def _report_tracing(x: dict[str, Any], items: int, echo: Callable[[str], None], show: Callable[[Any], None]) -> None:
    from rich.table import Table

    table = Table(title=f"tracing off and on, {items}-item batch (medians; runs alternated)")
    for col in ("run", "runs each", "off s", "on s (with export)", "on / off", "noise: 2nd off / off",
                "spans a request", "export ms a request"):
        table.add_column(col, justify="right")
    for run in ("cold", "warm"):
        y = x[run]
        table.add_row(run, str(len(y["off_s"])), f"{y['off_median_s']:.4f}", f"{y['on_median_s']:.4f}",
                      f"{y['ratio']:.3f}", f"{y['control_ratio']:.3f}", f"{y['spans_per_request']:.0f}",
                      f"{y['export_ms']:.2f}")
    show(table)
    worst = max(x["cold"]["ratio"], x["warm"]["ratio"])
    echo(f"tracing costs the cold batch {x['cold']['ratio'] - 1:+.1%} and the warm batch {x['warm']['ratio'] - 1:+.1%} "
         f"(target: at most {x['target'] - 1:+.0%}): {'within' if worst <= x['target'] else 'OVER'} the target")
