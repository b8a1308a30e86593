"""verl 0.9.1's own reward managers drive clients/adapters/verl.py (drivers/drive_verl.py)."""

from __future__ import annotations

import pytest

from clients.contract import COMPONENTS, REFUSED_KEY
from tests.integration.frameworks.conftest import logged

pytestmark = pytest.mark.integration
KEYS = ["score", *COMPONENTS]


def test_verl_reward_loop_and_legacy_batch_manager(drive, reference):
    report = drive("verl", "drive_verl.py")
    ref = reference(question=True)  # verl's adapter sends extra_info's question
    assert report["verl"] == "0.9.1"
    # naive (the default, awaiting `async def compute_score`), remote (`compute_score_sync` in Ray workers) and
    # the legacy BatchRewardManager (`compute_score_batch`): the reward on each response's last token is /reward's.
    for manager in ("naive", "remote", "batch"):
        got = report[manager]
        assert got["scores"] == pytest.approx([r["overall"] for r in ref], abs=1e-6), manager
        assert got["extra_keys"] == KEYS, manager  # the same keys for every sample, all numbers
        assert got["extra"]["score"] == pytest.approx([r["overall"] for r in ref], abs=1e-9)
        for name in COMPONENTS:
            assert got["extra"][name] == pytest.approx(logged(ref, name), abs=1e-9), (manager, name)
    assert report["naive"]["dtype"] == "torch.float32"
    assert report["naive"]["extra"]["modality"][2] == 0.0  # the untagged label
    # Outages raise out of verl's managers: never a score of 0.
    assert report["naive_outage"]["manager"] == "NaiveRewardManager" and report["naive_outage"]["awaits"] is True
    assert report["naive_outage"]["raised"].startswith("MedixUnavailable"), report["naive_outage"]
    assert report["batch_outage"].startswith("MedixUnavailable"), report["batch_outage"]
    # A refused item raises out of verl by default (ItemFailed); opted in, it scores the chosen reward, and every
    # sample carries medix_refused (verl takes the key set from the first sample).
    refused = report["naive_refused"]
    assert refused["default"].startswith("ItemFailed") and "items[0]" in refused["default"], refused["default"]
    assert refused["skip"]["scores"] == pytest.approx([ref[0]["overall"], 0.5], abs=1e-6)
    assert refused["skip"]["extra_keys"] == [*KEYS, REFUSED_KEY]
    assert refused["skip"]["extra"][REFUSED_KEY] == [0.0, 1.0]
