"""Each trainer framework, installed from PyPI in its own environment (drivers/envs.sh), drives our
adapters through its own reward code against the real stack (the session's `service`); the scores it ends up
holding must be the ones /reward returns for the same items, and an outage must surface as an exception or
TRL's None, never as a 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clients.client import MedixClient
from clients.contract import COMPONENTS
from tests.integration.stack import ROOT, free_port

FRAMEWORKS = Path(__file__).resolve().parent / "drivers"
ENVS = ROOT / ".venvs"

# Cases every framework scores: a right answer, a wrong one, an untagged label (null modality, 0 in the logs),
# and a response without the method's format.
CASES = [
    {"question": "Which disease is shown in this chest X-ray?", "ground_truth": "<X_RAY>Pneumonia",
     "response": "<X_RAY><thinking>Consolidation in the right lower lobe.</thinking><answer>Pneumonia</answer>"},
    {"question": "Which disease does this chest radiograph show?", "ground_truth": "<X_RAY>Pneumonia",
     "response": "<X_RAY><thinking>The heart looks large.</thinking><answer>Cardiomegaly</answer>"},
    {"question": "Which organ is enlarged?", "ground_truth": "Liver",
     "response": "<CT_SCAN><thinking>The organ on the right is large.</thinking><answer>Liver</answer>"},
    {"question": "Is this an MRI?", "ground_truth": "<MRI_SCAN>Yes", "response": "Yes"},
]


@pytest.fixture(scope="session")
def framework_env() -> Callable[[str], Path]:
    """`framework_env(name)`: that framework's environment, built (or found current) by envs.sh; its python."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            proc = subprocess.run(["bash", str(FRAMEWORKS / "envs.sh"), name], capture_output=True, text=True,
                                  timeout=1800)
            assert proc.returncode == 0, f"envs.sh {name} failed:\n{proc.stderr[-4000:]}"
            built[name] = ENVS / name / "bin" / "python"
        return built[name]

    return get


@pytest.fixture(scope="session")
def tokenizer_dir() -> str:
    """The local SmolLM2 folder (tokenizer with a chat template, and the policy TRL loads)."""
    exe = str(Path(sys.executable).parent / "medix-reward")
    done = subprocess.run([exe, "models", "prepare"], capture_output=True, text=True, check=True, timeout=600)
    return json.loads(done.stdout.strip().splitlines()[-1])["judge"]


@pytest.fixture
def drive(service, framework_env, tokenizer_dir, tmp_path) -> Callable[..., dict[str, Any]]:
    """`drive(env, driver)`: run drivers/<driver> in that environment against the live service (and an
    address where nothing answers, for the outage), from an empty folder and without MEDIX_* or PYTHONPATH, so
    everything it imports comes from the framework's environment; returns its report."""

    def run(env: str, driver: str, timeout: float = 900) -> dict[str, Any]:
        python = framework_env(env)
        (tmp_path / "cases.json").write_text(json.dumps(CASES))
        out = tmp_path / f"{driver}.json"
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("MEDIX_", "PYTHONPATH", "VIRTUAL_ENV", "RAY_"))}
        cwd = tmp_path / "cwd"
        cwd.mkdir(exist_ok=True)
        proc = subprocess.run(
            [str(python), str(FRAMEWORKS / driver), "--url", service.url, "--down-url",
             f"http://127.0.0.1:{free_port()}", "--cases", str(tmp_path / "cases.json"), "--out", str(out),
             "--tokenizer", tokenizer_dir],
            cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{driver} in {env} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        return json.loads(out.read_text())

    return run


@pytest.fixture
def reference(service) -> Callable[..., list[dict[str, float | None]]]:
    """`reference(question=False)`: /reward's own results for CASES, sent as the adapter sends them."""

    def get(question: bool = False) -> list[dict[str, float | None]]:
        items = [{"id": str(i), "response": c["response"], "ground_truth": c["ground_truth"],
                  **({"question": c["question"]} if question else {})} for i, c in enumerate(CASES)]
        with MedixClient(service.url) as client:
            results = client.reward(items)
        assert all(r.overall is not None for r in results)
        return [{"overall": r.overall, **{name: getattr(r, name) for name in COMPONENTS}} for r in results]

    return get


def logged(ref: list[dict[str, float | None]], name: str) -> list[float]:
    """A component as a framework logs it: numbers only, a null modality as 0."""
    return [0.0 if r[name] is None else r[name] for r in ref]
