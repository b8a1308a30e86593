"""GRPO with TRL's GRPOTrainer, the reward coming from the MediX service over HTTP.

A run writes into its output folder, as it goes:

- `steps.jsonl`: one line per optimiser step, flushed when TRL logs it: the mean overall reward and each
  component's mean (`medix/format`, `medix/accuracy_llm`, `medix/accuracy_embed`, `medix/modality`), the seconds
  the reward request took (`medix/seconds`, client retries included) and how many HTTP error replies the client
  retried during it (`medix/retried_replies`), completion lengths, loss, learning rate, and `elapsed_s`;
- `completions.jsonl`: every sampled completion with its overall reward, step by step;
- `holdout.jsonl` (the held-back questions, for `medix-judge generate --dataset`) and `system_prompt.txt`
  (for its `--system`);
- `checkpoint-N/`: every `save_steps` steps and at the last step, what `--resume` continues from (model,
  optimiser, scheduler, RNG and trainer state; the newest `save_total_limit` are kept);
and at the end the checkpoint (with its tokenizer and chat template), `log_history.jsonl` (TRL's logged steps),
`medix_rewards.jsonl` (what the service returned, call by call) and `run.json` (the options and the wall time).

A resumed run (`resume`) continues from the newest complete checkpoint; `steps.jsonl` keeps its lines up to that
checkpoint's step and is appended to (the steps logged after it, lost with the crash, are trained and logged
again). `completions.jsonl` and `medix_rewards.jsonl`, written at the end, then hold the resumed part only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.adapters.common import text_of, trainer_timeouts
from clients.adapters.trl import MedixReward
from clients.client import AsyncMedixClient


@dataclass
class TrainOptions:
    model: str
    data: Path
    output_dir: Path
    reward_url: str | None = None
    api_key: str | None = None
    profile: str | None = None
    max_steps: int = 2
    num_generations: int = 8
    batch_size: int = 8
    learning_rate: float = 2e-5
    beta: float = 0.0
    temperature: float = 1.0
    max_completion_length: int = 96
    limit: int | None = None
    holdout_every: int = 6
    worked_example: bool = True
    image_hint: bool = True
    reward_retries: int = 60
    gradient_checkpointing: bool = False
    bf16: bool = False
    use_vllm: bool = False
    seed: int = 0
    plot: Path | None = None
    save_steps: int = 10
    save_total_limit: int = 2
    resume: bool = False


# transformers' names: trainer_utils.PREFIX_CHECKPOINT_DIR ("checkpoint") + "-<global step>", and
# trainer.TRAINER_STATE_NAME, the file a checkpoint's save writes last (a unit test ties both to transformers).
CHECKPOINT_DIR = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


class RunExists(ValueError):
    """The output folder holds checkpoints of an earlier run, and this run was not asked to resume it."""


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int


def checkpoint_dirs(output_dir: Path) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, oldest step first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := CHECKPOINT_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def _saved_step(path: Path) -> int | None:
    """The step a checkpoint holds, from its trainer state; None when the save never finished (transformers
    writes the trainer state last, after the model, optimiser, scheduler and RNG state)."""
    try:
        step = json.loads((path / TRAINER_STATE).read_text())["global_step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return step if isinstance(step, int) else None


def resume_point(output_dir: Path, resume: bool) -> Checkpoint | None:
    """Where a run in `output_dir` starts. With `resume`: the newest complete checkpoint (a folder whose save a
    crash cut short is passed over, where transformers' own `resume_from_checkpoint=True` would pick it and fail),
    or None (none yet: from the beginning). Without: None, and RunExists when checkpoints are there, since a
    fresh run would mix its checkpoints with the old run's and `--resume` would later continue the wrong one."""
    dirs = checkpoint_dirs(output_dir)
    if not resume:
        if dirs:
            raise RunExists(f"{output_dir} holds checkpoints of an earlier run ({', '.join(p.name for p in dirs)}): "
                            "pass --resume to continue it, or choose another --output-dir")
        return None
    for path in reversed(dirs):
        if (step := _saved_step(path)) is not None:
            return Checkpoint(path, step)
    return None


def checkpoint_args(opts: TrainOptions) -> dict[str, Any]:
    """GRPOConfig's checkpoint arguments: every `save_steps` steps (and at the last), the newest
    `save_total_limit` kept, with the optimiser and RNG state a resume needs; `save_steps` 0: none."""
    if opts.save_steps <= 0:
        return {"save_strategy": "no"}
    return {"save_strategy": "steps", "save_steps": opts.save_steps, "save_total_limit": opts.save_total_limit,
            "save_only_model": False}


def config_args(opts: TrainOptions, cuda: bool) -> dict[str, Any]:
    """Every GRPOConfig argument of a run (`cuda`: whether a GPU is there)."""
    return {
        "output_dir": str(opts.output_dir),
        "max_steps": opts.max_steps,
        "per_device_train_batch_size": opts.batch_size,
        "num_generations": opts.num_generations,
        "learning_rate": opts.learning_rate,
        "lr_scheduler_type": "constant",  # a short run: no decay that would stall the last steps
        "beta": opts.beta,
        "temperature": opts.temperature,
        "max_completion_length": opts.max_completion_length,
        "gradient_checkpointing": opts.gradient_checkpointing,
        "logging_steps": 1,
        **checkpoint_args(opts),
        "report_to": "none",
        "seed": opts.seed,
        "use_vllm": opts.use_vllm,
        "bf16": opts.bf16,
        "use_cpu": opts.bf16 and not cuda,  # transformers refuses bf16 on CPU without it
    }


class RunReward(MedixReward):
    """`MedixReward` that also reports, per step, how long the service took (retries included) and how many error
    replies (429/5xx) the client retried, and keeps every completion with its reward."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.samples: list[dict[str, Any]] = []
        self._errors = 0
        self._clients: dict[asyncio.AbstractEventLoop, AsyncMedixClient] = {}

    def _async_client(self) -> AsyncMedixClient:
        """One client per event loop, as the parent's, with a hook that counts the error replies it retries."""
        loop = asyncio.get_running_loop()
        if loop not in self._clients:
            timeout, retries = trainer_timeouts(self.timeout, self.retries)
            self._clients[loop] = AsyncMedixClient(self.url, self.api_key, timeout=timeout, retries=retries,
                                                   on_response=self._count)
        return self._clients[loop]

    async def _count(self, response: Any) -> None:
        if response.status_code >= 400:
            self._errors += 1

    async def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None,
                       log_metric: Any = None, **columns: Any) -> list[float | None]:
        errors_before, start = self._errors, time.monotonic()
        rewards = await super().__call__(prompts, completions, completion_ids, log_metric, **columns)
        seconds, retried = time.monotonic() - start, self._errors - errors_before
        if log_metric is not None:
            log_metric("medix/seconds", seconds)
            log_metric("medix/retried_replies", float(retried))
        self.history[-1].update(seconds=round(seconds, 3), retried_replies=retried)
        state = columns.get("trainer_state")
        self.samples.append({"step": state.global_step + 1 if state is not None else len(self.samples) + 1,
                             "completions": [text_of(c) for c in completions], "rewards": rewards})
        return rewards


def prepare_steps_log(path: Path, resume_step: int | None) -> float:
    """Ready `steps.jsonl` for a run: emptied for a fresh run (`resume_step` None); for a run resumed from the
    checkpoint of `resume_step`, its lines up to that step kept and the rest dropped (the resumed run trains and
    logs those steps again), a line a crash cut off included. Returns the `elapsed_s` to continue from: the last
    kept line's, so the column stays the training time of the steps it lists."""
    if resume_step is None or not path.exists():
        path.write_text("")
        return 0.0
    kept: list[str] = []
    elapsed = 0.0
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
            step, seconds = int(entry["step"]), float(entry.get("elapsed_s") or 0.0)
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
        if step <= resume_step:
            kept.append(line + "\n")
            elapsed = max(elapsed, seconds)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept))
    os.replace(tmp, path)  # all or nothing: a crash here leaves the old file or the new one
    return elapsed


def _step_logger(path: Path, resume_step: int | None = None) -> Any:
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """Appends each logged training step to `steps.jsonl` as soon as TRL logs it (flushed and synced)."""

        def __init__(self) -> None:
            self.start, self.offset = time.monotonic(), 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.offset = prepare_steps_log(path, resume_step)
            self.start = time.monotonic()

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if logs and "reward" in logs:
                elapsed = self.offset + time.monotonic() - self.start
                entry = {"step": state.global_step, "elapsed_s": round(elapsed, 1), **logs}
                with path.open("a") as f:
                    f.write(json.dumps(entry) + "\n")
                    f.flush()
                    os.fsync(f.fileno())

    return StepLog()


def train(opts: TrainOptions) -> dict[str, Any]:
    """Run GRPO on the training rows; write the files listed in the module docstring."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from trainer.data import SYSTEM_PROMPT, load_dataset, read_rows, split_holdout, write_holdout

    wall_start = time.monotonic()
    start = resume_point(opts.output_dir, opts.resume)  # RunExists before anything is written
    opts.output_dir.mkdir(parents=True, exist_ok=True)
    train_rows, held = split_holdout(read_rows(opts.data), opts.holdout_every)
    write_holdout(opts.output_dir / "holdout.jsonl", held, image_hint=opts.image_hint)
    (opts.output_dir / "system_prompt.txt").write_text(SYSTEM_PROMPT)
    dataset = load_dataset(train_rows, limit=opts.limit, worked_example=opts.worked_example,
                           image_hint=opts.image_hint)
    reward = RunReward(opts.reward_url, opts.api_key, profile=opts.profile, retries=opts.reward_retries)
    config = GRPOConfig(**config_args(opts, torch.cuda.is_available()))
    trainer = GRPOTrainer(model=opts.model, reward_funcs=[reward], args=config, train_dataset=dataset,
                          callbacks=[_step_logger(opts.output_dir / "steps.jsonl", start.step if start else None)])
    trainer.train(resume_from_checkpoint=str(start.path) if start else None)
    trainer.save_model(str(opts.output_dir))
    with (opts.output_dir / "medix_rewards.jsonl").open("w") as f:
        f.writelines(json.dumps(call) + "\n" for call in reward.history)
    with (opts.output_dir / "completions.jsonl").open("w") as f:
        f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in reward.samples)
    with (opts.output_dir / "log_history.jsonl").open("w") as f:
        f.writelines(json.dumps(entry) + "\n" for entry in trainer.state.log_history)
    if opts.plot is not None:
        from trainer.plot import plot_steps

        plot_steps(opts.output_dir / "steps.jsonl", opts.plot)
    run = {"options": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(opts).items()},
           "train_rows": len(dataset), "holdout_rows": len(held), "resumed_from_step": start.step if start else None,
           "wall_s": round(time.monotonic() - wall_start, 1)}
    (opts.output_dir / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return {"log_history": trainer.state.log_history, "reward_calls": reward.history, "run": run}
