"""slime's reward calling, replayed on clients/adapters/slime.py and on the service's /rm (run by .venvs/client:
medix-client alone; and by .venvs/slime, which adds the aiohttp slime's `remote_rm` posts with).

slime is not on PyPI, so the few lines that load and call a reward are copied below from slime v0.3.1 (a6272da;
unchanged at main 624b824), each with its place:

- slime/utils/misc.py `load_function`: `--custom-rm-path module.fn` imported by its dotted path (cached).
- slime/rollout/rm_hub/__init__.py `async_rm` (the `custom_rm_path` and `remote_rm` branches), `batched_async_rm`,
  `remote_rm` and its shared aiohttp session (64 connections, 120 s, no headers of its own; 10 attempts, 2^n s
  apart up to 30 s, any exception retried).
- slime/rollout/sglang_rollout.py: `generate_and_rm`'s reward step (one sample: `await async_rm`),
  `generate_and_rm_group`'s (`--group-rm`: `await batched_async_rm(args, group)`), the samples of a batch
  gathered at once, the evaluation's `assert not args.group_rm` and its reward list (`--eval-reward-key`).
- slime/utils/types.py `Sample` (the fields the reward path reads) and `Sample.get_reward_value`, which slime's
  `_post_process_rewards` (slime/ray/rollout.py) calls for every sample before making a float tensor.
- slime/utils/async_utils.py: every rollout coroutine runs on one background event loop.

A sample's response keeps the end-of-turn marker (slime samples with `no_stop_trim=True`), and its prompt is the
chat-templated text (`--apply-chat-template`).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import random
import sys
import threading
from argparse import Namespace
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from _driver import REFUSED, cases, failure, parse, run, write

SERVER_SIDE = ("service", "torch", "fastapi", "vllm", "redis")


# --- slime/utils/types.py --------------------------------------------------------------------------------------
@dataclass
class Sample:
    group_index: int | None = None
    index: int | None = None
    prompt: str | list[dict[str, str]] = ""
    response: str = ""
    label: str | None = None
    reward: float | dict[str, Any] | None = None
    remove_sample: bool = False
    metadata: dict = field(default_factory=dict)
    custom_rm_path: str | None = None

    def get_reward_value(self, args) -> float:
        return self.reward if not args.reward_key else self.reward[args.reward_key]


# --- slime/utils/misc.py ---------------------------------------------------------------------------------------
@cache
def load_function(path):
    module_path, _, attr = path.rpartition(".")
    module = importlib.import_module(module_path)
    return getattr(module, attr)


# --- slime/utils/async_utils.py --------------------------------------------------------------------------------
class AsyncLoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._start_loop, daemon=True)
        self._thread.start()

    def _start_loop(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


# --- slime/rollout/rm_hub/__init__.py --------------------------------------------------------------------------
_shared_session = None


def _get_shared_session():
    import aiohttp

    global _shared_session
    if _shared_session is None or _shared_session.closed:
        connector = aiohttp.TCPConnector(limit=64, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=120)
        _shared_session = aiohttp.ClientSession(connector=connector, timeout=timeout)
    return _shared_session


async def remote_rm(args, sample: Sample, max_retries: int = 10):
    payload = {"prompt": sample.prompt, "response": sample.response, "label": sample.label}
    session = _get_shared_session()
    for attempt in range(max_retries):
        try:
            async with session.post(args.rm_url, json=payload) as resp:
                resp.raise_for_status()
                return await resp.json()
        except Exception:
            if attempt + 1 >= max_retries:
                raise
            backoff = min(2**attempt, 30) + random.random()
            await asyncio.sleep(backoff)


async def async_rm(args, sample: Sample, **kwargs):
    if sample.custom_rm_path:
        rm_function = load_function(sample.custom_rm_path)
        return await rm_function(args, sample, **kwargs)
    if args.custom_rm_path is not None:
        rm_function = load_function(args.custom_rm_path)
        return await rm_function(args, sample, **kwargs)
    rm_type = (args.rm_type or "").strip()
    if rm_type == "remote_rm":
        return await remote_rm(args, sample)
    raise NotImplementedError(f"Rule-based RM for {rm_type} is not replayed here.")


async def batched_async_rm(args, samples: list[Sample], **kwargs) -> list[int | float]:
    if args.custom_rm_path is not None:
        rm_function = load_function(args.custom_rm_path)
        return await rm_function(args, samples, **kwargs)
    tasks = [async_rm(args, sample, **kwargs) for sample in samples]
    return await asyncio.gather(*tasks)


# --- slime/rollout/sglang_rollout.py: the reward steps -----------------------------------------------------------
async def generate_and_rm(args, sample: Sample) -> Sample:
    if args.group_rm:  # for the rm that need the whole group, we will not do the rm here
        return sample
    if sample.reward is None:
        sample.reward = await async_rm(args, sample)
    return sample


async def generate_and_rm_group(args, group: list[Sample]) -> list[Sample]:
    group = await asyncio.gather(*(generate_and_rm(args, s) for s in group))
    if args.group_rm:
        rewards = await batched_async_rm(args, group)
        for sample, reward in zip(group, rewards, strict=False):
            sample.reward = reward
    return group


async def rollout(args, groups: list[list[Sample]]) -> list[Sample]:
    done = await asyncio.gather(*(generate_and_rm_group(args, g) for g in groups))
    return [s for g in done for s in g]


async def eval_rollout(args, groups: list[list[Sample]]) -> dict[str, Any]:
    assert not args.group_rm, "Group RM is not supported for eval rollout"
    data = await rollout(args, groups)
    reward_key = args.eval_reward_key or args.reward_key
    return {"rewards": [sample.reward if not reward_key else sample.reward[reward_key] for sample in data]}


# --- the driver ------------------------------------------------------------------------------------------------
def samples(items: list[dict[str, Any]], group_size: int = 2) -> list[list[Sample]]:
    """slime's samples of the cases, in groups (`--n-samples-per-prompt 2`)."""
    out = [Sample(group_index=i // group_size, index=i, label=c["ground_truth"], response=c["response"] + "<|im_end|>",
                  prompt=f"<|im_start|>user\n{c['question']}<|im_end|>\n<|im_start|>assistant\n")
           for i, c in enumerate(items)]
    return [out[i:i + group_size] for i in range(0, len(out), group_size)]


def trained(args, groups: list[list[Sample]]) -> dict[str, Any]:
    """A rollout's samples as slime's trainer reads them (`get_reward_value`, made a float tensor)."""
    data = LOOP.run(rollout(args, groups))
    rewards = [s.get_reward_value(args) for s in data]
    return {"raw": [s.reward for s in data], "rewards": [float(r) for r in rewards],
            "numbers": all(isinstance(r, int | float) for r in rewards),
            "removed": [s.remove_sample for s in data]}


def attempt(fn: Any) -> Any:
    try:
        return {"result": fn()}
    except BaseException as exc:
        return {"error": failure(exc)}


def custom_rm(args: Namespace, items: list[dict[str, Any]]) -> dict[str, Any]:
    """`--custom-rm-path clients.adapters.slime.reward`, as each shape and key set calls it."""
    base = {"custom_rm_path": "clients.adapters.slime.reward", "rm_type": None, "medix_url": args.url,
            "eval_reward_key": None}
    out: dict[str, Any] = {}
    for name, extra in (("sample", {"group_rm": False, "reward_key": None}),
                        ("sample_key", {"group_rm": False, "reward_key": "reward"}),
                        ("group", {"group_rm": True, "reward_key": None}),
                        ("group_key", {"group_rm": True, "reward_key": "reward"})):
        out[name] = trained(Namespace(**base, **extra), samples(items))
    out["eval_group"] = attempt(lambda: LOOP.run(eval_rollout(Namespace(**base, group_rm=True, reward_key=None),
                                                              samples(items))))
    out["eval"] = LOOP.run(eval_rollout(Namespace(**{**base, "eval_reward_key": "accuracy_llm"}, group_rm=False,
                                                  reward_key="reward"), samples(items)))
    down = {**base, "medix_url": args.down_url, "medix_retries": 0, "reward_key": None}
    out["outage_sample"] = attempt(lambda: trained(Namespace(**down, group_rm=False), samples(items[:1])))
    out["outage_group"] = attempt(lambda: trained(Namespace(**down, group_rm=True), samples(items[:2])))
    refused = [items[0], REFUSED]
    out["refused"] = attempt(lambda: trained(Namespace(**base, group_rm=True, reward_key=None), samples(refused)))
    out["refused_skip"] = trained(Namespace(**base, group_rm=False, reward_key="reward", medix_on_refused="skip",
                                            medix_refused_reward=-1.0), samples(refused))
    return out


def remote(args: Namespace, items: list[dict[str, Any]]) -> dict[str, Any]:
    """`--rm-type remote_rm --rm-url URL/rm --reward-key reward`: slime posts to the service itself."""
    base = {"custom_rm_path": None, "rm_type": "remote_rm", "rm_url": f"{args.url}/rm", "group_rm": False,
            "eval_reward_key": None}
    out = {"rm": trained(Namespace(**base, reward_key="reward"), samples(items)),
           "profile": trained(Namespace(**{**base, "rm_url": f"{args.url}/rm?profile=medix-r1"}, reward_key="reward"),
                              samples(items[:1]))}
    out["no_reward_key"] = attempt(lambda: trained(Namespace(**base, reward_key=None), samples(items[:1])))
    # slime's own retries, cut to 2 attempts here (10 by default: about 2.5 minutes of back-off before it raises).
    down = Namespace(**{**base, "rm_url": f"{args.down_url}/rm"}, reward_key="reward")
    out["outage"] = attempt(lambda: LOOP.run(remote_rm(down, samples(items[:1])[0][0], max_retries=2)))
    rm = Namespace(**base, reward_key="reward")
    out["refused"] = attempt(lambda: LOOP.run(remote_rm(rm, samples([REFUSED])[0][0], max_retries=2)))
    if _shared_session is not None:
        LOOP.run(_shared_session.close())
    return out


LOOP = AsyncLoopThread()


def main() -> None:
    args = parse()
    items = cases(args)
    report: dict[str, Any] = {"modules": sorted(m for m in sys.modules if m.split(".")[0] in SERVER_SIDE)}
    report["custom_rm"] = custom_rm(args, items)
    report["adapter"] = sys.modules["clients.adapters.slime"].__file__
    report["aiohttp"] = importlib.util.find_spec("aiohttp") is not None
    if report["aiohttp"]:
        report["remote_rm"] = remote(args, items)
    report["modules_after"] = sorted(m for m in sys.modules if m.split(".")[0] in SERVER_SIDE)
    write(args, report)


if __name__ == "__main__":
    run(main)
