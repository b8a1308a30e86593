"""NeMo Gym 0.7.0 runs clients/adapters/nemo_gym.py as a resources server (drivers/drive_nemo_gym.py): its config
parser and `run_webserver`, `/verify` posted through its own ServerClient and read back with its own reply model,
its reward profiler over the replies; and verifiers' own NeMo Gym taskset scoring through the same server."""

from __future__ import annotations

import pytest

from clients.contract import COMPONENTS
from tests.integration.frameworks.conftest import logged

pytestmark = pytest.mark.integration
METRICS = [f"medix_{name}" for name in COMPONENTS]


def test_nemo_gym_resources_server_verify(drive, reference, framework_env):
    framework_env("verifiers")  # so the driver also runs verifiers' NeMo Gym taskset against the server
    report = drive("nemo-gym", "drive_nemo_gym.py")
    ref = reference(question=True)  # the last user message is sent as the question
    overall = [r["overall"] for r in ref]
    assert (report["version"], report["openai"], report["openai_loaded"]) == ("0.7.0", "2.44.0", "2.44.0")
    for run in ("scored", "scored_error_mode"):
        got = report[run]
        assert [g["status"] for g in got] == [200] * len(ref), got
        assert [g["reward"] for g in got] == pytest.approx(overall, abs=1e-9), run
        assert not any(g["mask_sample"] or g["failure_kind"] for g in got)
        for name, metric in zip(COMPONENTS, METRICS, strict=True):
            assert [g[metric] for g in got] == pytest.approx(logged(ref, name), abs=1e-9), (run, metric)
            assert [g["reward_components"][name] for g in got] == [g[metric] for g in got]

    # An outage, NeMo Gym's convention: judge_failsafe masks the sample and files it with the failures.
    masked = report["outage_mask"]
    assert masked["status"] == 200 and masked["mask_sample"] is True
    assert masked["failure_kind"] == masked["_ng_failure_class"] == "judge_failed"
    assert "MedixUnavailable" in masked["failure_reason"]
    assert not any(k.startswith("medix_") for k in masked)  # no component was made up
    # NeMo Gym's reward profiler keeps the masked sample out of the mean: the mean is the scored rewards' mean.
    agg = report["aggregate"]
    assert agg["mean/reward"] == pytest.approx(sum(overall) / len(overall), abs=1e-9)
    assert (agg["coverage/measured_rollouts"], agg["coverage/masked_rollouts"]) == (len(ref), 1)
    # With on_failure: error the outage is an HTTP error.
    assert report["outage_error"]["status"] == 503, report["outage_error"]
    # A refused item: masked as a verifier error, or a 422.
    refused = report["refused_mask"]
    assert refused["status"] == 200 and refused["mask_sample"] is True and refused["failure_kind"] == "verifier_error"
    assert "_ng_failure_class" not in refused
    assert report["refused_error"]["status"] == 422, report["refused_error"]

    # verifiers' NeMo Gym taskset through the same server: the reward and the components as metrics.
    vf = report["verifiers_taskset"]
    assert isinstance(vf, dict), vf
    assert [g["rewards"]["nemo_gym"]["score"] for g in vf["scored"]] == pytest.approx(overall, abs=1e-9)
    for name, metric in zip(COMPONENTS, METRICS, strict=True):
        assert [g["metrics"][metric] for g in vf["scored"]] == pytest.approx(logged(ref, name), abs=1e-9)
    # That taskset reads `reward` and records mask_sample as a metric: a masked outage reaches it as a reward of
    # 0.0 on a trace that is ok. This is why the docs say to run the server with on_failure: error under verifiers,
    # where an outage is a task error on the trace instead.
    through_mask = vf["outage_mask"]
    assert through_mask["ok"] and through_mask["reward"] == 0.0 and through_mask["metrics"]["mask_sample"] == 1.0
    through_error = vf["outage_error"]
    assert not through_error["ok"] and through_error["stop_condition"] == "task_error"
    assert through_error["rewards"] == {"nemo_gym": None} and "503" in through_error["error"]
