"""NeMo Gym 0.7.0's own server code running clients/adapters/nemo_gym.py (run by .venvs/nemo-gym).

- The adapter file is copied to `resources_servers/medix/app.py` with a `configs/medix.yaml` (the one file and the
  config the docs show); NeMo Gym's own parser (`GlobalConfigDictParser`, what `gym env start` runs) resolves the
  config, and each server instance is started as `gym env start` starts it: `python app.py` in the server's folder
  with NEMO_GYM_CONFIG_DICT and NEMO_GYM_CONFIG_PATH, so `SimpleServer.run_webserver` builds it (judge_failsafe,
  middlewares, uvicorn). Four instances: the live service, the live service with `on_failure: error`, and an
  address where nothing answers, masked and as errors.
- Each case is posted to `/verify` as NeMo Gym's simple agent posts it (the row's fields plus the policy's
  `response`), through NeMo Gym's own `ServerClient`; the reply is read back with NeMo Gym's `BaseVerifyResponse`.
- The replies go through the server's `/aggregate_metrics` (NeMo Gym's reward profiler) to show a masked sample
  kept out of the mean reward.
- When the verifiers environment exists beside this one, drive_verifiers.py --nemo-gym runs verifiers' own NeMo Gym
  taskset task against the same servers.

nemo_gym puts its install root (here the overlay's site-packages) after every other sys.path entry when imported,
so the project venv's newer openai would shadow the one NeMo Gym pins; NEMO_GYM_EXTRA_ROOTS (NeMo Gym's own search
roots, which go first) names the overlay's site-packages to keep it in front, here and in the servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

from _driver import ADAPTERS, REFUSED, cases, failure, parse, run, write

os.environ["NEMO_GYM_EXTRA_ROOTS"] = sysconfig.get_path("purelib")
INSTANCES = {  # top-level name -> the medix-* fields of its config block
    "medix": {"on_failure": "mask"},
    "medix_error": {"on_failure": "error"},
    "medix_down": {"on_failure": "mask", "down": True},
    "medix_error_down": {"on_failure": "error", "down": True},
}


def server_folder(root: Path, url: str, down_url: str) -> Path:
    folder = root / "resources_servers" / "medix"
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    shutil.copy(ADAPTERS / "nemo_gym.py", folder / "app.py")
    (folder / "requirements.txt").write_text("medix-client\n")
    lines = []
    for name, opts in INSTANCES.items():
        lines += [f"{name}:", "  resources_servers:", "    medix:", "      entrypoint: app.py",
                  "      domain: knowledge", f"      medix_url: {down_url if opts.get('down') else url}",
                  f"      on_failure: {opts['on_failure']}"]
        if opts.get("down"):
            lines.append("      medix_retries: 0")
    (folder / "configs" / "medix.yaml").write_text("\n".join(lines) + "\n")
    return folder


def global_config(root: Path) -> Any:
    from nemo_gym.global_config import GlobalConfigDictParser, GlobalConfigDictParserConfig
    from omegaconf import DictConfig, OmegaConf

    os.chdir(root)
    parse_config = GlobalConfigDictParserConfig(
        initial_global_config_dict=DictConfig({"config_paths": ["resources_servers/medix/configs/medix.yaml"],
                                               **GlobalConfigDictParserConfig.NO_MODEL_GLOBAL_CONFIG_DICT}),
        skip_load_from_cli=True, skip_load_from_dotenv=True)
    config = GlobalConfigDictParser().parse(parse_config)
    # This process's own NeMo Gym calls (ServerClient) read the config as a spawned server does, not from argv.
    os.environ["NEMO_GYM_CONFIG_DICT"] = OmegaConf.to_yaml(config)
    return config


def start(folder: Path, config: Any, logs: Path) -> tuple[dict[str, str], list[subprocess.Popen]]:
    from omegaconf import OmegaConf

    yaml = OmegaConf.to_yaml(config)
    urls, procs = {}, []
    for name in INSTANCES:
        block = config[name]["resources_servers"]["medix"]
        urls[name] = f"http://{block['host']}:{block['port']}"
        env = {**os.environ, "NEMO_GYM_CONFIG_DICT": yaml, "NEMO_GYM_CONFIG_PATH": name}  # as `gym env start` does
        log = (logs / f"{name}.log").open("w")
        procs.append(subprocess.Popen([sys.executable, "app.py"], cwd=folder, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
    deadline = time.time() + 180
    for name, url in urls.items():
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2).read()
                break
            except OSError as exc:
                if time.time() > deadline or any(p.poll() is not None for p in procs):
                    log = (logs / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"{name} did not start:\n{log}") from exc
                time.sleep(0.5)
    return urls, procs


def verify_body(case: dict[str, Any]) -> dict[str, Any]:
    """The simple agent's verify payload: the row (responses_create_params and the reference) plus the response."""
    from nemo_gym.base_resources_server import BaseRunRequest

    row = {"responses_create_params": {"input": [{"role": "user", "content": case["question"]}]},
           "ground_truth": case["ground_truth"]}
    BaseRunRequest.model_validate(row)  # what the agent's /run accepts
    response = {"id": "resp_0", "created_at": 0.0, "model": "policy", "object": "response",
                "parallel_tool_calls": False, "tool_choice": "auto", "tools": [],
                "output": [{"id": "msg_0", "type": "message", "role": "assistant", "status": "completed",
                            "content": [{"type": "output_text", "text": case["response"], "annotations": []}]}]}
    return row | {"response": response}


async def post_all(config: Any, urls: dict[str, str], items: list[dict[str, Any]]) -> dict[str, Any]:
    from nemo_gym.base_resources_server import BaseVerifyResponse
    from nemo_gym.config_types import BaseServerConfig
    from nemo_gym.server_utils import ServerClient, get_response_json

    client = ServerClient(head_server_config=BaseServerConfig.model_validate(config["head_server"]),
                          global_config_dict=config)

    async def verify(server: str, case: dict[str, Any]) -> dict[str, Any]:
        resp = await client.post(server_name=server, url_path="/verify", json=verify_body(case))
        body = await get_response_json(resp)
        out: dict[str, Any] = {"status": resp.status}
        if resp.status == 200:
            parsed = BaseVerifyResponse.model_validate(body)  # NeMo Gym's own reply model
            out |= {"reward": parsed.reward, "mask_sample": parsed.mask_sample, "failure_kind": parsed.failure_kind,
                    "failure_reason": parsed.failure_reason,
                    **{k: v for k, v in body.items() if k.startswith(("medix_", "reward_components", "_ng_"))}}
        else:
            out["body"] = str(body)[:1000]
        return out

    report: dict[str, Any] = {"scored": [await verify("medix", c) for c in items],
                              "scored_error_mode": [await verify("medix_error", c) for c in items],
                              "outage_mask": await verify("medix_down", items[0]),
                              "outage_error": await verify("medix_error_down", items[0]),
                              "refused_mask": await verify("medix", REFUSED),
                              "refused_error": await verify("medix_error", REFUSED)}
    # NeMo Gym's reward profiler over the scored replies and the masked outage: the mean reward is the scored one.
    rows = [{"_ng_task_index": i, "_ng_rollout_index": 0, "reward": r["reward"], "mask_sample": r["mask_sample"]}
            for i, r in enumerate([*report["scored"], report["outage_mask"]])]
    resp = await client.post(server_name="medix", url_path="/aggregate_metrics", json={"verify_responses": rows})
    report["aggregate"] = (await get_response_json(resp)).get("agent_metrics")
    return report


def verifiers_taskset(args: Any, urls: dict[str, str], logs: Path) -> dict[str, Any] | str:
    python = Path(sys.executable).parents[2] / "verifiers" / "bin" / "python"
    if not python.exists():
        return "no verifiers environment beside this one"
    out = logs / "verifiers_nemo_gym.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMO_GYM_")}
    done = subprocess.run([str(python), str(Path(__file__).with_name("drive_verifiers.py")), "--url", args.url,
                           "--down-url", args.down_url, "--cases", str(args.cases), "--out", str(out),
                           "--nemo-gym", json.dumps({"mask": urls["medix"], "mask_down": urls["medix_down"],
                                                     "error_down": urls["medix_error_down"]})],
                          env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        return f"drive_verifiers.py --nemo-gym failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return json.loads(out.read_text())


def main() -> None:
    args = parse()
    items = cases(args)
    root = args.out.parent / "gym"
    logs = args.out.parent
    folder = server_folder(root, args.url, args.down_url)
    config = global_config(root)
    report: dict[str, Any] = {"version": metadata.version("nemo-gym"),
                              "openai": metadata.version("openai")}
    urls, procs = start(folder, config, logs)
    try:
        report |= asyncio.run(post_all(config, urls, items))
        report["verifiers_taskset"] = verifiers_taskset(args, urls, logs)
    except Exception as exc:
        report["error"] = failure(exc)
        raise
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        report["logs"] = {name: (logs / f"{name}.log").read_text()[-1500:] for name in INSTANCES}
    import openai

    report["openai_loaded"] = openai.__version__
    write(args, report)


if __name__ == "__main__":
    run(main)
