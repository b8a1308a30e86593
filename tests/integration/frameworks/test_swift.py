"""ms-swift 4.6.0's own plugin import and GRPO reward path call clients/adapters/swift.py (drivers/drive_swift.py):
the plain `medix` and the async `medix_async` ORM, as `--external_plugins` and `--reward_funcs` set them up."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_swift_orm_plugin(drive, reference):
    report = drive("swift", "drive_swift.py")
    ref = reference(question=True)  # the last user message (without its <image>) is sent as the question
    overall = [r["overall"] for r in ref]
    assert (report["swift"], report["trl"]) == ("4.6.0", "0.29.1")
    assert report["registered"] == ["medix", "medix_async"]
    assert report["adapters_on_path"] == []  # clients/adapters/trl.py never shadows trl
    assert report["reward_func_names"] == ["MedixORM", "MedixAsyncORM"]
    for step in report["steps"]:  # two steps: the async ORM works under a second asyncio.run
        sync, async_ = zip(*step["per_func"], strict=True)
        assert list(sync) == pytest.approx(overall, abs=1e-6)  # float32 in ms-swift
        assert list(async_) == pytest.approx(overall, abs=1e-6)
        assert step["total"] == pytest.approx([2 * o for o in overall], abs=1e-6)  # reward weights 1 and 1
    # An outage raises out of score_completions (a None would be summed as 0 by nansum): never a 0.
    for form in ("sync", "async"):
        assert report[f"outage_{form}"].startswith("MedixUnavailable"), report[f"outage_{form}"]
    # A refused item: ItemFailed by default; with on_refused="skip", the chosen reward for it alone.
    assert report["refused"].startswith("ItemFailed"), report["refused"]
    skip = report["refused_skip"]
    assert [row[0] for row in skip["per_func"]] == pytest.approx([overall[0], -1.0], abs=1e-6)
    assert report["modules"] == []
