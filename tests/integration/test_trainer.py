"""GRPO end to end: TRL's real GRPOTrainer on the local model, rewards from the real service over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.stack import DATA, metric

pytestmark = pytest.mark.integration
TRAIN_BIN = str(Path(sys.executable).parent / "medix-train")


def test_grpo_smoke_run_every_completion_scored_and_logged(service, tmp_path):
    before = metric(service.url, "medix_items_total", {"route": "/reward"})
    out = tmp_path / "run"
    steps, batch = 2, 4
    proc = subprocess.run(
        [TRAIN_BIN, "--data", str(DATA / "slake_en_test.jsonl"), "--reward-url", service.url, "--max-steps",
         str(steps), "--batch-size", str(batch), "--num-generations", "4", "--max-completion-length", "32",
         "--output-dir", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [json.loads(line) for line in (out / "log_history.jsonl").read_text().splitlines()]
    step_logs = [entry for entry in logs if "reward" in entry]
    calls = [json.loads(line) for line in (out / "medix_rewards.jsonl").read_text().splitlines()]

    # The service received every completion of every step, one request per generation batch.
    assert len(calls) == steps and all(len(c["rewards"]) == batch for c in calls)
    assert metric(service.url, "medix_items_total", {"route": "/reward"}) - before == steps * batch
    # The reward TRL logged is the mean of what the service returned; components are logged beside it.
    assert len(step_logs) == steps
    for entry, call in zip(step_logs, calls, strict=True):
        assert entry["reward"] == pytest.approx(sum(call["rewards"]) / batch, abs=1e-5)
        for name in ("format", "accuracy_llm", "accuracy_embed", "modality"):
            assert entry[f"medix/{name}"] == pytest.approx(call[name], abs=1e-5)
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
