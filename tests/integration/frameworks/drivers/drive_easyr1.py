"""EasyR1's reward loading, replayed on clients/adapters/easyr1.py (run by .venvs/client: medix-client alone).

EasyR1 is not on PyPI, so its loader is replayed step by step as its `AutoRewardManager` does it (EasyR1 at
b44b311, verl/workers/reward/function.py and config.py): `worker.reward.reward_function=path:name` split on the
last colon (name `main` by default); the file executed as the standalone module `custom_reward_fn`; the optional
constants `REWARD_TYPE` ("batch" by default) and `REWARD_NAME`; `reward_function_kwargs` bound with
`functools.partial`; the batch form called with one dict per sample (`response`, `response_length`,
`ground_truth`); `overall` placed as the reward and every returned key collected into per-key metric lists that
EasyR1 averages. The environment holds medix-client and nothing of the service or torch. A refused item (an answer
longer than the judge's context) raises by default; with `on_refused: skip` in `reward_function_kwargs` it scores the
chosen reward and `medix_refused` reaches the averaged logs.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
from collections import defaultdict
from typing import Any

from _driver import ADAPTERS, REFUSED, cases, failure, parse, run, write


def load(reward_function: str, kwargs: dict[str, Any]) -> tuple[Any, str, str]:
    path, name = reward_function.rsplit(":", 1) if ":" in reward_function else (reward_function, "main")
    spec = importlib.util.spec_from_file_location("custom_reward_fn", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["custom_reward_fn"] = module
    spec.loader.exec_module(module)
    fn = getattr(module, name)
    return functools.partial(fn, **kwargs), getattr(module, "REWARD_TYPE", "batch"), getattr(module, "REWARD_NAME",
                                                                                                  "unknown")


def compute(reward_fn: Any, items: list[dict[str, Any]]) -> dict[str, Any]:
    inputs = [{"response": c["response"], "response_length": len(c["response"].split()),
               "ground_truth": c["ground_truth"]} for c in items]
    scores = reward_fn(inputs)
    metrics: dict[str, list[Any]] = defaultdict(list)
    rewards = []
    for score in scores:
        rewards.append(score["overall"])
        for key, value in score.items():
            metrics[key].append(value)
    means = {k: sum(v) / len(v) for k, v in metrics.items()}  # EasyR1 averages every key into its logs
    assert all(isinstance(m, float) and not math.isnan(m) for m in means.values()), means
    return {"rewards": rewards, "metrics": dict(metrics), "means": means}


def main() -> None:
    args = parse()
    items = cases(args)
    report: dict[str, Any] = {"modules": sorted(m for m in sys.modules if m.split(".")[0] in
                                                ("service", "torch", "fastapi", "vllm", "redis"))}
    fn, report["reward_type"], report["reward_name"] = load(f"{ADAPTERS / 'easyr1.py'}:main", {"url": args.url})
    report["main"] = compute(fn, items)
    report["compute_score"] = compute(load(f"{ADAPTERS / 'easyr1.py'}:compute_score", {"url": args.url})[0], items)
    report["default_name"] = compute(load(str(ADAPTERS / "easyr1.py"), {"url": args.url})[0], items)["rewards"]
    try:
        down = load(f"{ADAPTERS / 'easyr1.py'}:main", {"url": args.down_url, "retries": 0})[0]
        report["outage"] = f"no exception: {compute(down, items[:1])}"
    except Exception as exc:
        report["outage"] = failure(exc)
    mixed, path = [items[0], REFUSED], f"{ADAPTERS / 'easyr1.py'}:main"
    try:
        report["refused"] = f"no exception: {compute(load(path, {'url': args.url})[0], mixed)}"
    except Exception as exc:
        report["refused"] = failure(exc)
    skip = {"url": args.url, "on_refused": "skip", "refused_reward": 0.5}
    report["refused_skip"] = compute(load(path, skip)[0], mixed)
    report["modules_after"] = sorted(m for m in sys.modules if m.split(".")[0] in
                                     ("service", "torch", "fastapi", "vllm", "redis"))
    write(args, report)


if __name__ == "__main__":
    run(main)
