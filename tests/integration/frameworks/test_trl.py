"""TRL's own reward code calls clients/adapters/trl.py (drivers/drive_trl.py): TRL 1.10.0 (MedixRewardSync, the old
path), 1.14.0 (the oldest the project declares, and the first that awaits MedixReward) and 1.16.0 (the newest)."""

from __future__ import annotations

import math

import pytest

from clients.contract import COMPONENTS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("env", "version", "form"), [("trl-1.10", "1.10.0", "MedixRewardSync"),
                                                      ("trl-1.14", "1.14.0", "MedixReward"),
                                                      ("trl-1.16", "1.16.0", "MedixReward")])
def test_trl_grpo_trainer_dispatch(drive, reference, env, version, form):
    report = drive(env, "drive_trl.py")
    ref = reference(question=True)  # the TRL adapter sends the prompt's text as the question
    assert report["trl"] == version and report["form"] == form
    overall = [r["overall"] for r in ref]
    assert report["rewards"] == pytest.approx(overall, abs=1e-6)
    # Axolotl's dotted name, clients.adapters.trl.medix_reward: the same rewards and logs, through the same dispatch.
    assert report["medix_reward"] == pytest.approx(overall, abs=1e-6)
    for name in COMPONENTS:  # logged through TRL's log_metric: the mean over the items that have the component
        values = [r[name] for r in ref if r[name] is not None]
        assert report["logged"][f"medix/{name}"] == pytest.approx([sum(values) / len(values)], abs=1e-9)
        assert report["medix_reward_logged"][f"medix/{name}"] == report["logged"][f"medix/{name}"]
    if form == "MedixRewardSync":  # the async form refuses a TRL that would not await it
        assert report["async_form_on_old_trl"].startswith("RuntimeError") and \
            "MedixRewardSync" in report["async_form_on_old_trl"]
    # A refused item beside another reward function: NaN (None here) in MediX's column only; TRL then sums the
    # columns with nansum, so the sample keeps the other function's reward.
    medix, other = report["combined"]
    assert medix[:3] == pytest.approx(overall[:3], abs=1e-6) and medix[3] is None
    assert other == [0.25] * 4
    # Outages: raised out of TRL by default; with on_outage="skip", TRL's NaN (None here), never 0.
    assert report["outage_raise"].startswith("MedixUnavailable"), report["outage_raise"]
    assert report["outage_skip"] == [None] * len(ref)
    assert not any(isinstance(v, float) and not math.isnan(v) for v in report["outage_skip"])
    if form != "MedixReward":
        return
    # AsyncGRPOTrainer: pickled, unpickled in a spawned process, scored there by TRL without log_metric.
    mixed, alone = report["async_grpo"], report["async_grpo_alone"]
    assert "raised" not in mixed and "raised" not in alone, (mixed, alone)
    assert mixed["pid"] != mixed["parent"] and mixed["names"] == ["medix", "constant_reward"]
    got = mixed["samples"]
    assert [s["rewards/medix"] for s in got[:3]] == pytest.approx(overall[:3], abs=1e-6)
    assert got[3]["rewards/medix"] is None  # refused: NaN
    assert [s["reward"] for s in got] == pytest.approx([o + 0.25 for o in overall[:3]] + [0.25], abs=1e-6)
    # Alone, the refused sample has no reward at all: TRL leaves it out (NaN reward, advantage 0).
    assert alone["samples"][3]["reward"] is None and alone["samples"][3]["advantage"] == 0.0
    assert [s["reward"] for s in alone["samples"][:3]] == pytest.approx(overall[:3], abs=1e-6)
