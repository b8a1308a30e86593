"""OpenRLHF's own remote-reward code posts to /get_reward and loads clients/adapters/openrlhf.py
(drivers/drive_openrlhf.py): 0.11.2, and 0.11.0, the last release that sends empty lists to every reward URL after
the first."""

from __future__ import annotations

import pytest

from clients.contract import COMPONENTS, REFUSED_KEY
from tests.integration.frameworks.conftest import CASES, logged

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("env", "version"), [("openrlhf", "0.11.2"), ("openrlhf-0.11.0", "0.11.0")])
def test_openrlhf_remote_url_http_and_reward_file(drive, reference, env, version):
    report = drive(env, "drive_openrlhf.py")
    ref = reference()  # /get_reward and the reward file send the response and the label only
    assert report["openrlhf"] == version
    overall = [r["overall"] for r in ref]
    for run in ("http", "http_truncated", "file", "file_truncated", "several_urls"):
        got = report[run]
        # The response alone is scored, whole prompt or left-truncated: the rewards are /reward's.
        assert got["rewards"] == pytest.approx(overall, abs=1e-6), run
        assert got["info"]["reward"] == got["info"]["score"] == got["rewards"]
        # extra_logs became tensors in OpenRLHF and survived its batching and split: numbers, the same keys.
        assert set(got["info"]) == {"reward", "score", *COMPONENTS}, run
        for name in COMPONENTS:
            assert got["info"][name] == pytest.approx(logged(ref, name), abs=1e-6), (run, name)
        for query, case, prompt in zip(got["queries"], CASES, report["prompts"], strict=True):
            assert query.startswith(prompt) != run.endswith("truncated") and case["response"] in query
    # Several URLs: 0.11.0 sends each sample to the first URL and empty lists to the second, which get empty lists
    # back (a 422 there left the reward None); 0.11.2 rotates the URLs and sends no empty list.
    posted = report["several_urls"]["posted"]
    if version == "0.11.0":
        assert posted == [[0, 1], [1, 0]] * len(CASES)
    else:
        assert posted == [[0, 1], [1, 1]] * (len(CASES) // 2)
    # A refused item (an answer longer than the judge's context) leaves the reward None by default, which stops
    # OpenRLHF; opted in, it is the chosen reward and medix_refused marks it in the logs.
    assert report["refused_http"]["rewards"][1] is report["refused_file"]["rewards"][1] is None
    assert any("input_rejected" in line for line in report["refused_file"]["logged"])
    for run in ("refused_http_skip", "refused_file_skip"):
        got = report[run]
        assert got["rewards"] == pytest.approx([overall[0], 0.5], abs=1e-6), run
        assert got["info"][REFUSED_KEY] == [0.0, 1.0], run
        assert set(got["info"]) == {"reward", "score", *COMPONENTS, REFUSED_KEY}, run
    # Outages: the reward stays None (OpenRLHF stops later, when it builds experiences), never 0; the reward file
    # puts the client's real error in OpenRLHF's log, the HTTP path only OpenRLHF's retry lines.
    for run in ("http_outage", "file_outage"):
        assert report[run]["rewards"] == report[run]["experience_rewards"] == [None], run
    assert any("connection_error" in line for line in report["file_outage"]["logged"])
    assert any("Request error for 5 times" in line for line in report["http_outage"]["logged"])
