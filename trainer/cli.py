"""`medix-train`: GRPO with TRL, rewards from the MediX service (recipe and figures: docs/training.md)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from clients.datasets import SLAKE

app = typer.Typer(help="GRPO over HTTP with the MediX reward service.", add_completion=False)


def local_model() -> str:
    """The local SmolLM2-135M folder, built by the service's own `medix-reward models prepare` command (the
    trainer uses the service's command-line contract, not its code)."""
    exe = shutil.which("medix-reward") or str(Path(sys.executable).parent / "medix-reward")
    try:
        done = subprocess.run([exe, "models", "prepare"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise typer.BadParameter(f"no --model given and `medix-reward models prepare` failed: {exc}",
                                 param_hint="--model") from exc
    return str(json.loads(done.stdout.strip().splitlines()[-1])["judge"])


@app.command()
def main(
    data: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Medical QA JSONL (SLAKE works as is); "
                                       "default: the bundled SLAKE test split.")] = SLAKE,
    model: Annotated[str | None, typer.Option(help="Policy model, a local folder or hub name (default: the local "
                                              "SmolLM2-135M-Instruct).")] = None,
    reward_url: Annotated[str | None, typer.Option(help="Service URL (default MEDIX_URL).")] = None,
    api_key: Annotated[str | None, typer.Option(help="Service key (default MEDIX_API_KEY).")] = None,
    profile: Annotated[str | None, typer.Option(help="Reward profile to ask for (default: the service's, "
                                                "medix-r1).")] = None,
    max_steps: Annotated[int, typer.Option(min=1, help="Optimiser steps; each one samples --batch-size "
                                           "completions, scores them in one /reward request and updates.")] = 2,
    num_generations: Annotated[int, typer.Option(min=2, help="GRPO group size: completions sampled per question; "
                                                 "each is judged against its group's mean.")] = 8,
    batch_size: Annotated[int, typer.Option(min=1, help="Completions per step (a multiple of --num-generations: "
                                            "batch-size / num-generations questions per step).")] = 8,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate, constant over the run.")] = 2e-5,
    beta: Annotated[float, typer.Option(min=0.0, help="KL penalty towards the starting policy; 0 (none) also "
                                        "skips the reference model's forward pass.")] = 0.0,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature of the rollouts.")] = 1.0,
    max_completion_length: Annotated[int, typer.Option(min=1, help="Token budget of one completion; a cut "
                                                       "completion misses </answer> and scores format 0.")] = 96,
    limit: Annotated[int | None, typer.Option(help="Train on only the first N training rows.")] = None,
    holdout_every: Annotated[int, typer.Option(min=0, help="Hold back the questions of every N-th image (img_id, "
                                               "or every N-th row when there is none) from training; they are "
                                               "written to OUTPUT_DIR/holdout.jsonl for medix-judge. 0: none.")] = 6,
    worked_example: Annotated[bool, typer.Option(help="Put a worked example (one question and a reply in the "
                                                 "format) before each question, as an earlier exchange.")] = True,
    image_hint: Annotated[bool, typer.Option(help="Start each question with an image line from the row's "
                                             "metadata (`Image: CT scan, lung.`), for text-only policies.")] = True,
    reward_retries: Annotated[int, typer.Option(min=0, help="Client retries of a /reward request on 429/5xx "
                                                "(honouring Retry-After) and connection errors before the run "
                                                "stops; enough to ride out a judge restart.")] = 60,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Recompute activations in the backward pass "
                                                         "(saves memory, costs time).")] = False,
    bf16: Annotated[bool, typer.Option(help="bf16 autocast in the loss's forward and backward passes (weights "
                                       "and optimiser stay float32): about 1.8x faster on CPUs with AVX-512 BF16 "
                                       "or AMX, and on GPUs.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of sampling and data order.")] = 0,
    use_vllm: Annotated[bool, typer.Option(help="TRL's vLLM rollout (GPU runs).")] = False,
    output_dir: Annotated[Path, typer.Option(help="Checkpoint, per-step logs and the held-back questions "
                                             "go here.")] = Path("runs/medix-grpo"),
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of the mean reward and each component against "
                                              "the step (needs matplotlib).")] = None,
    save_steps: Annotated[int, typer.Option(min=0, help="Save a checkpoint (model, optimiser, scheduler, RNG "
                                            "state) into OUTPUT_DIR/checkpoint-N every N steps and at the last "
                                            "step, for --resume; 0: none.")] = 10,
    save_total_limit: Annotated[int, typer.Option(min=1, help="Checkpoints kept (the newest); older ones are "
                                                  "deleted.")] = 2,
    resume: Annotated[bool, typer.Option(help="Continue the run in OUTPUT_DIR from its newest complete "
                                         "checkpoint (from the beginning when it has none); steps.jsonl is kept "
                                         "up to that step and appended to. Without it, an OUTPUT_DIR holding "
                                         "checkpoints is refused.")] = False,
) -> None:
    """Train; print the logged steps as JSON lines."""
    from trainer.grpo import TrainOptions, train

    _check_batch_size(batch_size, num_generations)
    _check_resume(output_dir, resume)
    options = TrainOptions(model=_policy_model(model), data=data, output_dir=output_dir, reward_url=reward_url,
                           api_key=api_key, profile=profile, max_steps=max_steps, num_generations=num_generations,
                           batch_size=batch_size, learning_rate=learning_rate, beta=beta, temperature=temperature,
                           max_completion_length=max_completion_length, limit=limit, holdout_every=holdout_every,
                           worked_example=worked_example, image_hint=image_hint, reward_retries=reward_retries,
                           gradient_checkpointing=gradient_checkpointing, bf16=bf16, seed=seed, use_vllm=use_vllm,
                           plot=plot, save_steps=save_steps, save_total_limit=save_total_limit, resume=resume)
    _print_log_history(train(options)["log_history"])


def _check_batch_size(batch_size: int, num_generations: int) -> None:
    """--batch-size must hold whole GRPO groups of --num-generations completions."""
    if batch_size % num_generations:
        raise typer.BadParameter(f"must be a multiple of --num-generations ({num_generations})",
                                 param_hint="--batch-size")


def _check_resume(output_dir: Path, resume: bool) -> None:
    """Refuse an OUTPUT_DIR with checkpoints unless --resume; say where a resumed run starts."""
    from trainer.grpo import RunExists, resume_point

    try:
        start = resume_point(output_dir, resume)
    except RunExists as exc:
        raise typer.BadParameter(str(exc), param_hint="--resume") from exc
    if resume:
        typer.echo(f"resuming from {start.path} (step {start.step})" if start else
                   f"--resume: no complete checkpoint in {output_dir} yet; starting from the beginning", err=True)


def _policy_model(model: str | None) -> str:
    """The policy given with --model, else the local SmolLM2-135M folder."""
    return local_model() if model is None else model


def _print_log_history(log_history: list[dict[str, Any]]) -> None:
    """One JSON line per logged step."""
    for entry in log_history:
        typer.echo(json.dumps(entry))


if __name__ == "__main__":
    app()
