"""ms-swift 4.6.0 (PyPI) drives clients/adapters/swift.py through its own plugin import and GRPO reward path
(run by .venvs/swift).

- The plugin: `BaseArguments._import_external_plugins` (what `--external_plugins FILE` runs in every swift
  command's argument parsing) imports the file, which registers `medix` and `medix_async` in `swift.rewards.orms`.
- The reward functions: `GRPOTrainer._prepare_rewards(['medix', 'medix_async'])` on a real swift `GRPOConfig`
  builds them as `orms[name](args=args)` (`--reward_funcs medix medix_async`) and sets the reward weights.
- A step: `swift.rl_core.grpo_algorithm.score_completions` (what `GRPOTrainer._compute_rewards_per_func` calls) on
  real `GRPOSample`s built from dataset rows (`messages` ending with the completion, `solution`, `images`): the plain
  function on the training thread, the async one under its `asyncio.run`; two steps, so two event loops. Then the
  reward as GRPOTrainer sums it, `(rewards_per_func * reward_weights).nansum(1)`.

No model is loaded: generation is replaced by the completions the cases hold.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from types import SimpleNamespace
from typing import Any

from _driver import ADAPTERS, REFUSED, cases, failure, number, parse, run, write


def rows(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dataset rows after rollout: the conversation with the completion last, the ground truth in `solution` (the
    column ms-swift's own accuracy reward reads), an image as a VL dataset carries one."""
    return [{"messages": [{"role": "system", "content": "Answer in the MediX format."},
                          {"role": "user", "content": "<image>" + c["question"]},
                          {"role": "assistant", "content": c["response"]}],
             "solution": c["ground_truth"], "images": [{"path": "/nonexistent/xray.png"}]} for c in items]


def step(trainer: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    import torch
    from swift.rl_core.data import GRPOSample
    from swift.rl_core.grpo_algorithm import score_completions

    samples = [GRPOSample.from_row(r) for r in rows(items)]
    per_func = score_completions(samples, reward_funcs=trainer.reward_funcs,
                                 reward_model_plugins=trainer.reward_model_plugins, use_gym_env=trainer.use_gym_env,
                                 device=torch.device("cpu"), trainer_state=None)
    total = (per_func * trainer.reward_weights.unsqueeze(0)).nansum(dim=1)  # GRPOTrainer's reward
    return {"per_func": [[number(v) for v in row] for row in per_func], "total": [number(v) for v in total]}


def main() -> None:
    args = parse()
    items = cases(args)
    os.environ["MEDIX_URL"] = args.url  # the documented way: ms-swift passes the reward nothing but its args
    import swift
    from swift.arguments import BaseArguments
    from swift.rewards import orms
    from swift.rlhf_trainers import GRPOConfig
    from swift.rlhf_trainers.grpo_trainer import GRPOTrainer

    report: dict[str, Any] = {"swift": swift.__version__, "trl": importlib.import_module("trl").__version__}
    plugin = str(ADAPTERS / "swift.py")
    BaseArguments._import_external_plugins(SimpleNamespace(external_plugins=[plugin], custom_register_path=None))
    report["registered"] = sorted(n for n in ("medix", "medix_async") if n in orms)
    # ms-swift put the plugin's folder first on sys.path; the adapter took it off, so clients/adapters/trl.py and
    # verl.py shadow nothing imported later.
    report["adapters_on_path"] = [p for p in sys.path if os.path.isdir(p or ".") and os.path.samefile(p or ".",
                                                                                                  ADAPTERS)]

    config = GRPOConfig(output_dir=str(args.out.parent / "swift-out"), report_to=[], use_cpu=True, bf16=False,
                        num_generations=2, per_device_train_batch_size=2)
    trainer = SimpleNamespace(args=config, accelerator=SimpleNamespace(device="cpu"), use_gym_env=False,
                              is_deepspeed_enabled=False, is_fsdp_enabled=False)
    GRPOTrainer._prepare_rewards(trainer, ["medix", "medix_async"])
    report["reward_func_names"] = trainer.reward_func_names
    report["steps"] = [step(trainer, items), step(trainer, items)]  # two steps: two asyncio.run loops

    # An outage, each form alone: the step raises (a None would be summed as 0 by nansum).
    for name, cls in (("sync", orms["medix"]), ("async", orms["medix_async"])):
        orms[f"medix_down_{name}"] = functools.partial(cls, url=args.down_url, retries=0)
        down = SimpleNamespace(**{**vars(trainer)})
        GRPOTrainer._prepare_rewards(down, [f"medix_down_{name}"])
        try:
            report[f"outage_{name}"] = f"no exception: {step(down, items[:1])}"
        except Exception as exc:
            report[f"outage_{name}"] = failure(exc)

    # An item the service refuses: ItemFailed by default; with on_refused="skip" the chosen reward.
    refused = [items[0], REFUSED]
    try:
        report["refused"] = f"no exception: {step(trainer, refused)}"
    except Exception as exc:
        report["refused"] = failure(exc)
    orms["medix_skip"] = functools.partial(orms["medix"], on_refused="skip", refused_reward=-1.0)
    skip = SimpleNamespace(**{**vars(trainer)})
    GRPOTrainer._prepare_rewards(skip, ["medix_skip"])
    report["refused_skip"] = step(skip, refused)
    report["modules"] = sorted(m for m in sys.modules if m.split(".")[0] == "service")
    write(args, report)


if __name__ == "__main__":
    run(main)
