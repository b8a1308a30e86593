"""verl 0.9.1 drives clients/adapters/verl.py (run by .venvs/verl/bin/python; see envs.sh here).

- reward loop, `naive` manager (the default), `async def compute_score`: verl's own Hydra config composed with
  the documented overrides, `RewardLoopManager` with its Ray reward-loop worker, on a real `DataProto`;
- reward loop, `remote` manager, `compute_score_sync` (pickled into verl's Ray reward workers);
- the legacy `BatchRewardManager` with `compute_score_batch`, loaded through verl's `get_custom_reward_fn`;
- outages: the naive manager's worker in process and the batch manager, pointed at an address where nothing
  answers; both must raise;
- a refused item (an answer longer than the judge's context) in the naive manager's worker: it raises by default;
  with `+reward.custom_reward_function.reward_kwargs.on_refused=skip` (and `refused_reward=0.5`) it scores 0.5 and
  every sample carries `medix_refused`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from _driver import ADAPTERS, REFUSED, cases, failure, number, parse, run, write

ADAPTER = str(ADAPTERS / "verl.py")


def config(args: Any, name: str, manager: str, url: str, extra: tuple[str, ...] = ()) -> Any:
    """verl's ppo_trainer config with the lines docs/frameworks.md tells users to set."""
    import verl
    from hydra import compose, initialize_config_dir

    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    overrides = [f"reward.custom_reward_function.path={ADAPTER}", f"reward.custom_reward_function.name={name}",
                 f"reward.reward_manager.name={manager}", f"+reward.custom_reward_function.reward_kwargs.url={url}",
                 "+reward.custom_reward_function.reward_kwargs.retries=0", "reward.num_workers=1",
                 f"actor_rollout_ref.model.path={args.tokenizer}", *extra]
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name="ppo_trainer", overrides=overrides)


def batch(tokenizer: Any, items: list[dict[str, Any]]) -> Any:
    """A rollout batch as verl's trainer hands it to the reward code: left-padded prompts, right-padded
    responses, one attention mask over both, and the dataset's non-tensor fields as numpy object arrays."""
    import numpy as np
    import torch
    from verl import DataProto

    pad = tokenizer.pad_token_id
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": c["question"]}], tokenize=True,
                                             add_generation_prompt=True, return_dict=False) for c in items]
    responses = [tokenizer(text=c["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                 for c in items]
    for c, ids in zip(items, responses, strict=True):  # what verl decodes is what the test scores
        assert tokenizer.decode(ids, skip_special_tokens=True) == c["response"], c["response"]
    p_len, r_len = max(map(len, prompts)), max(map(len, responses)) + 3
    prompt_ids = torch.tensor([[pad] * (p_len - len(p)) + p for p in prompts])
    response_ids = torch.tensor([r + [pad] * (r_len - len(r)) for r in responses])
    mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (r_len - len(r))
                         for p, r in zip(prompts, responses, strict=True)])
    return DataProto.from_dict(
        tensors={"prompts": prompt_ids, "responses": response_ids, "attention_mask": mask,
                 "input_ids": torch.cat([prompt_ids, response_ids], 1),
                 "position_ids": torch.clamp(mask.cumsum(-1) - 1, min=0)},
        non_tensors={
            "data_source": np.array(["medix"] * len(items), dtype=object),
            "reward_model": np.array([{"style": "rule", "ground_truth": c["ground_truth"]} for c in items],
                                     dtype=object),
            "extra_info": np.array([{"question": c["question"], "index": i} for i, c in enumerate(items)],
                                   dtype=object),
        },
    )


def last_token_scores(data: Any, scores: Any) -> list[float | None]:
    """The reward verl placed on each response's last valid token (the rest of the row must be zero)."""
    p_len = data.batch["prompts"].shape[1]
    lengths = data.batch["attention_mask"][:, p_len:].sum(-1)
    out = []
    for row, n in zip(scores, lengths, strict=True):
        n = int(n)
        assert float(row[:n - 1].abs().sum()) == 0.0 and float(row[n:].abs().sum()) == 0.0
        out.append(number(row[n - 1]))
    return out


def reward_loop(args: Any, name: str, manager: str, data: Any) -> dict[str, Any]:
    import ray
    from verl.experimental.reward_loop import RewardLoopManager

    mgr = RewardLoopManager(config(args, name, manager, args.url))
    try:
        out = mgr.compute_rm_score(data)
    finally:
        for worker in mgr.reward_loop_workers:
            ray.kill(worker)
    keys = out.meta_info["reward_extra_keys"]
    return {"scores": last_token_scores(data, out.batch["rm_scores"]), "dtype": str(out.batch["rm_scores"].dtype),
            "extra_keys": keys, "extra": {k: [number(v) for v in out.non_tensor_batch[k]] for k in keys}}


def naive_outage(args: Any, data: Any) -> dict[str, Any]:
    """The naive manager's worker in this process, its service down: the exception must come out of verl."""
    from verl.experimental.reward_loop import RewardLoopWorker

    worker = RewardLoopWorker(config(args, "compute_score", "naive", args.down_url))
    out = {"manager": type(worker.reward_manager).__name__, "awaits": worker.reward_manager.is_async_reward_score}
    try:
        out["raised"] = f"no exception: {worker.loop.run_until_complete(worker.compute_score_batch(data))}"
    except Exception as exc:
        out["raised"] = failure(exc)
    return out


def naive_refused(args: Any, data: Any) -> dict[str, Any]:
    """The naive manager's worker in this process on a batch holding a refused item: by default it raises; opted in,
    verl assembles the chosen reward and the `medix_refused` key like any other."""
    from verl.experimental.reward_loop import RewardLoopWorker

    out: dict[str, Any] = {}
    worker = RewardLoopWorker(config(args, "compute_score", "naive", args.url))
    try:
        out["default"] = f"no exception: {worker.loop.run_until_complete(worker.compute_score_batch(data))}"
    except Exception as exc:
        out["default"] = failure(exc)
    skip = ("+reward.custom_reward_function.reward_kwargs.on_refused=skip",
            "+reward.custom_reward_function.reward_kwargs.refused_reward=0.5")
    worker = RewardLoopWorker(config(args, "compute_score", "naive", args.url, skip))
    scored = worker.loop.run_until_complete(worker.compute_score_batch(data))
    keys = list(scored[0]["reward_extra_info"])
    out["skip"] = {"scores": [number(s["reward_score"]) for s in scored], "extra_keys": keys,
                   "extra": {k: [number(s["reward_extra_info"][k]) for s in scored] for k in keys}}
    return out


def legacy_batch(args: Any, data: Any, tokenizer: Any, url: str) -> dict[str, Any]:
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.workers.reward_manager import BatchRewardManager

    fn = get_custom_reward_fn(config(args, "compute_score_batch", "naive", url))
    mgr = BatchRewardManager(tokenizer=tokenizer, num_examine=0, compute_score=fn)
    try:
        out = mgr(data, return_dict=True)
    except Exception as exc:
        return {"raised": failure(exc)}
    info = out["reward_extra_info"]
    return {"scores": last_token_scores(data, out["reward_tensor"]), "extra_keys": list(info),
            "extra": {k: [number(v) for v in values] for k, values in info.items()}}


def main() -> None:
    args = parse()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    import ray
    from verl.utils import hf_tokenizer

    items = cases(args)
    tokenizer = hf_tokenizer(args.tokenizer)
    data = batch(tokenizer, items)
    report: dict[str, Any] = {"verl": __import__("verl").__version__}
    report["batch"] = legacy_batch(args, batch(tokenizer, items), tokenizer, args.url)
    report["batch_outage"] = legacy_batch(args, batch(tokenizer, items), tokenizer, args.down_url).get("raised")
    report["naive_outage"] = naive_outage(args, batch(tokenizer, items))
    report["naive_refused"] = naive_refused(args, batch(tokenizer, [items[0], REFUSED]))
    ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
    try:
        report["naive"] = reward_loop(args, "compute_score", "naive", data)
        report["remote"] = reward_loop(args, "compute_score_sync", "remote", batch(tokenizer, items))
    finally:
        ray.shutdown()
    write(args, report)


if __name__ == "__main__":
    run(main)
