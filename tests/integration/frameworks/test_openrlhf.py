"""OpenRLHF 0.11.2's own remote-reward code posts to /get_reward and loads clients/adapters/openrlhf.py
(drivers/drive_openrlhf.py)."""

from __future__ import annotations

import pytest

from clients.contract import COMPONENTS
from tests.integration.frameworks.conftest import CASES, logged

pytestmark = pytest.mark.integration


def test_openrlhf_remote_url_http_and_reward_file(drive, reference):
    report = drive("openrlhf", "drive_openrlhf.py")
    ref = reference()  # /get_reward and the reward file send the response and the label only
    assert report["openrlhf"] == "0.11.2"
    for run in ("http", "http_truncated", "file", "file_truncated"):
        got = report[run]
        # The response alone is scored, whole prompt or left-truncated: the rewards are /reward's.
        assert got["rewards"] == pytest.approx([r["overall"] for r in ref], abs=1e-6), run
        assert got["info"]["reward"] == got["info"]["score"] == got["rewards"]
        # extra_logs became tensors in OpenRLHF and survived its batching and split: numbers, the same keys.
        assert set(got["info"]) == {"reward", "score", *COMPONENTS}, run
        for name in COMPONENTS:
            assert got["info"][name] == pytest.approx(logged(ref, name), abs=1e-6), (run, name)
        for query, case, prompt in zip(got["queries"], CASES, report["prompts"], strict=True):
            assert query.startswith(prompt) != run.endswith("truncated") and case["response"] in query
    # Outages: the reward stays None (OpenRLHF stops later, when it builds experiences), never 0; the reward file
    # puts the client's real error in OpenRLHF's log, the HTTP path only OpenRLHF's retry lines.
    for run in ("http_outage", "file_outage"):
        assert report[run]["rewards"] == report[run]["experience_rewards"] == [None], run
    assert any("connection_error" in line for line in report["file_outage"]["logged"])
    assert any("Request error for 5 times" in line for line in report["http_outage"]["logged"])
