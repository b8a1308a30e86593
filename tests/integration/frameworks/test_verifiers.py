"""verifiers 0.4.0's own v1 code scores traces with clients/adapters/verifiers.py (drivers/drive_verifiers.py): the
run config parsed as `vf-eval` parses it, the example taskset package `medix-slake`, `Task.score` under the scoring
boundary of `Rollout.close`; the plugged one-line form; an outage and a refused item recorded as task errors."""

from __future__ import annotations

import pytest

from clients.contract import COMPONENTS, REFUSED_KEY
from tests.integration.frameworks.conftest import CASES, logged

pytestmark = pytest.mark.integration
METRICS = [f"medix_{name}" for name in COMPONENTS]


def check_scored(got: list[dict], ref: list[dict], reward: str = "medix") -> None:
    assert [g["rewards"][reward]["score"] for g in got] == pytest.approx([r["overall"] for r in ref], abs=1e-9)
    assert [g["reward"] for g in got] == pytest.approx([r["overall"] for r in ref], abs=1e-9)  # weight 1.0
    for g in got:
        assert g["ok"] and g["error"] is None and g["stop_condition"] is None
    for name, metric in zip(COMPONENTS, METRICS, strict=True):
        assert [g["metrics"][metric] for g in got] == pytest.approx(logged(ref, name), abs=1e-9), metric


def check_task_error(got: dict, cause: str, reward: str = "medix") -> None:
    """Recorded as verifiers records a failed rollout: a task error, the reward unscored (None), never a number."""
    assert not got["ok"] and got["has_error"] and got["stop_condition"] == "task_error", got
    assert got["error_types"] == ["TaskError"] and got["error"].startswith(f"TaskError <- {cause}"), got["error"]
    assert got["rewards"] == {reward: None} and got["metrics"] == {}, got
    # verifiers' own `trace.reward` sums the recorded rewards only: it reads 0 on an errored trace, which is why a
    # trainer must drop errored traces (docs/frameworks.md says what verifiers and prime-rl do).
    assert got["reward"] == 0


def test_verifiers_taskset_reward_and_outage(drive, reference):
    report = drive("verifiers", "drive_verifiers.py")
    ref = reference(question=True)  # the task's question is sent with the reply and the reference
    assert report["version"] == "0.4.0"
    assert report["taskset_class"] == "clients.adapters.verifiers.SlakeTaskset"
    assert (report["task_config"], report["task_class"]) == ("MedixTaskConfig", "MedixTask")
    check_scored(report["scored"], ref)
    # The one line: the plugged function replaces the decorated reward of the same name, with MEDIX_URL.
    assert report["plugged_hooks"] == [["medix", "clients.adapters.verifiers"]]
    check_scored(report["plugged"], ref)
    # The bundled SLAKE questions load as tasks, one a row, with the method's tag and the question.
    slake = report["slake"]
    assert slake["tasks"] == slake["rows"] > 1000
    first, row = slake["first"], slake["first_row"]
    assert (first["answer"], first["modality"], first["question"]) == (row["answer"], "CT_SCAN", row["question"])
    assert first["prompt"].endswith(f"Question: {row['question']}") and first["system_prompt"]
    assert (first["idx"], first["name"]) == (0, "slake_en_test:0")
    # An outage is a task error on the trace, never a score.
    check_task_error(report["outage"], "MedixUnavailable")
    # A refused item: a task error by default (the next task still scores); opted in, the chosen reward, marked.
    raised, after = report["refused_raise"]
    check_task_error(raised, "ItemFailed")
    assert after["rewards"]["medix"]["score"] == pytest.approx(ref[0]["overall"], abs=1e-9)
    skipped, scored = report["refused_skip"]
    assert skipped["ok"] and skipped["rewards"]["medix"]["score"] == 0.25 and skipped["metrics"][REFUSED_KEY] == 1.0
    assert scored["rewards"]["medix"]["score"] == pytest.approx(ref[0]["overall"], abs=1e-9)
    assert scored["metrics"][REFUSED_KEY] == 0.0 and set(scored["metrics"]) == set(skipped["metrics"])
    assert len(report["scored"]) == len(CASES)
