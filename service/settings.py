"""The one settings class. Every field is an environment variable with the prefix MEDIX_."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

log = logging.getLogger("medix.settings")

# Renamed settings: the old variable keeps working, with a warning, until operators have moved.
DEPRECATED_ENV = {
    "MEDIX_JUDGE_PROMPT_FILE": "verdict_prompt_file",
    "MEDIX_JUDGE_MAX_TOKENS": "verdict_max_tokens",
    "MEDIX_JUDGE_TOP_LOGPROBS": "verdict_top_logprobs",
    "MEDIX_JUDGE_MAX_ANSWER_CHARS": "verdict_max_answer_chars",
    "MEDIX_JUDGE_TASK_RUBRICS": "eval_task_rubrics",
}


TRACE_EXPORTERS = {"otlp", "console", "none"}


def _default_model_dir() -> Path:
    return Path.home() / ".cache" / "medix" / "models"


class _DeprecatedEnv(PydanticBaseSettingsSource):
    """Reads the old names of renamed settings; the new name wins when both are set."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items()}
        out: dict[str, Any] = {}
        for old, name in DEPRECATED_ENV.items():
            if old not in env:
                continue
            message = f"{old} is deprecated; use MEDIX_{name.upper()}"
            warnings.warn(message, DeprecationWarning, stacklevel=2)
            log.warning(message)
            value: Any = env[old]
            if name == "eval_task_rubrics":
                value = json.loads(value)
            out[name] = value
        return out


class Settings(BaseSettings):
    """Grouped by concern (see GROUPS); the prefix of a name says what it configures: `judge_*` the judge
    backend (server or engine), `verdict_*` the YES/NO question of /reward, `eval_*` the /judge evaluation,
    `embed_*` the embedder, `redis_*`/`cache_*` the cache."""

    # populate_by_name: the OTEL_* settings are read from their standard names and still set by field name in code.
    model_config = SettingsConfigDict(env_prefix="MEDIX_", env_file=None, extra="ignore", populate_by_name=True)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _DeprecatedEnv(settings_cls), dotenv_settings, file_secret_settings

    # --- HTTP server -------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address `medix-reward serve` binds to.")
    port: int = Field(8000, description="Port `medix-reward serve` listens on.")
    log_level: str = Field("info", description="Log level of the service and uvicorn.")
    log_json: bool = Field(True, description="One JSON log line per request (with its request id); no texts or keys.")
    default_profile: str = Field("medix-r1", description="Reward profile used when a request names none.")
    shutdown_grace_s: int = Field(
        60, gt=0, description="On SIGTERM, how long in-flight requests may run on before they are cut off "
        "(they then fail; size it above your longest batch).")

    # --- Judge backend: the LLM server or in-process engine behind verdicts and /judge ----------------
    judge_backend: Literal["vllm", "openai"] = Field(
        "vllm", description="`vllm`: in-process vLLM engine (embedded default); `openai`: an OpenAI-compatible server. "
        "Unset: `openai` when MEDIX_JUDGE_URL or MEDIX_JUDGE_URLS is set, else `vllm`."
    )
    judge_url: str | None = Field(
        None, description="Base URL of the OpenAI-compatible judge server, ending in /v1 (e.g. "
        "`http://judge:8000/v1`); setting it selects backend `openai` unless MEDIX_JUDGE_BACKEND says otherwise."
    )
    judge_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Several judge replicas (base URLs ending in /v1), routed by MEDIX_JUDGE_ROUTING; a replica "
        "that failed a call rests 2 s, so that the retry goes to another. Adds to MEDIX_JUDGE_URL.",
    )
    judge_routing: Literal["affinity", "least_busy"] = Field(
        "affinity", description="How calls are spread over several judge replicas. `affinity`: a verdict goes to "
        "the replica its prompt up to the candidate hashes to (the fixed instructions and what its GRPO group "
        "shares), whose prefix cache then holds that part, unless that replica has more than "
        "MEDIX_JUDGE_AFFINITY_SLACK calls in flight beyond the least busy one; other calls go to the least busy. "
        "`least_busy`: every call to the replica with the fewest in flight.")
    judge_affinity_slack: int = Field(
        32, ge=0, description="Calls in flight by which a verdict's own replica may exceed the least busy one before "
        "the verdict goes to the least busy instead (MEDIX_JUDGE_ROUTING=affinity).")
    judge_model: str | None = Field(
        None,
        description="`openai`: the served model name (asked from /v1/models when unset). "
        "`vllm`: a local model folder (default: the folder `models prepare` builds).",
    )
    judge_api_key: SecretStr | None = Field(None, description="Bearer key sent to the judge server.")
    judge_timeout_s: float = Field(30.0, gt=0, description="Timeout of one judge call, seconds.")
    judge_retries: int = Field(2, ge=0, description="Retries after a failed judge call (connection error, 5xx).")
    judge_backoff_s: float = Field(0.2, ge=0, description="First retry delay; doubles each retry, with jitter.")
    judge_concurrency: int = Field(
        128, ge=1, description="Judge slots: the judge calls /reward and /judge together keep in flight (the engine "
        "batches them), shared fairly between tenants. A tenant below its weighted share takes a slot at once, past "
        "this number if need be (in flight then stays under twice it); lent slots are paid back before a waiting "
        "call gets one."
    )
    vllm_max_model_len: int = Field(2048, description="Context length of the in-process engine.")
    vllm_max_num_seqs: int | None = Field(
        None, ge=1, description="Requests the judge engine (in-process or `medix-reward judge-server`) runs at "
        "once; the rest wait in its queue, ordered by tenant priority. Unset: 32 on a CPU, vLLM's default on a GPU.")
    vllm_block_size: int | None = Field(
        None, ge=1, description="Tokens per KV-cache block of the judge engine (in-process or `medix-reward "
        "judge-server`): vLLM reuses a cached prompt prefix only in whole blocks. Unset: 32 on a CPU (vLLM's CPU "
        "default of 128 is longer than the verdict prompt's shared part, which would then be recomputed on every "
        "cold verdict; a multiple of 32 is required there), vLLM's default on a GPU.")
    vllm_enforce_eager: bool = Field(
        True, description="Skip torch.compile in the in-process engine: starts in ~30 s instead of ~90 s."
    )
    vllm_memory_fraction: float = Field(
        0.2, gt=0, le=1, description="`gpu_memory_utilization` of the in-process engine (on CPU: share of RAM)."
    )
    judge_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="dtype of the judge engine (in-process, and `medix-reward judge-server`). `auto`: bfloat16 on a "
        "GPU or a CPU with native bf16 (avx512_bf16/amx_bf16, ARM bf16), float32 on other CPUs, where bf16 is "
        "emulated and several times slower.",
    )
    engine_cpus: str | None = Field(
        "auto",
        description="CPU only: cores for the judge engine, e.g. `0` or `0-3`. `auto` gives it core 0 and the "
        "service the rest on a CPU-only host; empty disables pinning.",
    )
    pin_service: bool | None = Field(
        None,
        description="Move the service off `engine_cpus` (CPU hosts). Default: on with the in-process engine; "
        "set it when a CPU judge server runs on the same host.",
    )
    # --- Reward verdict: the YES/NO question /reward asks the judge backend -------------------------------
    verdict_prompt_file: Path | None = Field(
        None, description="A JSON file {version, system, user} replacing the built-in YES/NO verdict prompt of "
        "/reward (`user` must contain {answer} and {reference}, may use {question})."
    )
    verdict_max_tokens: int = Field(4, ge=1, description="Token budget of a YES/NO verdict.")
    verdict_top_logprobs: int = Field(10, ge=1, le=20, description="Top logprobs asked for to compute p(YES).")
    verdict_max_answer_chars: int = Field(
        4000, ge=16, description="Answers and references are cut to this length in the verdict prompt."
    )
    verdict_prefix_warm_s: float = Field(
        300.0, ge=0, description="After a verdict completes, for how long the judge engine is taken to hold the "
        "verdict prompt's shared prefix in its cache; a burst arriving later sends one call first, so that the "
        "engine computes the prefix once instead of once per call. 0: never hold calls back.")

    # --- Evaluation: the reference-based judge behind /judge ---------------------------------------------
    eval_task_rubrics: dict[str, Literal["binary", "report"]] = Field(
        default_factory=dict,
        description='Rubric by task name for /judge items that name none, as JSON, e.g. {"mimic_cxr": "report"}.',
    )
    eval_max_tokens: int = Field(24, ge=4, description="Token budget of one /judge round's JSON reply (doubled on "
                                 "a parse retry).")
    eval_parse_retries: int = Field(1, ge=0, description="Re-asks of a /judge round whose reply does not parse "
                                    "before the item fails.")
    eval_max_chars: int = Field(8000, ge=16, description="Question, reference and prediction are cut to this length "
                                "in the /judge prompt.")

    # --- Embedding backend -----------------------------------------------------------------------
    embed_backend: Literal["sentence-transformers", "openai"] = Field(
        "sentence-transformers", description="In-process sentence-transformers, or an OpenAI-compatible server "
        "(vLLM, TEI). Unset: `openai` when MEDIX_EMBED_URL is set, else `sentence-transformers`."
    )
    embed_model: str | None = Field(
        None,
        description="sentence-transformers model name or path (default: bundled all-MiniLM-L6-v2); "
        "for `openai`, the served model name.",
    )
    embed_url: str | None = Field(
        None, description="Base URL of an OpenAI-compatible embeddings server, ending in /v1 (e.g. "
        "`http://embed:8000/v1`: the service posts to <url>/embeddings); setting it selects backend `openai` "
        "unless MEDIX_EMBED_BACKEND says otherwise.")
    embed_api_key: SecretStr | None = Field(None, description="Bearer key sent to the embedding server.")
    embed_device: str | None = Field(None, description="torch device for sentence-transformers (default: auto).")
    embed_batch_size: int = Field(256, ge=1, description="Most texts in one encode call (micro-batcher).")
    embed_max_wait_ms: float = Field(
        2.0, ge=0, description="How long the micro-batcher waits for more texts before encoding."
    )
    embed_timeout_s: float = Field(30.0, gt=0, description="Timeout of one embedding call, seconds.")
    embed_retries: int = Field(2, ge=0, description="Retries after a failed embedding call.")
    embed_backoff_s: float = Field(0.2, ge=0, description="First embedding retry delay; doubles each retry, "
                                   "with jitter.")

    # --- Cache ---------------------------------------------------------------------------------
    redis_url: str | None = Field(None, description="Redis URL; unset gives the in-process LRU cache.")
    redis_timeout_s: float = Field(0.25, gt=0, description="Socket timeout for Redis; past it, a miss.")
    redis_down_s: float = Field(2.0, ge=0, description="After a Redis error, skip Redis this long.")
    cache_namespace: str = Field("medix:v1", description="Key prefix; change it to invalidate everything.")
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Time to live of cached verdicts and embeddings.")
    cache_max_entries: int = Field(200_000, ge=0, description="Size of the in-process LRU (0 disables it).")
    cache_max_bytes: int = Field(
        256 * 2**20, ge=0, description="Bytes (keys and values) the in-process LRU may hold: at 1,024-dimension "
        "embeddings 200,000 entries would be about 0.8 GB. The oldest entries go first.")

    # --- Limits --------------------------------------------------------------------------------
    max_items_per_request: int = Field(4096, ge=1, description="More items than this: 422.")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Bigger request bodies: 413 (counted as "
                                "they arrive, whatever Content-Length says). A JSON body also holds at most 64 "
                                "elements per item of MEDIX_MAX_ITEMS_PER_REQUEST (at least 65,536); more: 413.")
    max_parsing_bytes: int = Field(
        128 * 1024 * 1024, ge=1024, description="Bytes of request bodies this replica reads and parses at once, "
        "all keys together; past it: 429 with `Retry-After` (a lone bigger body still passes).")
    body_read_timeout_s: float = Field(
        30.0, gt=0, description="A request body must arrive within this many seconds of the request; slower: 408.")
    max_inflight_requests: int = Field(1024, ge=1, description="Scoring requests one key (tenant) may have in "
                                       "flight; past it: 429. A guard against floods: work is limited in items.")
    max_inflight_items: int = Field(16384, ge=1, description="Items one key (tenant) may have in flight across its "
                                    "requests; past it: 429 (a lone bigger request is still admitted).")
    max_text_chars: int = Field(20_000, ge=16, description="Longest text in any field of a request (response, "
                                "ground truth, question, prediction, query, prompt, label); longer: 422.")
    retry_after_s: int = Field(2, ge=1, description="`Retry-After` seconds sent with 429 and 503.")

    # --- Protection ----------------------------------------------------------------------------
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="API keys (JSON list, or comma-separated) enabling `Authorization: Bearer` on /reward, "
        "/get_reward, /judge and every other path but /healthz, /readyz, /metrics (its own key), /docs and "
        "/openapi.json; each is a tenant named `key1`, `key2`, ... in the order listed (in logs, limits "
        "and metrics). Empty (and no key file) disables auth.",
    )
    api_keys_file: Path | None = Field(
        None, description="A file of `name: key` lines (or a JSON object name -> key); names label logs and limits."
    )
    metrics_key: SecretStr | None = Field(None, description="When set, /metrics needs this bearer key.")
    rm_tenant: str | None = Field(
        None, min_length=1, max_length=128, description="With API keys set, /rm requests that send no "
        "`Authorization` header (slime's `remote_rm` sends none) are served as this tenant (a key's name shares "
        "its limits); unset: they are refused 401 like any other path. Anyone who reaches /rm then scores as it.")
    rate_limit_items_per_s: float | None = Field(
        None, gt=0, description="Per-key rate limit in items per second (token bucket, shared through Redis)."
    )
    rate_limit_burst: int = Field(4096, ge=1, description="Token bucket size: the most items a key may send at "
                                  "once; a bigger request is refused with 422.")
    breaker_failures: int = Field(5, ge=1, description="Consecutive failed backend calls that open its circuit.")
    breaker_open_s: float = Field(10.0, gt=0, description="How long an open circuit refuses calls before a probe.")

    # --- Tracing (OpenTelemetry) -------------------------------------------------------------
    # Read here from OpenTelemetry's own names, as every OpenTelemetry SDK reads them. The SDK itself reads the
    # rest of its standard variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG],
    # OTEL_EXPORTER_OTLP_HEADERS, ..._TIMEOUT, ..._CERTIFICATE, OTEL_BSP_*), which decide nothing here.
    tracing: bool | None = Field(
        None, description="OpenTelemetry traces of requests: `true` on, `false` off; unset: on when "
        "OTEL_TRACES_EXPORTER names an exporter or an OTLP endpoint is set (below). Sampling, the service name "
        "(default `medix-reward`) and the exporter's headers and timeouts come from OpenTelemetry's standard "
        "variables (docs/operations.md).")
    otel_sdk_disabled: bool = Field(
        False, validation_alias="OTEL_SDK_DISABLED", description="`true`: no tracing, whatever else is set.")
    otel_traces_exporter: str | None = Field(
        None, validation_alias="OTEL_TRACES_EXPORTER", description="Where spans go: `otlp`, `console` (standard "
        "output), `none`, or several comma-separated; unset: `otlp` (when tracing is on).")
    otel_exporter_otlp_endpoint: str | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT", description="The OTLP collector's base URL, e.g. "
        "`http://otel-collector:4317` (grpc) or `http://otel-collector:4318` (http/protobuf, `/v1/traces` "
        "appended); unset: the exporter's default on localhost.")
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", description="The endpoint of traces alone, "
        "used as given; wins over OTEL_EXPORTER_OTLP_ENDPOINT.")
    otel_exporter_otlp_protocol: Literal["grpc", "http/protobuf"] = Field(
        "grpc", validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"),
        description="OTLP over `grpc` or `http/protobuf` (the first variable set wins).")

    # --- Models on disk ------------------------------------------------------------------------
    model_dir: Path = Field(
        default_factory=_default_model_dir, description="Where `models prepare` writes the local judge model."
    )

    @field_validator("otel_traces_exporter")
    @classmethod
    def _exporters(cls, v: str | None) -> str | None:
        if v is None:
            return None
        names = [n.strip().lower() for n in v.split(",") if n.strip()]
        unknown = sorted(set(names) - TRACE_EXPORTERS)
        if unknown:
            raise ValueError(f"unknown trace exporter(s) {unknown}; known: {', '.join(sorted(TRACE_EXPORTERS))}")
        return ",".join(names) or None

    @field_validator("api_keys", "judge_urls", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        if isinstance(v, str):
            if v.strip().startswith("["):
                return json.loads(v)
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("judge_url", "embed_url")
    @classmethod
    def _strip_slash(cls, v: str | None) -> str | None:
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _backend_follows_url(self) -> Settings:
        """A URL given and no backend named means that server: the in-process default would ignore the URL."""
        named = self.model_fields_set
        if "judge_backend" not in named and (self.judge_url or self.judge_urls):
            self.judge_backend = "openai"
        if "embed_backend" not in named and self.embed_url:
            self.embed_backend = "openai"
        return self

    @property
    def judge_server_urls(self) -> list[str]:
        """MEDIX_JUDGE_URL then MEDIX_JUDGE_URLS, each once."""
        return list(dict.fromkeys(([self.judge_url] if self.judge_url else []) + self.judge_urls))

    @property
    def tracing_on(self) -> bool:
        """MEDIX_TRACING when set; else on when the OpenTelemetry environment names an exporter or an endpoint.
        OTEL_SDK_DISABLED=true wins over both."""
        if self.otel_sdk_disabled:
            return False
        if self.tracing is not None:
            return self.tracing
        if self.otel_traces_exporter:
            return self.otel_traces_exporter != "none"
        return bool(self.otel_exporter_otlp_endpoint or self.otel_exporter_otlp_traces_endpoint)

    @property
    def trace_exporters(self) -> list[str]:
        """The exporters spans go to (none: traced, trace ids in headers and logs, nothing exported)."""
        return [n for n in (self.otel_traces_exporter or "otlp").split(",") if n != "none"]

    @property
    def local_judge_dir(self) -> Path:
        return self.model_dir / "smollm2-135m-instruct"


# The settings by concern, in the order of the documentation (a unit test checks that each field is in one group).
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("HTTP server", ("host", "port", "log_level", "log_json", "default_profile", "shutdown_grace_s")),
    ("Judge backend (server or in-process engine)",
     ("judge_backend", "judge_url", "judge_urls", "judge_routing", "judge_affinity_slack", "judge_model",
      "judge_api_key", "judge_timeout_s", "judge_retries", "judge_backoff_s", "judge_concurrency",
      "vllm_max_model_len", "vllm_max_num_seqs", "vllm_block_size", "vllm_enforce_eager", "vllm_memory_fraction",
      "judge_dtype", "engine_cpus", "pin_service")),
    ("Reward verdict (/reward's YES/NO question)",
     ("verdict_prompt_file", "verdict_max_tokens", "verdict_top_logprobs", "verdict_max_answer_chars",
      "verdict_prefix_warm_s")),
    ("Evaluation (/judge)", ("eval_task_rubrics", "eval_max_tokens", "eval_parse_retries", "eval_max_chars")),
    ("Embedder", ("embed_backend", "embed_model", "embed_url", "embed_api_key", "embed_device", "embed_batch_size",
                  "embed_max_wait_ms", "embed_timeout_s", "embed_retries", "embed_backoff_s")),
    ("Cache", ("redis_url", "redis_timeout_s", "redis_down_s", "cache_namespace", "cache_ttl_s", "cache_max_entries",
               "cache_max_bytes")),
    ("Limits", ("max_items_per_request", "max_body_bytes", "max_parsing_bytes", "body_read_timeout_s",
                "max_inflight_requests", "max_inflight_items", "max_text_chars", "retry_after_s")),
    ("Protection", ("api_keys", "api_keys_file", "metrics_key", "rm_tenant", "rate_limit_items_per_s",
                    "rate_limit_burst", "breaker_failures", "breaker_open_s")),
    ("Tracing (OpenTelemetry)", ("tracing", "otel_sdk_disabled", "otel_traces_exporter", "otel_exporter_otlp_endpoint",
                                 "otel_exporter_otlp_traces_endpoint", "otel_exporter_otlp_protocol")),
    ("Models on disk", ("model_dir",)),
)


def env_names(field: str) -> list[str]:
    """The environment variable(s) a setting is read from: MEDIX_<NAME>, or OpenTelemetry's standard name(s)."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [str(c) for c in alias.choices]
    return [f"MEDIX_{field.upper()}"]
