"""TRL drives clients/adapters/trl.py through its own reward code (run by .venvs/trl-1.10, trl-1.14 or trl-1.16;
see envs.sh).

- `GRPOTrainer`: a real trainer is built on the local SmolLM2 policy with the adapter in `reward_funcs`, and its
  `_calculate_rewards(inputs, prompts, completions, completion_ids_list)` (where TRL calls every reward function,
  passing `log_metric`, and turns None into NaN) scores the cases as conversational completions. TRL >= 1.14 gets
  `MedixReward` (awaited on TRL's event-loop thread); older TRL gets `MedixRewardSync`, and `MedixReward` must
  refuse to be built there. `clients.adapters.trl.medix_reward`, imported the way Axolotl imports a reward function
  by its dotted name, goes through the same dispatch. Beside a second reward function, a refused item is NaN in
  MediX's column only.
- `AsyncGRPOTrainer` (TRL >= 1.14): the reward functions pickled as its rollout worker pickles them, unpickled in a
  spawned process, and scored there by TRL's own `_AsyncRolloutLoop._score_group` (no `log_metric`; TRL's nansum
  of the reward functions, and its advantages).
- Outages: `on_outage="raise"` must raise out of TRL; `on_outage="skip"` must give NaN, never 0.
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import pickle
import tempfile
from importlib import metadata
from types import SimpleNamespace
from typing import Any

from _driver import REFUSED, cases, failure, number, parse, run, write


def constant_reward(prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
    """A second reward function (module level: AsyncGRPOTrainer pickles its reward functions)."""
    return [0.25] * len(completions)


def score_in_child(payload: bytes, items: list[dict[str, Any]], out: Any) -> None:
    """In a spawned process, as AsyncGRPOTrainer's rollout worker: unpickle the reward functions and score one
    group with TRL's own `_score_group`."""
    import asyncio

    from accelerate.state import PartialState
    from trl.experimental.async_grpo import async_rollout_worker as worker
    from trl.experimental.async_grpo.async_rollout_worker import RolloutGroup, TrainingSequence, _AsyncRolloutLoop
    from trl.trainer.utils import get_callable_name

    try:
        worker._scrub_child_env()  # the start of TRL's own `_child_main`
        PartialState()
        funcs = pickle.loads(payload)["reward_funcs"]
        loop = SimpleNamespace(reward_funcs=funcs, reward_func_names=[get_callable_name(f) for f in funcs],
                               _env_reward_types=[], _provides_rollout_reward=False)
        group = RolloutGroup(
            prompts=[[{"role": "user", "content": c["question"]}] for c in items],
            reward_kwargs={"ground_truth": [c["ground_truth"] for c in items]},
            completions=[[{"role": "assistant", "content": c["response"]}] for c in items],
            completions_ids=[[1, 2] for _ in items],
            completions_sequences=[[TrainingSequence(input_ids=[1, 2], completion_mask=[0, 1],
                                                     old_log_probs=[0.0, 0.0], rollout_id=str(i))]
                                   for i in range(len(items))],
            tool_call_counts=[0] * len(items), tool_failure_counts=[0] * len(items), model_version=0, group_id=0,
            env_rewards=[None] * len(items), rollout_rewards=[None] * len(items))
        samples = asyncio.run(_AsyncRolloutLoop._score_group(loop, group))
        out.put({"pid": os.getpid(), "names": loop.reward_func_names,
                 "samples": [{"advantage": number(s.advantage),
                              **{k: number(v) for k, v in s.metrics.items() if k.startswith("reward")}}
                             for s in samples]})
    except Exception as exc:
        out.put({"raised": failure(exc)})


def async_grpo(funcs: list[Any], items: list[dict[str, Any]]) -> dict[str, Any]:
    payload = pickle.dumps({"reward_funcs": funcs})  # what AsyncRolloutWorker.start checks and the child receives
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=score_in_child, args=(payload, items, out))
    child.start()
    try:
        got = out.get(timeout=600)
    finally:
        child.join(60)
    return {**got, "parent": os.getpid()}


def main() -> None:
    args = parse()
    import datasets
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from clients.adapters.trl import ASYNC_TRL, MedixReward, MedixRewardSync

    version = tuple(int(x) for x in metadata.version("trl").split(".")[:2])
    form = MedixReward if version >= ASYNC_TRL else MedixRewardSync
    report: dict[str, Any] = {"trl": metadata.version("trl"), "form": form.__name__}
    if form is MedixRewardSync:
        try:
            MedixReward(args.url)
            report["async_form_on_old_trl"] = "built"
        except RuntimeError as exc:
            report["async_form_on_old_trl"] = failure(exc)

    items = cases(args)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)

    def dispatch(funcs: list[Any], batch: list[dict[str, Any]], key: str | None = None) -> list[list[float | None]]:
        rows = [{"prompt": [{"role": "user", "content": c["question"]}], "ground_truth": c["ground_truth"]}
                for c in batch]
        completions = [[{"role": "assistant", "content": c["response"]}] for c in batch]
        completion_ids = [tokenizer(text=c["response"], add_special_tokens=False)["input_ids"] for c in batch]
        with tempfile.TemporaryDirectory() as out:
            config = GRPOConfig(output_dir=out, per_device_train_batch_size=len(batch), num_generations=2,
                                max_completion_length=8, report_to="none", use_vllm=False, bf16=False,
                                save_strategy="no", logging_steps=1)
            trainer = GRPOTrainer(model=args.tokenizer, reward_funcs=funcs, args=config,
                                  train_dataset=datasets.Dataset.from_list(rows))
            rewards = trainer._calculate_rewards(rows, [r["prompt"] for r in rows], completions, completion_ids)
            if key is not None:
                report[key] = {k: [number(v) for v in values] for k, values in trainer._pending_metrics.items()}
            return [[number(v) for v in row] for row in rewards.T]

    reward = form(args.url)
    report["rewards"] = dispatch([reward], items, "logged")[0]
    report["history"] = reward.history
    # Axolotl (0.17 to 0.21.0) imports `trl.reward_funcs` entries by dotted name: the module is all before the last dot.
    fqn = "clients.adapters.trl.medix_reward"
    medix_reward = getattr(importlib.import_module(".".join(fqn.split(".")[:-1])), fqn.split(".")[-1])
    os.environ["MEDIX_URL"] = args.url  # the function's default options come from the environment
    report["medix_reward"] = dispatch([medix_reward], items, "medix_reward_logged")[0]
    # A refused item beside a second reward function: NaN in MediX's column, the other column intact.
    mixed = [*items[:3], REFUSED]
    report["combined"] = dispatch([form(args.url), constant_reward], mixed)
    if version >= ASYNC_TRL:
        report["async_grpo"] = async_grpo([MedixReward(args.url), constant_reward], mixed)
        report["async_grpo_alone"] = async_grpo([MedixReward(args.url)], mixed)
    try:
        report["outage_raise"] = f"no exception: {dispatch([form(args.down_url, retries=0)], items)}"
    except Exception as exc:
        report["outage_raise"] = failure(exc)
    report["outage_skip"] = dispatch([form(args.down_url, retries=0, on_outage="skip")], items)[0]
    write(args, report)


if __name__ == "__main__":
    run(main)
