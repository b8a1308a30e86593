"""OpenRLHF 0.11.2 and 0.11.0 drive our service and reward file (run by .venvs/openrlhf or .venvs/openrlhf-0.11.0;
see envs.sh).

OpenRLHF's own `SingleTurnAgentExecutor` (openrlhf.utils.agent) generates with a stand-in engine that returns
the case's response tokens, decodes prompt + response into the query exactly as it does in training, and fetches
the reward the two ways `--reward.remote_url` allows:
- `http://…/get_reward`: its own aiohttp client posting to the service;
- `clients/adapters/openrlhf.py`: the reward file, loaded by its own loader.
Each output then goes through OpenRLHF's `_process_response_into_experience` (where `extra_logs` become tensors)
and the experiences through its batching and per-sample split, as in training. Prompts are run whole and
left-truncated (OpenRLHF's max_len budget). Outages: the HTTP path and the reward file pointed at an address
where nothing answers; the reward must stay None, and the file's real error must reach OpenRLHF's log.

Several URLs (`--reward.remote_url A,B`, split on commas as OpenRLHF's CLI does): 0.10.2-0.11.0 send the one-sample
list to A and empty lists to B, 0.11.2 rotates the URLs; the lists each URL got are recorded. A refused item (an
answer longer than the judge's context): the reward stays None by default; with `?on_refused=skip` (the URL) or a
wrapper file passing `on_refused="skip"` (the file) it is the chosen reward, with `medix_refused` in the logs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import types
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from _driver import ADAPTERS, REFUSED, cases, number, parse, run, write

WRAPPER = """from clients.adapters import openrlhf as medix


def reward_func(queries, prompts, labels):
    return medix.reward_func(queries, prompts, labels, on_refused="skip", refused_reward=0.5)
"""


def stub(name: str, **attrs: Any) -> None:
    """A module samples_generator imports at its top and never uses on the path driven here (Ray, vLLM)."""
    if name not in sys.modules:
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module


class Engine:
    """Stands in for OpenRLHF's vLLM engine: 'generates' the cases' response tokens, in the order asked."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.queue, self.seen = tokenizer, [], []

    async def generate(self, prompt_token_ids: list[int], sampling_params: Any, multi_modal_data: Any = None) -> Any:
        self.seen.append(list(prompt_token_ids))
        ids = self.queue.pop(0)
        out = SimpleNamespace(token_ids=ids, text=self.tokenizer.decode(ids), finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[out])


def main() -> None:
    args = parse()
    stub("ray")
    stub("vllm", SamplingParams=object)
    stub("openrlhf.trainer.ray", __path__=[])
    stub("openrlhf.trainer.ray.vllm_engine", batch_vllm_engine_call=None)
    import aiohttp
    from openrlhf.trainer.ppo_utils.experience import make_experience_batch, split_experience_batch
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from transformers import AutoTokenizer

    posted: list[tuple[str, int]] = []  # (URL, length of the query list) of every POST OpenRLHF makes
    post = aiohttp.ClientSession.post

    def recording_post(self: Any, url: Any, **kwargs: Any) -> Any:
        posted.append((str(url), len((kwargs.get("json") or {}).get("query", []))))
        return post(self, url, **kwargs)

    aiohttp.ClientSession.post = recording_post  # type: ignore[method-assign]

    logged: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("openrlhf.utils.agent").addHandler(handler)

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    items = cases(args)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": c["question"]}], tokenize=False,
                                             add_generation_prompt=True) for c in items]
    response_ids = [tokenizer(text=c["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
                    for c in items]
    engine = Engine(tokenizer)

    def execute(executor: Any, max_len: int, max_tokens: int | None, n: int | None = None,
                batch: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        todo = list(zip(prompts, items, response_ids, strict=True))[:n]
        if batch is not None:
            todo = [(tokenizer.apply_chat_template([{"role": "user", "content": c["question"]}], tokenize=False,
                                                   add_generation_prompt=True), c,
                     tokenizer(text=c["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
                    for c in batch]

        async def go() -> list[dict[str, Any]]:
            params = SimpleNamespace(max_tokens=max_tokens, logprobs=None)
            outputs = []
            for p, c, ids in todo:  # one sample per call
                engine.queue.append(ids)
                outputs.append(await executor.execute(p, c["ground_truth"], params, max_len, tokenizer, engine))
            return outputs
        return asyncio.run(go())

    def experiences(outputs: list[dict[str, Any]], max_len: int) -> dict[str, Any]:
        exps = [SamplesGenerator._process_response_into_experience(None, o, max_len=max_len) for o in outputs]
        split = split_experience_batch(make_experience_batch(exps))
        return {
            "rewards": [None if e.rewards is None else number(e.rewards.flatten()[0]) for e in exps],
            "info": {k: [number(e.info[k].flatten()[0]) for e in split] for k in sorted(exps[0].info)
                     if k not in ("response_clip_ratio",)},
            "queries": [tokenizer.decode(o["observation_tokens"], skip_special_tokens=False) for o in outputs],
        }

    report: dict[str, Any] = {"openrlhf": metadata.version("openrlhf"), "prompts": prompts}
    reward_file = str(ADAPTERS / "openrlhf.py")
    os.environ["MEDIX_URL"] = args.url
    longest = max(len(tokenizer(text=p, add_special_tokens=False)["input_ids"]) for p in prompts)
    for name, remote in (("http", f"{args.url}/get_reward"), ("file", reward_file)):
        executor = SingleTurnAgentExecutor(remote)
        if name == "file":
            assert executor.reward_func is not None and executor.reward_func.__module__ == "reward_func"
        report[name] = experiences(execute(executor, 2048, None), 2048)
        # The prompt cut from the left to 12 tokens: OpenRLHF's budget max_len = kept prompt + max_tokens.
        report[f"{name}_truncated"] = experiences(execute(executor, 12 + 64, 64), 12 + 64)
        assert all(len(seen) == 12 for seen in engine.seen[-len(items):]) and longest > 12
    report["logged_before_outage"] = list(logged)

    # Several reward URLs, as OpenRLHF's CLI splits `--reward.remote_url A,B` (both are the service here).
    urls = f"{args.url}/get_reward,{args.url}/get_reward?replica=2".split(",")
    posted.clear()
    report["several_urls"] = experiences(execute(SingleTurnAgentExecutor(urls), 2048, None), 2048)
    report["several_urls"]["posted"] = [[urls.index(u), n] for u, n in posted]

    # A refused item: None by default (OpenRLHF stops on it), the chosen reward when the user opts to go on.
    (Path.cwd() / "medix_skip.py").write_text(WRAPPER)
    mixed = [items[0], REFUSED]
    for name, remote in (("http", f"{args.url}/get_reward"), ("file", reward_file),
                         ("http_skip", f"{args.url}/get_reward?on_refused=skip&refused_reward=0.5"),
                         ("file_skip", str(Path.cwd() / "medix_skip.py"))):
        logged.clear()
        out = execute(SingleTurnAgentExecutor(remote), 100_000, None, batch=mixed)
        got: dict[str, Any] = {"rewards": [o["reward"] for o in out], "logged": list(logged)}
        if name.endswith("skip"):
            got.update(experiences(out, 100_000))
        report[f"refused_{name}"] = got

    os.environ["MEDIX_URL"] = args.down_url
    for name, remote in (("http", f"{args.down_url}/get_reward"), ("file", reward_file)):
        logged.clear()
        out = execute(SingleTurnAgentExecutor(remote), 2048, None, n=1)
        report[f"{name}_outage"] = {"rewards": [o["reward"] for o in out], "scores": [o["scores"] for o in out],
                                    "experience_rewards": experiences(out, 2048)["rewards"], "logged": list(logged)}
    write(args, report)


if __name__ == "__main__":
    run(main)
