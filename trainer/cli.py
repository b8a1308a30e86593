"""`medix-train`: a short GRPO run with TRL, rewards from the MediX service."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated

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
    model: Annotated[str | None, typer.Option(help="Policy model (default: the local SmolLM2-135M).")] = None,
    reward_url: Annotated[str | None, typer.Option(help="Service URL (default MEDIX_URL).")] = None,
    api_key: Annotated[str | None, typer.Option(help="Service key (default MEDIX_API_KEY).")] = None,
    max_steps: int = 2,
    num_generations: int = 4,
    batch_size: Annotated[int, typer.Option(help="Completions per device per step.")] = 4,
    learning_rate: float = 1e-6,
    max_completion_length: int = 64,
    limit: Annotated[int | None, typer.Option(help="Use only the first N rows.")] = None,
    use_vllm: Annotated[bool, typer.Option(help="TRL's vLLM rollout (GPU runs).")] = False,
    output_dir: Path = Path("runs/medix-grpo"),
) -> None:
    """Train; print the logged steps as JSON lines."""
    from trainer.grpo import TrainOptions, train

    if model is None:
        model = local_model()
    out = train(TrainOptions(model=model, data=data, output_dir=output_dir, reward_url=reward_url, api_key=api_key,
                             max_steps=max_steps, num_generations=num_generations, batch_size=batch_size,
                             learning_rate=learning_rate, max_completion_length=max_completion_length, limit=limit,
                             use_vllm=use_vllm))
    for entry in out["log_history"]:
        typer.echo(json.dumps(entry))


if __name__ == "__main__":
    app()
