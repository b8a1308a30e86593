"""The app factory: `build_app` makes the app (routes, errors, guard); `init_app_state` opens what it serves with."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from service.api.admission import Admission
from service.api.auth import KeyRing, load_key_file, load_key_weights
from service.api.server import create_api
from service.api.tracing import make_provider
from service.backends.base import Embedder, JudgeBackend, RetryPolicy
from service.backends.breaker import CircuitBreaker
from service.engine import cpu
from service.evaluation.evaluator import Evaluator
from service.reward.prompt import load_prompt
from service.reward.scorer import RewardScorer
from service.runtime import tracing
from service.runtime.cache import Cache, CacheStore, MemoryStore, RedisStore
from service.runtime.exceptions import redact
from service.runtime.metrics import Metrics
from service.runtime.ratelimit import RateLimiter
from service.runtime.scheduling import FairSlots, PrefixWarmup, max_in_flight
from service.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("medix.app")


def make_judge(settings: Settings, tracer_provider: TracerProvider | None = None) -> JudgeBackend:
    if settings.judge_backend == "openai":
        urls = settings.judge_server_urls
        if not urls:
            raise ValueError("MEDIX_JUDGE_URL (or MEDIX_JUDGE_URLS) is required with MEDIX_JUDGE_BACKEND=openai")
        from service.backends.judge_openai import OpenAIJudge

        key = settings.judge_api_key.get_secret_value() if settings.judge_api_key else None
        return OpenAIJudge(urls, settings.judge_model, key, settings.judge_timeout_s,
                           max_connections=max_in_flight(settings.judge_concurrency),
                           routing=settings.judge_routing, affinity_slack=settings.judge_affinity_slack,
                           tracer_provider=tracer_provider)
    from service.backends.judge_vllm import VLLMJudge

    model_dir = settings.judge_model or str(settings.local_judge_dir)
    # For the hardware: vLLM's own `auto` would run a float32 checkpoint in bf16 even on a CPU that emulates it.
    dtype, why = cpu.engine_dtype(settings.judge_dtype)
    return VLLMJudge(model_dir, max_model_len=settings.vllm_max_model_len,
                     enforce_eager=settings.vllm_enforce_eager, memory_fraction=settings.vllm_memory_fraction,
                     served_name=None if settings.judge_model else "smollm2-135m-instruct",
                     dtype=dtype, dtype_reason=why,
                     max_num_seqs=cpu.engine_max_num_seqs(settings.vllm_max_num_seqs, cpu.has_gpu()),
                     block_size=cpu.engine_block_size(settings.vllm_block_size, cpu.has_gpu()))


def make_embedder(settings: Settings, metrics: Metrics, tracer_provider: TracerProvider | None = None) -> Embedder:
    if settings.embed_backend == "openai":
        if not settings.embed_url:
            raise ValueError("MEDIX_EMBED_URL is required with MEDIX_EMBED_BACKEND=openai")
        from service.backends.embed_openai import OpenAIEmbedder

        key = settings.embed_api_key.get_secret_value() if settings.embed_api_key else None
        return OpenAIEmbedder(settings.embed_url, settings.embed_model, key, settings.embed_timeout_s,
                              max_batch=settings.embed_batch_size, tracer_provider=tracer_provider)
    from service.backends.embed_st import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(settings.embed_model, device=settings.embed_device,
                                       max_batch=settings.embed_batch_size,
                                       max_wait_s=settings.embed_max_wait_ms / 1000,
                                       on_batch=metrics.embed_batch_size.observe)


def make_cache(settings: Settings, metrics: Metrics, store: CacheStore | None = None) -> Cache:
    if store is None:
        store = (RedisStore(settings.redis_url, settings.redis_timeout_s) if settings.redis_url
                 else MemoryStore(settings.cache_max_entries, settings.cache_max_bytes))
    return Cache(store, namespace=settings.cache_namespace, ttl_s=settings.cache_ttl_s, metrics=metrics,
                 down_s=settings.redis_down_s)


def key_weights(settings: Settings) -> dict[str, float]:
    """Each key's share of the judge (the key file's `weight=`; 1 otherwise)."""
    return load_key_weights(settings.api_keys_file) if settings.api_keys_file else {}


def make_keyring(settings: Settings) -> KeyRing:
    named = {f"key{i + 1}": k.get_secret_value() for i, k in enumerate(settings.api_keys)}
    if settings.api_keys_file:
        named.update(load_key_file(settings.api_keys_file))
    return KeyRing(named)


async def init_app_state(state: Any, settings: Settings, metrics: Metrics, closing: AsyncExitStack, *,
                         judge: JudgeBackend | None = None, embedder: Embedder | None = None,
                         cache_store: CacheStore | None = None, tracer_provider: TracerProvider | None = None) -> None:
    """Open the backends and cache, and put the scorer, evaluator and rate limiter on `state`.

    Everything opened is registered on `closing`. Backends given here replace the ones the settings describe.
    """
    cores = cpu.engine_cores(settings.engine_cpus)
    in_process = settings.judge_backend == "vllm"
    if in_process:
        cpu.prepare_engine_env(cores)
    judge = judge or make_judge(settings, tracer_provider)
    embedder = embedder or make_embedder(settings, metrics, tracer_provider)
    cache = make_cache(settings, metrics, cache_store)
    closing.push_async_callback(cache.close)
    closing.push_async_callback(judge.close)
    await judge.start()
    # After the engine's processes exist, so that they keep their own cores.
    if settings.pin_service if settings.pin_service is not None else in_process:
        cpu.pin_service(cores)
    closing.push_async_callback(embedder.close)
    await embedder.start()

    def slot_waited(tenant: str, seconds: float) -> None:
        metrics.tenant_queue_wait.labels(tenant).observe(seconds)
        metrics.phase_duration.labels("judge_queue").observe(seconds)
        if seconds > 0:  # a span for a wait that happened: a slot taken at once has nothing to show
            tracing.span_since("judge_queue", seconds)

    judge_slots = FairSlots(settings.judge_concurrency, weights=key_weights(settings), on_wait=slot_waited,
                            on_depth=lambda tenant, depth: metrics.tenant_queue_depth.labels(tenant).set(depth))
    judge_policy = RetryPolicy(settings.judge_retries, settings.judge_backoff_s, settings.judge_timeout_s)
    judge_breaker, embed_breaker = (
        CircuitBreaker(kind, failures=settings.breaker_failures, open_s=settings.breaker_open_s, metrics=metrics)
        for kind in ("judge", "embed"))
    redis_client = cache.store.client if isinstance(cache.store, RedisStore) else None
    limiter = RateLimiter(settings.rate_limit_items_per_s, settings.rate_limit_burst, redis_client,
                          settings.cache_namespace, down_s=settings.redis_down_s)
    state.admission.limiter = limiter
    state.scorer = RewardScorer(
        judge=judge, embedder=embedder, cache=cache, metrics=metrics,
        prompt=load_prompt(settings.verdict_prompt_file),
        judge_policy=judge_policy,
        embed_policy=RetryPolicy(settings.embed_retries, settings.embed_backoff_s, settings.embed_timeout_s),
        judge_concurrency=settings.judge_concurrency, verdict_max_tokens=settings.verdict_max_tokens,
        verdict_top_logprobs=settings.verdict_top_logprobs, retry_after_s=settings.retry_after_s,
        max_answer_chars=settings.verdict_max_answer_chars, default_profile=settings.default_profile,
        judge_slots=judge_slots, judge_breaker=judge_breaker, embed_breaker=embed_breaker,
        warmup=PrefixWarmup(settings.verdict_prefix_warm_s, max_wait_s=settings.judge_timeout_s),
    )
    state.evaluator = Evaluator(
        judge=judge, cache=cache, metrics=metrics, policy=judge_policy, judge_slots=judge_slots,
        retry_after_s=settings.retry_after_s, task_rubrics=settings.eval_task_rubrics,
        max_tokens=settings.eval_max_tokens, parse_retries=settings.eval_parse_retries,
        max_chars=settings.eval_max_chars, breaker=judge_breaker,
    )
    judge_at = ", ".join(settings.judge_server_urls) if settings.judge_backend == "openai" else None
    embed_at = settings.embed_url if settings.embed_backend == "openai" else None
    log.info("ready: judge=%s (%s%s) embed=%s (%s%s) cache=%s", judge.name, judge.model_id,
             f" at {redact(judge_at)}" if judge_at else " in process", embedder.name, embedder.model_id,
             f" at {redact(embed_at)}" if embed_at else " in process", cache.store.name)


def build_app(settings: Settings | None = None, *, judge: JudgeBackend | None = None,
              embedder: Embedder | None = None, cache_store: CacheStore | None = None,
              metrics: Metrics | None = None, tracer_provider: TracerProvider | None = None) -> Any:
    """The app (a FastAPI app, made by service/api/server.py): routes, error handlers and the request guard. Its
    state (backends, scorer, evaluator) is made by `init_app_state` when the lifespan starts, and closed when it
    ends."""
    settings = settings or Settings()
    metrics = metrics or Metrics()
    # Tracing on: the app's own provider (never made global), given or made from the settings (api/tracing.py).
    if tracer_provider is None and settings.tracing_on:
        tracer_provider = make_provider(settings)
        where = settings.otel_exporter_otlp_traces_endpoint or settings.otel_exporter_otlp_endpoint or "localhost"
        log.info("tracing on: spans to %s", ", ".join(f"{e} at {redact(where)}" if e == "otlp" else e
                                                      for e in settings.trace_exporters) or "nowhere")

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with AsyncExitStack() as closing:
            if tracer_provider is not None:  # the spans still queued are exported before the process ends
                closing.callback(tracer_provider.shutdown)
            await init_app_state(app.state, settings, metrics, closing, judge=judge, embedder=embedder,
                                 cache_store=cache_store, tracer_provider=tracer_provider)
            # What start-up made (modules, models, the tracing SDK) lives as long as the process: out of the
            # collector's way, so that a full collection scans only what requests make.
            gc.collect()
            gc.freeze()
            yield

    return create_api(settings, metrics, Admission(settings, metrics), make_keyring(settings), lifespan,
                      tracer_provider)
