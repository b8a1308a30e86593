"""GRPOTrainer's own reward dispatch calls clients/adapters/trl.py (drivers/drive_trl.py): TRL 1.10.0,
the oldest the project declares (MedixRewardSync), and TRL 1.14.0, the first that awaits MedixReward."""

from __future__ import annotations

import math

import pytest

from clients.contract import COMPONENTS

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("env", "version", "form"), [("trl-1.10", "1.10.0", "MedixRewardSync"),
                                                      ("trl-1.14", "1.14.0", "MedixReward")])
def test_trl_grpo_trainer_dispatch(drive, reference, env, version, form):
    report = drive(env, "drive_trl.py")
    ref = reference(question=True)  # the TRL adapter sends the prompt's text as the question
    assert report["trl"] == version and report["form"] == form
    assert report["rewards"] == pytest.approx([r["overall"] for r in ref], abs=1e-6)
    for name in COMPONENTS:  # logged through TRL's log_metric: the mean over the items that have the component
        values = [r[name] for r in ref if r[name] is not None]
        assert report["logged"][f"medix/{name}"] == pytest.approx([sum(values) / len(values)], abs=1e-9)
    if form == "MedixRewardSync":  # the async form refuses a TRL that would not await it
        assert report["async_form_on_old_trl"].startswith("RuntimeError") and \
            "MedixRewardSync" in report["async_form_on_old_trl"]
    # Outages: raised out of TRL by default; with on_outage="skip", TRL's NaN (None here), never 0.
    assert report["outage_raise"].startswith("MedixUnavailable"), report["outage_raise"]
    assert report["outage_skip"] == [None] * len(ref)
    assert not any(isinstance(v, float) and not math.isnan(v) for v in report["outage_skip"])
