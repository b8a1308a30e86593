"""`medix-reward`: serve, models prepare, judge-server."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer

from clients.datasets import SLAKE
from service.settings import Settings

app = typer.Typer(help="MediX reward service.", no_args_is_help=True, add_completion=False)
models_app = typer.Typer(help="Local models for machines with no model hub.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("prepare")
def models_prepare() -> None:
    """Build the local judge model folder (idempotent) and print {"judge": DIR, "embed": DIR}."""
    from service.engine.local_models import ModelPrepError, embed_model_dir, prepare_judge

    settings = Settings()
    try:
        judge = prepare_judge(settings.local_judge_dir)
        embed = embed_model_dir()
    except ModelPrepError as exc:
        typer.echo(f"models prepare failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps({"judge": str(judge), "embed": str(embed)}))


def configure_logging(settings: Settings) -> None:
    """JSON lines (one per request from the access logger) or plain text; never keys or texts."""
    import logging

    handler = logging.StreamHandler()
    if settings.log_json:
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                           rename_fields={"asctime": "ts", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)


def settings_table() -> str:
    """Every setting, grouped by concern, as Markdown tables: variable, default, meaning; then the renamed ones."""
    from service.settings import DEPRECATED_ENV, GROUPS, env_names

    out = []
    for title, names in GROUPS:
        out += [f"### {title}", "", "| variable | default | meaning |", "| --- | --- | --- |"]
        for name in names:
            field = Settings.model_fields[name]
            default = "~/.cache/medix/models" if name == "model_dir" else field.get_default(call_default_factory=True)
            shown = "unset" if default is None else ("" if default == [] else default)
            names = " or ".join(f"`{n}`" for n in env_names(name))
            out.append(f"| {names} | `{shown}` | {field.description} |")
        out.append("")
    out += ["### Renamed (the old name still works and logs a deprecation warning)", "",
            "| old variable | new variable |", "| --- | --- |"]
    out += [f"| `{old}` | `MEDIX_{new.upper()}` |" for old, new in DEPRECATED_ENV.items()]
    return "\n".join(out) + "\n"


@app.command("settings")
def settings_cmd() -> None:
    """Print every MEDIX_* setting with its default and meaning, grouped by concern (the tables of
    docs/configuration.md)."""
    typer.echo(settings_table(), nl=False)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default MEDIX_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default MEDIX_PORT).")] = None,
) -> None:
    """Run the service. With no configuration: in-process vLLM judge, bundled MiniLM, in-process cache."""
    import uvicorn

    from service.app import build_app

    settings = Settings()
    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    configure_logging(settings)
    if settings.judge_backend == "vllm" and not settings.judge_model:
        from service.engine.local_models import ModelPrepError, prepare_judge

        try:
            prepare_judge(settings.local_judge_dir)
        except ModelPrepError as exc:
            typer.echo(f"cannot prepare the local judge model: {exc}", err=True)
            raise typer.Exit(1) from exc
    # SIGTERM: uvicorn stops accepting, lets in-flight requests finish, then the lifespan closes the pools.
    uvicorn.run(build_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                timeout_graceful_shutdown=settings.shutdown_grace_s, log_config=None,
                access_log=not settings.log_json)


@app.command("judge-server")
def judge_server(
    port: Annotated[int, typer.Option(help="Port of the OpenAI-compatible server.")] = 8100,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    eager: Annotated[bool, typer.Option(help="Skip torch.compile: up in ~30 s instead of ~90 s.")] = False,
    name: Annotated[str, typer.Option(help="Served model name.")] = "smollm2-135m-instruct",
    dtype: Annotated[str | None, typer.Option(
        help="auto, float32, bfloat16 or float16 (default MEDIX_JUDGE_DTYPE). auto: bf16 where the hardware "
        "computes it natively, float32 on other CPUs.")] = None,
    block_size: Annotated[int | None, typer.Option(
        help="Tokens per KV-cache block (default MEDIX_VLLM_BLOCK_SIZE; unset: 32 on a CPU, vLLM's default on a "
        "GPU).")] = None,
) -> None:
    """Start a local vLLM OpenAI-compatible server on the local judge model (pinned to MEDIX_ENGINE_CPUS)."""
    from service.engine import cpu
    from service.engine.local_models import ModelPrepError, prepare_judge

    settings = Settings()
    gpu = cpu.has_gpu()
    try:
        chosen, why = cpu.engine_dtype(dtype or settings.judge_dtype)
        blocks = cpu.engine_block_size(block_size or settings.vllm_block_size, gpu)
    except ValueError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    try:
        model_dir = settings.judge_model or str(prepare_judge(settings.local_judge_dir))
    except ModelPrepError as exc:
        typer.echo(f"cannot prepare the local judge model: {exc}", err=True)
        raise typer.Exit(1) from exc
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
            "--served-model-name", name, "--host", host, "--port", str(port),
            "--max-model-len", str(settings.vllm_max_model_len),
            "--gpu-memory-utilization", str(settings.vllm_memory_fraction), "--dtype", chosen]
    # Priority scheduling: the service sends each call's tenant priority (see service/runtime/scheduling.py).
    argv += ["--scheduling-policy", "priority"]
    seqs = cpu.engine_max_num_seqs(settings.vllm_max_num_seqs, gpu)
    argv += ["--max-num-seqs", str(seqs)] if seqs else []
    # The verdict prompt's shared part is reused only in whole KV blocks (service/engine/cpu.py).
    argv += ["--block-size", str(blocks)] if blocks else []
    typer.echo(f"judge engine dtype: {chosen} ({why}); KV block: {blocks or 'vLLM default'} tokens; "
               f"CPU: {cpu.cpu_summary()}", err=True)
    if eager:
        argv.append("--enforce-eager")
    cores = cpu.engine_cores(settings.engine_cpus)
    env = dict(os.environ)
    if cores:
        spec = ",".join(str(c) for c in sorted(cores))
        env["VLLM_CPU_OMP_THREADS_BIND"] = spec
        if shutil.which("taskset"):
            argv = ["taskset", "-c", spec, *argv]
    typer.echo(" ".join(argv), err=True)
    os.execvpe(argv[0], argv, env)


@app.command()
def bench(
    data: Annotated[Path, typer.Option(help="SLAKE-style JSONL to build the batch from.")] = SLAKE,
    questions: Annotated[int, typer.Option(help="Questions per GRPO batch.")] = 64,
    samples: Annotated[int, typer.Option(help="Sampled answers per question.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the answer mix.")] = 0,
    judge_url: Annotated[str | None, typer.Option(help="Use this judge server instead of starting one.")] = None,
    eager: Annotated[bool, typer.Option(help="Start the judge server in eager mode (faster start, slower run).")]
    = False,
    cold_repeats: Annotated[int, typer.Option(help="Cold-cache requests (cache cleared before each).")] = 3,
    warm_repeats: Annotated[int, typer.Option(help="Warm-cache requests.")] = 20,
    port: Annotated[int, typer.Option(help="Port of the in-process service.")] = 8765,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the numbers here.")] = None,
    dtype: Annotated[str | None, typer.Option(
        help="dtype of the judge server the bench starts (default MEDIX_JUDGE_DTYPE, auto).")] = None,
    block_size: Annotated[int | None, typer.Option(
        help="KV-cache block size of the judge server the bench starts (default MEDIX_VLLM_BLOCK_SIZE; unset: 32 "
        "on a CPU).")] = None,
    engine_pairs: Annotated[int, typer.Option(
        help="Verdicts per run of the engine check (one at a time, 16 at once, per path and prompt length); "
        "0 skips it.")] = 64,
    prompt_cost: Annotated[bool, typer.Option(help="In the engine check, also time prompts of three lengths.")] = True,
    modes: Annotated[str, typer.Option(
        help="Comma-separated sections: engine (engine check), baseline (published one-at-a-time reward vs the "
        "service, cold and warm), limit (the batch's judge calls straight at the engine vs the service, with "
        "per-phase times), per-sample (one request per item vs one batch), fairness (a small tenant beside a "
        "large one's burst), tracing (the cold and warm batch with OpenTelemetry tracing off and on, side by side; not "
        "in the default), replicas (the cold batch over two judge servers, routed least busy and by prompt prefix, "
        "with each replica's prefix-cache hits; not in the default), capacity (items/s one service core sustains "
        "against a simulated GPU judge at --capacity-rates; needs no judge server; not in the default).")]
    = ",".join(("engine", "baseline", "limit", "per-sample", "fairness")),
    capacity_items: Annotated[int, typer.Option(
        help="capacity: distinct judged items in the cold batch.")] = 1432,
    capacity_rates: Annotated[str, typer.Option(
        help="capacity: the simulated judge's prompt tokens per second, comma-separated (k = thousand).")]
    = "15000,60000,240000",
    capacity_embed_rate: Annotated[float, typer.Option(
        help="capacity: the simulated embedder's tokens per second.")] = 1_000_000.0,
    capacity_repeats: Annotated[int, typer.Option(help="capacity: cold batches per rate.")] = 3,
    capacity_profile: Annotated[Path | None, typer.Option(
        help="capacity: profile the service at the highest rate and write the profile here.")] = None,
) -> None:
    """Baseline (one item at a time, as published) vs the service's /reward, cold and warm, same judge server;
    first an engine check: verdicts per second one at a time and 16 at once, and what a prompt token costs."""
    import logging

    from rich.console import Console

    from service.bench.capacity import CapacityOptions, parse_rates
    from service.bench.main import MODES, report, run_bench

    chosen = tuple(m.strip() for m in modes.split(",") if m.strip())
    unknown = sorted(set(chosen) - set(MODES))
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; known: {', '.join(MODES)}", param_hint="--modes")
    try:
        capacity = CapacityOptions(items=capacity_items, rates=parse_rates(capacity_rates),
                                   embed_tokens_per_s=capacity_embed_rate, repeats=capacity_repeats,
                                   profile=capacity_profile)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--capacity-rates") from exc

    logging.basicConfig(level=logging.WARNING)
    console = Console(stderr=True)
    r = run_bench(data=data, questions=questions, samples=samples, seed=seed, judge_url=judge_url, eager=eager,
                  warm_repeats=warm_repeats, cold_repeats=cold_repeats, port=port, log=console.print, dtype=dtype,
                  engine_pairs=engine_pairs, prompt_cost=prompt_cost, modes=chosen, block_size=block_size,
                  capacity_options=capacity)
    if json_out:
        json_out.write_text(json.dumps(r, indent=2))
    if not report(r, typer.echo, Console().print):
        raise typer.Exit(1)


if __name__ == "__main__":
    app()
