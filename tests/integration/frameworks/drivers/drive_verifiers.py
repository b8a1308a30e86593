"""verifiers 0.4.0's own v1 code driving clients/adapters/verifiers.py (run by .venvs/verifiers).

- The run config is parsed by verifiers' own CLI parser, as `vf-eval` parses it (`narrow_config(EvalConfig)` and
  prime-pydantic-config's `cli`): `--env.taskset.id medix-slake` resolves the example taskset package
  (clients/examples/medix_slake, put on sys.path as if installed) and its `medix-*` task options.
- Tasks come from `vf.load_taskset` and iteration (which sets each task's `idx`); each case becomes a trace as a
  rollout leaves it (`Trace(task=TraceTask(...))`, the prompt and the sampled assistant reply as message nodes).
- Scoring is verifiers' own `Task.score` (hook discovery, seeding, `@vf.reward` weights, plugged rewards from the
  task config), inside the `boundary(TaskError, "scoring")` that `Rollout.close` wraps it in; a failure is captured
  the way `Rollout.close` captures it (`trace.record_error`).
- The plugged line `--env.taskset.task.rewards.medix.fn clients.adapters.verifiers:medix_reward` replaces the
  taskset's decorated `medix` with the plugged function, which reads MEDIX_URL.
- With `--nemo-gym` (a JSON object of resources-server URLs, started by drive_nemo_gym.py), verifiers' own NeMo Gym
  taskset task (`verifiers.v1.tasksets.nemo_gym`) scores the cases through our NeMo Gym server's /verify instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from _driver import ADAPTERS, REFUSED, cases, failure, parse, run, write

EXAMPLE = ADAPTERS.parent / "examples" / "medix_slake"


def eval_config(argv: list[str]) -> Any:
    """The run config exactly as `vf-eval <argv>` resolves it (without running a model)."""
    from pydantic_config import cli
    from verifiers.v1.cli.resolve import narrow_config, with_positional_taskset
    from verifiers.v1.configs.cli.eval import EvalConfig

    argv = with_positional_taskset(list(argv))
    saved = sys.argv
    sys.argv = ["vf-eval", *argv]
    try:
        return cli(narrow_config(EvalConfig, argv))
    finally:
        sys.argv = saved


def rollout_trace(task: Any, response: str) -> Any:
    """A trace as a one-turn rollout leaves it: the task, the prompt and the sampled assistant reply."""
    import verifiers.v1 as vf
    from verifiers.v1.state import state_cls
    from verifiers.v1.trace import AgentInfo, TraceTask

    trace = vf.Trace(task=TraceTask(type=type(task).__name__, data=task.data, key=task.key, hash=task.hash),
                     state=state_cls(type(task))(), agent=AgentInfo(config=vf.AgentConfig()))
    trace.nodes.append(vf.MessageNode(message=vf.UserMessage(content=task.data.prompt_text or "question")))
    trace.nodes.append(vf.MessageNode(parent=0, message=vf.AssistantMessage(content=response), sampled=True))
    return trace


async def score(task: Any, trace: Any) -> dict[str, Any]:
    """Rollout.close's scoring step (without a runtime): Task.score under the scoring boundary, failures recorded."""
    from verifiers.v1.errors import TaskError, boundary

    error = None
    try:
        async with boundary(TaskError, "scoring"):
            await task.score(trace)
        trace.ok = True
    except Exception as exc:  # what Rollout.close does with it: self.fail(e) -> trace.record_error(e)
        error = failure(exc)
        trace.record_error(exc)
        trace.ok = False
    rewards = {k: (None if r is None else {"score": r.score, "weight": r.weight, "value": r.value})
               for k, r in trace.rewards.items()}
    return {"rewards": rewards, "reward": trace.reward, "metrics": dict(trace.metrics), "ok": trace.ok,
            "has_error": trace.has_error, "stop_condition": trace.stop_condition, "error": error,
            "error_types": [e.type for e in trace.errors], "info": trace.info.get("nemo_gym")}


async def score_cases(taskset: Any, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tasks = list(taskset)
    assert len(tasks) == len(items), (len(tasks), len(items))
    return [await score(task, rollout_trace(task, c["response"])) for task, c in zip(tasks, items, strict=True)]


def load(argv: list[str]) -> tuple[Any, Any]:
    import verifiers.v1 as vf

    config = eval_config(argv)
    return config, vf.load_taskset(config.env.taskset)


async def taskset_part(args: Any, items: list[dict[str, Any]], data: Path) -> dict[str, Any]:
    from clients.datasets import SLAKE, read_jsonl

    report: dict[str, Any] = {}
    base = ["--env.taskset.id", "medix-slake", "--env.taskset.dataset", str(data)]
    config, taskset = load([*base, "--env.taskset.task.medix-url", args.url])
    report["taskset_class"] = f"{type(taskset).__module__}.{type(taskset).__name__}"
    report["task_config"] = type(config.env.taskset.task).__name__
    report["task_class"] = type(taskset).task_type().__name__
    report["scored"] = await score_cases(taskset, items)

    # The bundled SLAKE questions: the default dataset.
    _, slake = load(["--env.taskset.id", "medix-slake"])
    slake_tasks = list(slake)
    first = slake_tasks[0].data
    report["slake"] = {"tasks": len(slake_tasks), "rows": sum(1 for _ in read_jsonl(SLAKE)),
                       "first": {"answer": first.answer, "modality": first.modality, "question": first.question,
                                 "prompt": first.prompt_text, "system_prompt": bool(first.system_prompt),
                                 "idx": first.idx, "name": first.name},
                       "first_row": next(read_jsonl(SLAKE))}

    # The one line on the task config: a plugged reward named like the decorated one replaces it.
    os.environ["MEDIX_URL"] = args.url
    _, plugged = load([*base, "--env.taskset.task.rewards.medix.fn", "clients.adapters.verifiers:medix_reward"])
    hooks = next(iter(plugged)).hooks("reward")
    report["plugged_hooks"] = [(h.__name__, getattr(h, "__wrapped__", h).__module__) for h in hooks]
    report["plugged"] = await score_cases(plugged, items)
    del os.environ["MEDIX_URL"]

    # An outage: the service's address answers nothing (no retries, to keep the test short).
    _, down = load([*base, "--env.taskset.task.medix-url", args.down_url, "--env.taskset.task.medix-retries", "0"])
    report["outage"] = (await score_cases(down, items))[0]

    # An item the service refuses: raised by default, or scored `refused_reward` with `medix_refused` 1.0.
    refused = data.with_name("refused.jsonl")
    refused.write_text(json.dumps(REFUSED) + "\n" + json.dumps(items[0]) + "\n")
    rbase = ["--env.taskset.id", "medix-slake", "--env.taskset.dataset", str(refused),
             "--env.taskset.task.medix-url", args.url]
    report["refused_raise"] = await score_cases(load(rbase)[1], [REFUSED, items[0]])
    report["refused_skip"] = await score_cases(
        load([*rbase, "--env.taskset.task.medix-on-refused", "skip", "--env.taskset.task.medix-refused-reward",
              "0.25"])[1], [REFUSED, items[0]])
    report["version"] = metadata.version("verifiers")
    return report


async def nemo_gym_part(urls: dict[str, str], items: list[dict[str, Any]]) -> dict[str, Any]:
    """verifiers' own NeMo Gym taskset task, scoring the cases through our resources server's /verify."""
    from verifiers.v1.tasksets.nemo_gym.taskset import NeMoGymData, NeMoGymTask, NeMoGymTaskConfig

    def task(i: int, c: dict[str, Any], url: str) -> Any:
        row = {"responses_create_params": {"input": [{"role": "user", "content": c["question"]}]},
               "ground_truth": c["ground_truth"]}
        config = NeMoGymTaskConfig(resources_url=url)
        t = NeMoGymTask(NeMoGymData(name=f"cases:{i}", prompt=[{"role": "user", "content": c["question"]}],
                                    row=row), config)
        return t.with_data(idx=i)

    async def score_all(url: str, subset: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for i, c in enumerate(subset):
            t = task(i, c, url)
            trace = rollout_trace(t, c["response"])
            await t.setup(trace, None)  # NeMo Gym's /seed_session, as the rollout's setup stage calls it
            out.append(await score(t, trace))
        return out

    return {"scored": await score_all(urls["mask"], items),
            "outage_mask": (await score_all(urls["mask_down"], items[:1]))[0],
            "outage_error": (await score_all(urls["error_down"], items[:1]))[0]}


def main() -> None:
    args = parse([("--nemo-gym", {"default": None, "help": "JSON: resources-server URLs (drive_nemo_gym.py)"})])
    items = cases(args)
    sys.path.insert(0, str(EXAMPLE))  # the example taskset package, as if pip-installed
    if args.nemo_gym:
        write(args, asyncio.run(nemo_gym_part(json.loads(args.nemo_gym), items)))
        return
    data = args.out.with_name("verifiers_cases.jsonl")
    data.write_text("".join(json.dumps(c) + "\n" for c in items))
    write(args, asyncio.run(taskset_part(args, items, data)))


if __name__ == "__main__":
    run(main)
