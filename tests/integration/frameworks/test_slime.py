"""slime's reward calling, replayed (slime is not on PyPI; drivers/drive_slime.py): `--custom-rm-path
clients.adapters.slime.reward` for one sample and, with `--group-rm`, for a group, in the client-only environment;
and `--rm-type remote_rm --rm-url <service>/rm --reward-key reward` against the service itself."""

from __future__ import annotations

import pytest

from clients.contract import COMPONENTS
from tests.integration.frameworks.conftest import logged

pytestmark = pytest.mark.integration


def same_dicts(got, ref, key="reward"):
    """Each sample's dict: the overall reward under `key`, the components beside it (a null modality as 0)."""
    want = [{key: r["overall"], **{name: 0.0 if r[name] is None else r[name] for name in COMPONENTS}} for r in ref]
    return len(got) == len(want) and all(g == pytest.approx(w, abs=1e-9) for g, w in zip(got, want, strict=True))


def test_slime_custom_reward_function(drive, reference):
    report = drive("client", "drive_slime.py")
    ref = reference()  # slime's sample gives the response (its end-of-turn marker left out) and the label only
    overall = [r["overall"] for r in ref]
    assert "/.venvs/client/" in report["adapter"] and report["aiohttp"] is False
    assert report["modules"] == report["modules_after"] == []
    got = report["custom_rm"]
    for shape in ("sample", "group"):  # one Sample, or the group's list with --group-rm
        assert got[shape]["numbers"] and got[shape]["rewards"] == pytest.approx(overall, abs=1e-9), shape
        assert got[shape]["raw"] == got[shape]["rewards"]  # without --reward-key: a number
        assert got[f"{shape}_key"]["rewards"] == pytest.approx(overall, abs=1e-9)  # --reward-key reward
        assert same_dicts(got[f"{shape}_key"]["raw"], ref), got[f"{shape}_key"]["raw"]
    assert got["eval_group"]["error"].startswith("AssertionError")  # slime's evaluation refuses --group-rm
    assert got["eval"]["rewards"] == pytest.approx(logged(ref, "accuracy_llm"), abs=1e-9)  # --eval-reward-key
    for case in ("outage_sample", "outage_group"):
        assert got[case]["error"].startswith("MedixUnavailable"), got[case]
    assert got["refused"]["error"].startswith("ItemFailed"), got["refused"]
    skip = got["refused_skip"]  # medix_on_refused: skip -> the chosen reward and slime's remove_sample
    assert skip["rewards"] == pytest.approx([overall[0], -1.0], abs=1e-9)
    assert skip["removed"] == [False, True] and [r["medix_refused"] for r in skip["raw"]] == [0.0, 1.0]


def test_slime_remote_rm_on_the_service(drive, reference):
    report = drive("slime", "drive_slime.py")
    ref = reference()
    overall = [r["overall"] for r in ref]
    got = report["remote_rm"]
    assert got["rm"]["rewards"] == pytest.approx(overall, abs=1e-9)
    assert same_dicts(got["rm"]["raw"], ref), got["rm"]["raw"]
    assert got["profile"]["rewards"] == pytest.approx(overall[:1], abs=1e-9)  # --rm-url …/rm?profile=medix-r1
    # Without --reward-key slime holds the whole dict and cannot make its float tensor: the key is needed.
    assert got["no_reward_key"]["error"].startswith("TypeError"), got["no_reward_key"]
    # Never a 0: an outage, and an item the judge refused (422), fail slime's retries and raise.
    assert got["outage"]["error"].startswith("ClientConnectorError"), got["outage"]
    assert got["refused"]["error"].startswith("ClientResponseError") and "422" in got["refused"]["error"]
    assert report["custom_rm"]["sample"]["rewards"] == pytest.approx(overall, abs=1e-9)  # the same in this env
