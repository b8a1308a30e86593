"""EasyR1's reward loading replayed on clients/adapters/easyr1.py, in an environment holding medix-client alone
(drivers/drive_easyr1.py); and the client package installs and imports without the server."""

from __future__ import annotations

import json
import subprocess

import pytest

from clients.contract import COMPONENTS, REFUSED_KEY, SCORE_KEYS
from tests.integration.frameworks.conftest import logged

pytestmark = pytest.mark.integration
CLIENT_MODULES = ["clients", "clients.client", "clients.contract", "clients.datasets", "clients.evaluation",
                  "clients.judge_cli", "clients.adapters.common", "clients.adapters.trl", "clients.adapters.verl",
                  "clients.adapters.easyr1", "clients.adapters.openrlhf"]
SERVER_SIDE = ("service", "torch", "fastapi", "uvicorn", "vllm", "redis", "transformers", "sentence_transformers")


def test_easyr1_reward_file(drive, reference):
    report = drive("client", "drive_easyr1.py")
    ref = reference()  # EasyR1 sends the response and the ground truth only
    assert (report["reward_type"], report["reward_name"]) == ("batch", "medix")
    for name in ("main", "compute_score"):
        got = report[name]
        assert got["rewards"] == pytest.approx([r["overall"] for r in ref], abs=1e-9), name
        assert list(got["metrics"]) == list(SCORE_KEYS)  # every key a number: EasyR1 averages them all
        for component in COMPONENTS:
            assert got["metrics"][component] == pytest.approx(logged(ref, component), abs=1e-9)
    assert report["default_name"] == report["main"]["rewards"]  # `path` alone means `path:main`
    assert report["outage"].startswith("MedixUnavailable"), report["outage"]
    assert report["modules"] == report["modules_after"] == []
    # A refused item raises by default; opted in, the chosen reward, and EasyR1's logs average medix_refused.
    assert report["refused"].startswith("ItemFailed") and "reward_inputs[1]" in report["refused"]
    skip = report["refused_skip"]
    assert skip["rewards"] == pytest.approx([ref[0]["overall"], 0.5], abs=1e-9)
    assert list(skip["metrics"]) == [*SCORE_KEYS, REFUSED_KEY] and skip["means"][REFUSED_KEY] == 0.5


def test_the_client_package_installs_and_imports_alone(framework_env, tmp_path):
    python = framework_env("client")  # a fresh venv with `pip install ./clients` and nothing else
    code = ("import importlib, json, sys; mods = " + json.dumps(CLIENT_MODULES) + "; [importlib.import_module(m) "
            "for m in mods]; import clients; print(json.dumps({'file': clients.__file__, 'loaded': sorted(m for m "
            "in sys.modules if m.split('.')[0] in " + repr(SERVER_SIDE) + ")}))")
    out = subprocess.run([str(python), "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "/.venvs/client/" in got["file"] and got["loaded"] == []
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    cli = subprocess.run([str(python.parent / "medix-judge"), "--help"], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "compare" in cli.stdout, cli.stderr[-2000:]
