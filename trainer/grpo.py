"""GRPO with TRL's GRPOTrainer, the reward coming from the MediX service over HTTP."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.adapters.trl import MedixReward


@dataclass
class TrainOptions:
    model: str
    data: Path
    output_dir: Path
    reward_url: str | None = None
    api_key: str | None = None
    max_steps: int = 2
    num_generations: int = 4
    batch_size: int = 4
    learning_rate: float = 1e-6
    max_completion_length: int = 64
    limit: int | None = None
    use_vllm: bool = False
    seed: int = 0


def train(opts: TrainOptions) -> dict[str, Any]:
    """Run GRPO; write the checkpoint, `log_history.jsonl` (TRL's logged steps) and `medix_rewards.jsonl`
    (what the service returned, call by call)."""
    from trl import GRPOConfig, GRPOTrainer

    from trainer.data import load_dataset

    dataset = load_dataset(opts.data, limit=opts.limit or max(opts.batch_size * opts.max_steps * 2, 16))
    reward = MedixReward(opts.reward_url, opts.api_key)
    config = GRPOConfig(
        output_dir=str(opts.output_dir),
        max_steps=opts.max_steps,
        per_device_train_batch_size=opts.batch_size,
        num_generations=opts.num_generations,
        learning_rate=opts.learning_rate,
        max_completion_length=opts.max_completion_length,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=opts.seed,
        use_vllm=opts.use_vllm,
        bf16=False,
    )
    trainer = GRPOTrainer(model=opts.model, reward_funcs=[reward], args=config, train_dataset=dataset)
    trainer.train()
    trainer.save_model(str(opts.output_dir))
    with (opts.output_dir / "medix_rewards.jsonl").open("w") as f:
        f.writelines(json.dumps(call) + "\n" for call in reward.history)
    with (opts.output_dir / "log_history.jsonl").open("w") as f:
        f.writelines(json.dumps(entry) + "\n" for entry in trainer.state.log_history)
    return {"log_history": trainer.state.log_history, "reward_calls": reward.history}
