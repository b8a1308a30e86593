"""clients.evaluation: summaries with intervals, and paired comparisons. Coverage is checked by seeded simulation
on synthetic results with a known rate: a 95% interval should hold the true value in about 95% of runs."""

import numpy as np
import pytest
from scipy.stats import binom

from clients import evaluation as ev


def test_summary_arithmetic_counts_failures_apart():
    records = [{"task": "a", "score": 1.0}, {"task": "a", "score": 0.0}, {"task": "a", "score": None},
               {"task": "b", "score": 1.0}, {"task": "c", "score": None}]
    s = ev.summarise(records, intervals=False)
    assert s["tasks"]["a"] == {"n": 3, "judged": 2, "failed": 1, "score": 0.5}
    assert s["tasks"]["c"] == {"n": 1, "judged": 0, "failed": 1, "score": None}
    assert s["overall"] == pytest.approx(0.75) and s["failed"] == 2
    assert set(s) == {"tasks", "overall", "failed"}  # the service's wire summary, unchanged

    s = ev.summarise(records)  # the same numbers, with intervals added
    assert {k: s["tasks"]["a"][k] for k in ("n", "judged", "failed", "score")} == \
        {"n": 3, "judged": 2, "failed": 1, "score": 0.5}
    assert s["tasks"]["a"]["ci_method"] == "wilson"
    assert (s["tasks"]["a"]["ci_low"], s["tasks"]["a"]["ci_high"]) == pytest.approx(ev.wilson_interval(1, 2))
    assert s["tasks"]["c"]["ci_low"] is None and s["tasks"]["c"]["ci_method"] is None
    assert s["overall"] == pytest.approx(0.75) and s["confidence"] == 0.95
    assert s["overall_ci_method"] == "stratified-bootstrap"
    assert s["overall_ci_low"] <= s["overall"] <= s["overall_ci_high"]


def test_report_tasks_get_a_bootstrap_interval_and_summaries_are_reproducible():
    records = [{"task": "rep", "rubric": "report", "score": v} for v in (0.6, 0.8, 1.0, 0.4, 0.8, 0.2)]
    records += [{"task": "one", "rubric": "report", "score": 0.6}]
    records += [{"task": "bin", "rubric": "binary", "score": float(i % 3 == 0)} for i in range(30)]
    s = ev.summarise(records)
    assert s["tasks"]["rep"]["ci_method"] == "bootstrap"
    assert s["tasks"]["rep"]["ci_low"] < s["tasks"]["rep"]["score"] < s["tasks"]["rep"]["ci_high"]
    assert s["tasks"]["one"]["ci_low"] is None  # one report item: nothing to resample
    assert s["tasks"]["bin"]["ci_method"] == "wilson"
    assert ev.summarise(records) == s  # seeded
    all_ones = ev.summarise([{"task": "t", "rubric": "report", "score": 1.0}] * 5)
    assert all_ones["tasks"]["t"]["ci_low"] == all_ones["tasks"]["t"]["ci_high"] == 1.0


def test_wilson_coverage_at_n40_p055():
    n, p = 40, 0.55
    cover = {k: ev.wilson_interval(k, n) for k in range(n + 1)}
    exact = sum(binom.pmf(k, n, p) for k, (low, high) in cover.items() if low <= p <= high)
    successes = np.random.default_rng(2024).binomial(n, p, size=2000)
    simulated = np.mean([cover[k][0] <= p <= cover[k][1] for k in successes])
    assert exact == pytest.approx(0.9625, abs=0.001)
    assert 0.945 <= simulated <= 0.98


def _report_scores(rng, n):
    """Report items: the mean of 3 votes in 0..5, over 5; true mean 0.59."""
    probs = np.array([0.05, 0.1, 0.15, 0.3, 0.25, 0.15])
    return rng.choice(6, size=(n, 3), p=probs).mean(axis=1) / 5, float(np.arange(6) @ probs / 5)


def test_bootstrap_coverage_of_a_report_task_at_n40():
    rng = np.random.default_rng(7)
    hits = 0
    for sim in range(300):
        scores, truth = _report_scores(rng, 40)
        low, high = ev.bootstrap_interval([scores], resamples=1000, seed=sim)
        hits += low <= truth <= high
    assert 0.90 <= hits / 300 <= 0.99


def test_overall_stratified_bootstrap_coverage():
    rng = np.random.default_rng(8)
    hits = 0
    for sim in range(200):
        report, report_mean = _report_scores(rng, 30)
        records = [{"task": "a", "rubric": "binary", "score": float(x)} for x in rng.random(40) < 0.55]
        records += [{"task": "b", "rubric": "binary", "score": float(x)} for x in rng.random(60) < 0.7]
        records += [{"task": "c", "rubric": "report", "score": float(x)} for x in report]
        s = ev.summarise(records, resamples=1000, seed=sim)
        hits += s["overall_ci_low"] <= (0.55 + 0.7 + report_mean) / 3 <= s["overall_ci_high"]
    assert 0.89 <= hits / 200 <= 0.99


def test_paired_bootstrap_coverage_with_a_known_difference():
    """Items of varying difficulty; the candidate's chance on each is 0.05 lower (clipped at 0)."""
    population = np.random.default_rng(99).beta(2, 1.5, 1_000_000)
    truth = float(np.mean(np.clip(population - 0.05, 0, 1)) - np.mean(population))
    rng = np.random.default_rng(11)
    hits = 0
    for sim in range(300):
        p = rng.beta(2, 1.5, 40)
        d = (rng.random(40) < np.clip(p - 0.05, 0, 1)).astype(float) - (rng.random(40) < p)
        (task,), _ = ev.paired_statistics([d], resamples=1000, seed=sim)
        hits += task["ci_low"] <= truth <= task["ci_high"]
    assert 0.90 <= hits / 300 <= 0.99


def test_sign_flip_p_value_is_calibrated_under_no_change_and_small_under_a_real_one():
    rng = np.random.default_rng(3)
    null_p = []
    for sim in range(200):
        d = np.where(rng.random(100) < 0.3, rng.choice([-1.0, 1.0], 100), 0.0)  # 30% discordant, no direction
        null_p.append(ev.paired_statistics([d], resamples=999, seed=sim)[0][0]["p_value"])
    for alpha in (0.05, 0.1, 0.25, 0.5):  # valid: P(p <= alpha) <= alpha (discrete data make it conservative)
        assert np.mean(np.array(null_p) <= alpha) <= alpha + 0.04
    worse = np.array([-1.0] * 15 + [1.0] * 2 + [0.0] * 83)
    assert ev.paired_statistics([worse], resamples=999)[0][0]["p_value"] < 0.01
    (same,), whole = ev.paired_statistics([np.zeros(50)])
    assert same["p_value"] == 1.0 and same["ci_low"] == same["ci_high"] == 0.0 and whole["p_value"] == 1.0


def test_paired_statistics_overall_is_the_mean_of_task_differences_and_reproducible():
    a, b = [1.0, 0.0, -1.0, 1.0], [0.0, 0.0, 1.0]
    tasks, whole = ev.paired_statistics([a, b], resamples=2000, seed=5)
    assert whole["diff"] == pytest.approx((0.25 + 1 / 3) / 2) and whole["pairs"] == 7
    assert [t["pairs"] for t in tasks] == [4, 3]
    assert ev.paired_statistics([a, b], resamples=2000, seed=5) == (tasks, whole)
    (single,), _ = ev.paired_statistics([[1.0]])
    assert single["ci_low"] is None and single["diff"] == 1.0


@pytest.mark.parametrize(("low", "high", "drop", "expected"), [
    (-0.10, -0.05, 0.02, "regression"), (-0.10, -0.01, 0.02, "within tolerance"),
    (-0.10, 0.05, 0.0, "no significant change"), (0.01, 0.08, 0.02, "improvement"),
    (-0.03, -0.021, 0.02, "regression"), (None, None, 0.02, "not enough pairs"),
    (float("nan"), float("nan"), 0.02, "not enough pairs"),
])
def test_verdict(low, high, drop, expected):
    assert ev.verdict(low, high, drop) == expected


def test_verdict_needs_the_sign_flip_test_to_agree():
    assert ev.verdict(-0.5, -0.5, 0.02, p_value=1.0) == "no significant change"
    assert ev.verdict(-0.10, -0.05, 0.02, p_value=0.001) == "regression"
    assert ev.verdict(0.01, 0.08, 0.02, p_value=0.2) == "no significant change"


def test_compare_counts_and_lists_what_it_cannot_pair():
    base = {f"q{i}": {"id": f"q{i}", "task": "t", "rubric": "binary", "score": 1.0} for i in range(10)}
    cand = {f"q{i}": {"id": f"q{i}", "task": "t", "rubric": "binary", "score": 1.0} for i in range(3, 13)}
    base["q3"]["score"] = None
    cand["q4"]["task"] = "other"
    c = ev.compare(base, cand, resamples=500)
    assert c["only_in_baseline"] == ["q0", "q1", "q2"] and c["only_in_candidate"] == ["q10", "q11", "q12"]
    assert c["failed_in_baseline"] == ["q3"] and [m["id"] for m in c["mismatched"]] == ["q4"]
    assert c["overall"]["pairs"] == 5 and c["tasks"]["t"]["diff"] == 0.0 and c["pairable"]
    assert not ev.compare({"a": {"task": "t", "score": 1.0}}, {"b": {"task": "t", "score": 1.0}})["pairable"]
