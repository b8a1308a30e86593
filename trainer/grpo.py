"""GRPO with TRL's GRPOTrainer, the reward coming from the MediX service over HTTP.

A run writes into its output folder, as it goes:

- `steps.jsonl`: one line per optimiser step, flushed when TRL logs it: the mean overall reward and each
  component's mean (`medix/format`, `medix/accuracy_llm`, `medix/accuracy_embed`, `medix/modality`), the seconds
  the reward request took (`medix/seconds`, client retries included) and how many HTTP error replies the client
  retried during it (`medix/retried_replies`), completion lengths, loss, learning rate, and `elapsed_s`;
- `completions.jsonl`: every sampled completion with its overall reward, step by step;
- `holdout.jsonl` (the held-back questions, for `medix-judge generate --dataset`) and `system_prompt.txt`
  (for its `--system`);
and at the end the checkpoint (with its tokenizer and chat template), `log_history.jsonl` (TRL's logged steps),
`medix_rewards.jsonl` (what the service returned, call by call) and `run.json` (the options and the wall time).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.adapters.common import text_of
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


class RunReward(MedixReward):
    """`MedixReward` that also reports, per step, how long the service took (retries included) and how many error
    replies (429/5xx) the client retried, and keeps every completion with its reward."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.samples: list[dict[str, Any]] = []
        self._errors = 0

    async def _count(self, response: Any) -> None:
        if response.status_code >= 400:
            self._errors += 1

    async def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None,
                       log_metric: Any = None, **columns: Any) -> list[float | None]:
        if self._client is None:  # as the parent builds it, plus a hook that counts error replies
            self._client = AsyncMedixClient(self.url, self.api_key, timeout=self.timeout, retries=self.retries,
                                            on_response=self._count)
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


def _step_logger(path: Path) -> Any:
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """Appends each logged training step to `steps.jsonl` as soon as TRL logs it."""

        def __init__(self) -> None:
            self.start = time.monotonic()

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.monotonic()
            path.write_text("")

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
                   **kwargs: Any) -> None:
            if logs and "reward" in logs:
                entry = {"step": state.global_step, "elapsed_s": round(time.monotonic() - self.start, 1), **logs}
                with path.open("a") as f:
                    f.write(json.dumps(entry) + "\n")

    return StepLog()


def train(opts: TrainOptions) -> dict[str, Any]:
    """Run GRPO on the training rows; write the files listed in the module docstring."""
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from trainer.data import SYSTEM_PROMPT, load_dataset, read_rows, split_holdout, write_holdout

    wall_start = time.monotonic()
    opts.output_dir.mkdir(parents=True, exist_ok=True)
    train_rows, held = split_holdout(read_rows(opts.data), opts.holdout_every)
    write_holdout(opts.output_dir / "holdout.jsonl", held, image_hint=opts.image_hint)
    (opts.output_dir / "system_prompt.txt").write_text(SYSTEM_PROMPT)
    dataset = load_dataset(train_rows, limit=opts.limit, worked_example=opts.worked_example,
                           image_hint=opts.image_hint)
    reward = RunReward(opts.reward_url, opts.api_key, profile=opts.profile, retries=opts.reward_retries)
    config = GRPOConfig(
        output_dir=str(opts.output_dir),
        max_steps=opts.max_steps,
        per_device_train_batch_size=opts.batch_size,
        num_generations=opts.num_generations,
        learning_rate=opts.learning_rate,
        lr_scheduler_type="constant",  # a short run: no decay that would stall the last steps
        beta=opts.beta,
        temperature=opts.temperature,
        max_completion_length=opts.max_completion_length,
        gradient_checkpointing=opts.gradient_checkpointing,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=opts.seed,
        use_vllm=opts.use_vllm,
        bf16=opts.bf16,
        use_cpu=opts.bf16 and not torch.cuda.is_available(),  # transformers refuses bf16 on CPU without it
    )
    trainer = GRPOTrainer(model=opts.model, reward_funcs=[reward], args=config, train_dataset=dataset,
                          callbacks=[_step_logger(opts.output_dir / "steps.jsonl")])
    trainer.train()
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
           "train_rows": len(dataset), "holdout_rows": len(held), "wall_s": round(time.monotonic() - wall_start, 1)}
    (opts.output_dir / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return {"log_history": trainer.state.log_history, "reward_calls": reward.history, "run": run}
