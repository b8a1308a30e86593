"""medix-judge agree and calibrate (clients/audit.py): every statistic against scipy / scikit-learn on known cases
and on tiny cases checked by hand, the exit codes, resume, and the shape of the JSON and the Markdown."""

import json
import warnings

import numpy as np
import pytest
from scipy.stats import binomtest, bootstrap, spearmanr
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, cohen_kappa_score, confusion_matrix
from typer.testing import CliRunner

from clients import audit, datasets, judge_cli
from clients.client import AsyncMedixClient, JudgeScore, RewardScore

runner = CliRunner()


# -- statistics -------------------------------------------------------------------------------------------------
def test_kappa_by_hand_and_against_scikit_learn():
    # po = 3/4; both raters' shares of 1: 1/2 and 1/4, pe = 1/2 * 1/4 + 1/2 * 3/4 = 1/2; kappa = (3/4 - 1/2) / (1/2)
    assert audit.kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert audit.kappa([1, 0, 1, 0], [1, 0, 1, 0]) == pytest.approx(1.0)
    assert audit.kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    b[:120] = a[:120]
    assert audit.kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert audit.kappa(a, b, weights="quadratic", labels=audit.REPORT_LABELS) == pytest.approx(
        cohen_kappa_score(a, b, weights="quadratic", labels=audit.REPORT_LABELS))
    # Quadratic weights by hand: 2 items, (0, 1) and (1, 0) on labels 0-1: observed weighted disagreement 1 per
    # item, expected 1/2: kappa = 1 - 1 / (1/2) = -1.
    assert audit.kappa([0, 1], [1, 0], weights="quadratic") == pytest.approx(-1.0)


def test_kappa_is_none_when_undefined_or_empty():
    assert audit.kappa([1, 1, 1], [1, 1, 1]) is None  # one label throughout: 0/0
    assert audit.kappa([], []) is None


def test_spearman_against_scipy_and_undefined():
    rng = np.random.default_rng(1)
    a = rng.normal(size=50)
    b = a + rng.normal(size=50)
    assert audit.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert audit.spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert audit.spearman([1, 2, 3], [5, 5, 5]) is None
    assert audit.spearman([1], [2]) is None


def test_kappa_interval_is_scipys_percentile_bootstrap_of_scikit_learns_kappa():
    rng = np.random.default_rng(7)
    people = rng.integers(0, 2, 60)
    judge = np.where(rng.random(60) < 0.8, people, 1 - people)
    got = audit.kappa_interval(people.tolist(), judge.tolist(), [list(range(60))], resamples=300, seed=5)
    want = bootstrap((np.arange(60),), lambda i: cohen_kappa_score(people[i], judge[i]), n_resamples=300,
                     method="percentile", vectorized=False, rng=np.random.default_rng(5))
    assert got == pytest.approx((want.confidence_interval.low, want.confidence_interval.high))
    k = audit.kappa(people, judge)
    assert got[0] < k < got[1]
    # Same seed, same numbers; more items, a narrower interval.
    assert audit.kappa_interval(people.tolist(), judge.tolist(), [list(range(60))], resamples=300, seed=5) == got
    wide = audit.interval_width(40, 0.6, resamples=300)[1]
    narrow = audit.interval_width(400, 0.6, resamples=300)[1]
    assert narrow < wide / 2


def test_spearman_interval_is_scipys_percentile_bootstrap_of_scipys_spearman():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 6, 40).astype(float)
    b = np.clip(a + rng.integers(-1, 2, 40), 0, 5)
    got = audit.spearman_interval(a.tolist(), b.tolist(), [list(range(40))], resamples=200, seed=1)
    want = bootstrap((np.arange(40),), lambda i: spearmanr(a[i], b[i]).statistic, n_resamples=200,
                     method="percentile", vectorized=False, rng=np.random.default_rng(1))
    assert got == pytest.approx((want.confidence_interval.low, want.confidence_interval.high))


def test_the_bootstrap_resamples_within_each_task():
    """The share of items drawn from task A is fixed in every resample when items are resampled within tasks:
    the interval of that share collapses onto it (resampling the pooled items, it would not)."""
    strata = [list(range(10)), list(range(10, 40))]
    ci = audit.stratified_interval(lambda idx: float(np.mean(idx < 10)), strata, resamples=200)
    assert ci == pytest.approx((0.25, 0.25))
    # A task of one item enters every resample as it is.
    ci = audit.stratified_interval(lambda idx: float(np.sum(idx == 99)), [[99], list(range(5))], resamples=100)
    assert ci == pytest.approx((1.0, 1.0))
    assert audit.stratified_interval(lambda idx: 0.0, [[1], [2]]) is None


def test_consensus_majority_and_median():
    assert audit.consensus([1, 1, 0], "binary") == 1 and audit.consensus([0, 0, 1], "binary") == 0
    assert audit.consensus([1, 0], "binary") is None
    assert audit.consensus([2, 3], "report") == 3  # median 2.5, rounded half up
    assert audit.consensus([1, 2, 4], "report") == 2


def test_annotations_from_a_label_a_list_or_an_object():
    assert audit.annotations(1) == {"1": 1} and audit.annotations(True) == {"1": 1}
    assert audit.annotations([1, None, 0]) == {"1": 1, "3": 0}
    assert audit.annotations({"dr_a": 4, "dr_b": None}) == {"dr_a": 4}
    for bad in (None, [None], 7, "yes", 2.5, []):
        with pytest.raises(ValueError):
            audit.annotations(bad)


def test_pairwise_and_judge_kappa_are_means_of_scikit_learn_kappas():
    ratings = {"a": {"1": 1, "2": 0, "3": 1, "4": 0}, "b": {"1": 1, "2": 0, "3": 0, "4": 0},
               "c": {"2": 0, "3": 1, "4": 1, "5": 1}}
    between, pairs = audit.pairwise_kappa(ratings)
    ab = cohen_kappa_score([1, 0, 1, 0], [1, 0, 0, 0])
    ac = cohen_kappa_score([0, 1, 0], [0, 1, 1])
    bc = cohen_kappa_score([0, 0, 0], [0, 1, 1])
    assert pairs == 3 and between == pytest.approx(np.mean([ab, ac, bc]))
    judge = {"1": 1, "2": 0, "3": 1, "4": 1, "5": 1}
    k, n = audit.rater_kappa(judge, ratings)
    assert n == 3 and k == pytest.approx(np.mean([cohen_kappa_score([ratings[r][i] for i in sorted(ratings[r])],
                                                                    [judge[i] for i in sorted(ratings[r])])
                                                  for r in "abc"]))


def test_confusion_matrix_rows_are_people_columns_the_judge():
    c = audit.confusion([1, 1, 0, 0, 1], [1, 0, 0, 1, 1], [0, 1])
    assert c["matrix"] == [[1, 1], [1, 2]] == confusion_matrix([1, 1, 0, 0, 1], [1, 0, 0, 1, 1]).tolist()
    assert audit.confusion([], [], [0, 1])["matrix"] == [[0, 0], [0, 0]]


def test_reliability_and_ece_by_hand_and_against_scikit_learns_curve():
    # Two bins: [0, 0.5): p 0.1, 0.1, half correct -> gap 0.4; [0.5, 1]: p 0.9, 0.9, all correct -> gap 0.1.
    rel = audit.reliability([0, 1, 1, 1], [0.1, 0.1, 0.9, 0.9], bins=2)
    assert rel["count"] == [2, 2] and rel["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert rel["mean_p"] == pytest.approx([0.1, 0.9]) and rel["positive_share"] == pytest.approx([0.5, 1.0])
    rng = np.random.default_rng(4)
    p = rng.uniform(0.01, 0.99, 500)
    p = p[np.abs(p * 10 - np.round(p * 10)) > 1e-6]  # none on a bin edge (the two break ties differently)
    y = (rng.random(p.size) < p ** 2).astype(int)
    rel = audit.reliability(y, p, bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
    used = [i for i, c in enumerate(rel["count"]) if c]
    assert [rel["positive_share"][i] for i in used] == pytest.approx(prob_true)
    assert [rel["mean_p"][i] for i in used] == pytest.approx(prob_pred)
    counts = np.array([rel["count"][i] for i in used])
    assert rel["ece"] == pytest.approx(float(np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred))))


def test_calibration_stats_brier_auc_and_best_threshold():
    y = [0, 0, 1, 1, 1]
    p = [0.2, 0.6, 0.7, 0.9, 1.0]
    s = audit.calibration_stats(y, p, reward=[0.1, 0.2, 0.8, 0.9, 1.0], bins=5)
    assert s["brier"] == pytest.approx(brier_score_loss(y, p)) == pytest.approx(
        np.mean((np.array(p) - np.array(y)) ** 2))
    assert s["auc"] == pytest.approx(1.0) and s["n"] == 5 and s["positives"] == 3
    # At 0.5 the item at 0.6 is a false YES; at 0.7 every verdict is right.
    assert s["at_half"]["agreement"] == pytest.approx(0.8)
    assert s["best"] == {"threshold": 0.7, "kappa": pytest.approx(1.0), "agreement": pytest.approx(1.0)}
    assert s["reward_best"]["kappa"] == pytest.approx(1.0) and s["reward_best"]["threshold"] == 0.5


def test_recommend_prefers_kappa_then_the_rewards_kappa_then_brier():
    base = {"n": 5, "brier": 0.1, "best": {"threshold": 0.5, "kappa": 0.6, "agreement": 0.8},
            "reward_best": {"threshold": 0.5, "kappa": 0.5, "agreement": 0.8}}
    better = {**base, "best": {"threshold": 0.3, "kappa": 0.7, "agreement": 0.85}}
    assert audit.recommend({"medix-r1": base, "medix-r1-strict": better})["profile"] == "medix-r1-strict"
    tied = {**base, "brier": 0.05}
    assert audit.recommend({"medix-r1": base, "medix-r1-soft": tied})["profile"] == "medix-r1-soft"
    assert audit.recommend({"medix-r1": {"n": 0}}) is None


def test_flip_rate_carries_a_wilson_interval():
    items = [audit.Item(str(i), "t", "binary", 1.0, {"1": 1}, probe={"kind": "swap", "flipped": i < 3})
             for i in range(12)]
    items.append(audit.Item("x", "t", "binary", 1.0, {"1": 1}, probe={"kind": "swap", "flipped": None}))
    p = audit._probe_stats(items, 0.95)
    ci = binomtest(3, 12).proportion_ci(0.95, method="wilson")
    assert p["probed"] == 12 and p["flipped"] == 3 and p["failed"] == 1 and p["flip_rate"] == pytest.approx(0.25)
    assert (p["flip_low"], p["flip_high"]) == pytest.approx((ci.low, ci.high))


def test_planned_items_have_the_kappa_asked_for():
    for target in (0.4, 0.6, 0.8):
        a, b = audit.planned_items(200, target, 0.5)
        assert cohen_kappa_score(a, b) == pytest.approx(target, abs=0.02)
        assert sum(a) == sum(b) == 100


# -- agree: the command -------------------------------------------------------------------------------------------
def labelled(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def binary_rows(n=40, task=lambda i: ("medqa", "slake")[i % 2]):
    """Items whose prediction names the reference exactly when the people say 1 (the fake judge agrees, except
    where the prediction says `trap`)."""
    rows = []
    for i in range(n):
        label = i % 3 != 0
        pred = "liver" if label else "kidney"
        if i % 10 == 0:
            pred = "liver trap"  # the judge says 1, the people 0
        rows.append({"id": f"q{i}", "task": task(i), "question": "Which organ?", "reference": "liver",
                     "prediction": pred, "human": [int(label), int(label) if i % 7 else 1 - int(label), int(label)]})
    return rows


def fake_judge(calls=None):
    async def judge(self, items, rounds=3, explain=False):
        if calls is not None:
            calls.append([i["id"] for i in items])
        return [JudgeScore(id=i["id"], task=i["task"], rubric=i.get("rubric", "binary"), votes=[1],
                           score=1.0 if i["reference"] in i["prediction"] else 0.0) for i in items]

    return judge


def agree_args(tmp_path, inp, *extra):
    return ["agree", "--input", str(inp), "--output", str(tmp_path / "r.jsonl"), "--summary", str(tmp_path / "s.json"),
            "--markdown", str(tmp_path / "m.md"), "--resamples", "200", *extra]


def test_agree_json_and_markdown_shape_and_gate_exit_codes(tmp_path, monkeypatch):
    inp = labelled(tmp_path / "in.jsonl", binary_rows())
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge())
    ok = runner.invoke(judge_cli.app, agree_args(tmp_path, inp, "--min-kappa", "0.1"))
    assert ok.exit_code == 0, ok.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert set(s["tasks"]) == {"medqa", "slake"}
    for entry in [s["overall"], *s["tasks"].values()]:
        assert {"n", "agreement", "kappa", "kappa_low", "kappa_high", "confusion", "inter_annotator"} <= set(entry)
        assert entry["kappa_low"] <= entry["kappa"] <= entry["kappa_high"]
    people = [int(sum(r["human"]) >= 2) for r in binary_rows()]
    judge = [int("liver" in r["prediction"]) for r in binary_rows()]
    assert s["overall"]["n"] == 40 and s["overall"]["kappa"] == pytest.approx(cohen_kappa_score(people, judge))
    assert s["overall"]["agreement"] == pytest.approx(np.mean(np.array(people) == np.array(judge)))
    assert s["overall"]["confusion"]["matrix"] == confusion_matrix(people, judge).tolist()
    assert s["gate"]["passed"] is True and s["disagreements"][0]["id"] == "q30"  # "liver trap": 1 against 0, 0, 0
    md = (tmp_path / "m.md").read_text()
    assert md.startswith("### MediX judge against people: `in.jsonl`\n\n**Gate: passed** (--min-kappa 0.1)")
    assert "| task | n | agreement | κ | 95% CI | annotators κ | judge–annotator κ | flip rate |" in md
    assert "| **overall** | 40 |" in md and "| people 0 |" in md and "| q30 | medqa | 1 | 0, 0, 0 |" in md
    assert md == ok.output[ok.output.index("### MediX"):][:len(md)]  # the same report on stdout

    failed = runner.invoke(judge_cli.app, agree_args(tmp_path, inp, "--min-kappa", "0.95"))
    assert failed.exit_code == judge_cli.EXIT_BELOW_MIN and "under --min-kappa 0.95" in failed.output
    assert json.loads((tmp_path / "s.json").read_text())["gate"]["passed"] is False
    assert "**Gate: failed**" in (tmp_path / "m.md").read_text()


def test_agree_resumes_like_run_and_reads_a_run_results_file_without_the_service(tmp_path, monkeypatch):
    rows = binary_rows(12)
    inp = labelled(tmp_path / "in.jsonl", rows)
    out = tmp_path / "r.jsonl"
    calls = []
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge(calls))
    # `run` judged the first 5 (the same results file), and a crash cut its last line.
    run_in = labelled(tmp_path / "run.jsonl", rows[:5])
    assert runner.invoke(judge_cli.app, ["run", "--input", str(run_in), "--output", str(out)]).exit_code == 0
    with out.open("a") as f:
        f.write('{"id": "q5", "task": "sl')
    calls.clear()
    r = runner.invoke(judge_cli.app, agree_args(tmp_path, inp, "--batch-size", "4"))
    assert r.exit_code == 0, r.output
    assert "resuming: 5 ids already" in r.output and "cut off" in r.output
    assert sorted(i for c in calls for i in c) == sorted(f"q{i}" for i in range(5, 12))
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # each once
    calls.clear()
    again = runner.invoke(judge_cli.app, agree_args(tmp_path, inp, "--url", "http://127.0.0.1:9"))
    assert again.exit_code == 0 and calls == []  # every id there: read as it is, nothing asked


def test_agree_exit_2_when_incomplete(tmp_path, monkeypatch):
    rows = binary_rows(10)
    rows[3]["human"] = [3, 4]  # a binary item labelled 0-5
    inp = labelled(tmp_path / "in.jsonl", rows)
    with inp.open("a") as f:
        f.write(json.dumps({"id": "x", "task": "t", "reference": "r", "prediction": "p"}) + "\n")  # no human
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge())
    r = runner.invoke(judge_cli.app, agree_args(tmp_path, inp, "--min-kappa", "0"))
    assert r.exit_code == judge_cli.EXIT_UNJUDGED
    assert ":11: invalid line, skipped: human" in r.output and "id 'q3': a binary result" in r.output
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["invalid_lines"] == 1 and s["bad_labels"] == ["q3"] and s["overall"]["n"] == 9
    assert (tmp_path / "m.md").read_text().splitlines()[2].startswith("**Incomplete** (exit 2)")

    async def down(self, items, rounds=3, explain=False):
        from clients.client import MedixUnavailable
        raise MedixUnavailable(503, "backend_unavailable", "judge: down")

    monkeypatch.setattr(AsyncMedixClient, "judge", down)
    fresh = labelled(tmp_path / "fresh.jsonl", binary_rows(4))
    r = runner.invoke(judge_cli.app, ["agree", "--input", str(fresh), "--output", str(tmp_path / "none.jsonl")])
    assert r.exit_code == judge_cli.EXIT_UNJUDGED and "4 items left unjudged" in r.output


def test_agree_report_items_weighted_kappa_and_spearman(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows, raws = [], []
    for i in range(30):
        label = int(rng.integers(0, 6))
        raws.append(float(np.clip(label + rng.choice([-1, 0, 0, 1]), 0, 5)))
        rows.append({"id": f"r{i}", "task": "reports", "rubric": "report", "reference": "ref", "prediction": "p",
                     "human": [label, label]})
    inp = labelled(tmp_path / "in.jsonl", rows)

    async def judge(self, items, rounds=3, explain=False):
        return [JudgeScore(id=i["id"], task=i["task"], rubric="report", votes=[int(raws[int(i["id"][1:])])],
                           score=raws[int(i["id"][1:])] / 5, raw_score=raws[int(i["id"][1:])]) for i in items]

    monkeypatch.setattr(AsyncMedixClient, "judge", judge)
    r = runner.invoke(judge_cli.app, agree_args(tmp_path, inp, "--min-kappa", "0.5"))
    assert r.exit_code == 0, r.output
    t = json.loads((tmp_path / "s.json").read_text())["tasks"]["reports"]
    people = [row["human"][0] for row in rows]
    assert "kappa" not in t and t["rubric"] == "report"
    assert t["weighted_kappa"] == pytest.approx(cohen_kappa_score(people, [int(x) for x in raws], weights="quadratic",
                                                                  labels=list(range(6))))
    assert t["spearman"] == pytest.approx(spearmanr(people, raws).statistic)
    assert t["weighted_kappa_low"] <= t["weighted_kappa"] <= t["weighted_kappa_high"]
    assert t["spearman_low"] <= t["spearman"] <= t["spearman_high"]
    assert t["inter_annotator_report"]["annotator_kappa"] == pytest.approx(1.0)
    assert "| task | n | agreement | weighted κ |" in (tmp_path / "m.md").read_text()


def test_agree_probe_asks_the_service_for_it_and_reports_the_flip_rate(tmp_path, monkeypatch):
    inp = labelled(tmp_path / "in.jsonl", binary_rows(20))
    bodies = []

    async def post(self, path, body):
        bodies.append(body)
        return {"results": [{"id": i["id"], "task": i["task"], "rubric": "binary", "score": 1.0, "votes": [1],
                             "probe": {"kind": "swap", "score": 0.0, "votes": [0], "flipped": i["id"] in ("q1", "q2")}}
                            for i in body["items"]]}

    monkeypatch.setattr(AsyncMedixClient, "_post", post)
    r = runner.invoke(judge_cli.app, agree_args(tmp_path, inp, "--probe", "swap"))
    assert r.exit_code == 0, r.output
    assert bodies and all(b["probe"] == "swap" for b in bodies)
    p = json.loads((tmp_path / "s.json").read_text())["overall"]["probe"]
    assert p["probed"] == 20 and p["flipped"] == 2 and p["flipped_ids"] == ["q1", "q2"]
    assert "| **overall** | 20 |" in r.output and "0.1000 (2/20) |" in r.output


def test_agree_probe_asks_again_for_ids_judged_without_it(tmp_path, monkeypatch):
    inp = labelled(tmp_path / "in.jsonl", binary_rows(6))
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge())
    assert runner.invoke(judge_cli.app, agree_args(tmp_path, inp)).exit_code == 0
    asked = []

    async def post(self, path, body):
        asked.extend(i["id"] for i in body["items"])
        return {"results": [{"id": i["id"], "task": i["task"], "rubric": "binary", "score": 1.0, "votes": [1],
                             "probe": {"kind": "swap", "score": 1.0, "votes": [1], "flipped": False}}
                            for i in body["items"]]}

    monkeypatch.setattr(AsyncMedixClient, "_post", post)
    r = runner.invoke(judge_cli.app, agree_args(tmp_path, inp, "--probe", "swap"))
    assert r.exit_code == 0 and sorted(asked) == sorted(f"q{i}" for i in range(6))


# -- the bundled synthetic file ---------------------------------------------------------------------------------
def test_the_bundled_synthetic_file_is_what_its_generator_makes():
    made = datasets.synthetic_agreement()
    assert list(datasets.read_jsonl(datasets.SYNTHETIC_AGREEMENT)) == made
    assert {r["task"] for r in made} == {"MedQA-USMLE-4-options", "PubMedQA", "SLAKE", "PubMedQA-conclusion"}
    assert all(len(r["human"]) == 3 for r in made)
    contested = [r for r in made if len(set(r["human"])) > 1]
    assert 5 <= len(contested) <= len(made) // 2  # annotators disagree, but not on most items
    rows, invalid = judge_cli.read_predictions(datasets.SYNTHETIC_AGREEMENT, print, audit.AgreeLine)
    assert invalid == 0 and len(rows) == len(made)


# -- calibrate --------------------------------------------------------------------------------------------------
def fake_reward(failing=()):
    async def reward(self, items, profile=None):
        out = []
        for it in items:
            answer = it["response"].split("<answer>")[1].split("</answer>")[0]
            ref = it["ground_truth"].split(">")[-1]
            right = ref.lower() in answer.lower()
            p = 0.9 if right else (0.6 if profile == "medix-r1-soft" else 0.2)
            if it["id"] in failing:
                out.append(RewardScore(id=it["id"], overall=None, format=1.0, accuracy_llm=None, accuracy_embed=None,
                                       modality=None, error={"type": "input_rejected", "message": "too long"}))
                continue
            out.append(RewardScore(id=it["id"], overall=0.1 + 0.9 * p, format=1.0, accuracy_llm=p,
                                   accuracy_embed=p, modality=None,
                                   details={"decided_by": "backends", "judge_p_yes": p}))
        return out

    return reward


def pairs(n=30):
    return [{"id": f"p{i}", "answer": "liver" if i % 2 else "kidney", "reference": "Liver",
             "modality": "CT" if i % 3 == 0 else None, "label": i % 2} for i in range(n)]


def test_calibrate_reports_brier_ece_the_best_profile_and_draws_the_diagram(tmp_path, monkeypatch):
    inp = labelled(tmp_path / "pairs.jsonl", pairs())
    with inp.open("a") as f:  # an `agree` report line is left out
        f.write(json.dumps({"id": "r", "rubric": "report", "prediction": "x", "reference": "y", "human": [4]}) + "\n")
    seen = []
    reward = fake_reward()

    async def spy(self, items, profile=None):
        seen.append((profile, items[0]))
        return await reward(self, items, profile)

    monkeypatch.setattr(AsyncMedixClient, "reward", spy)
    png, s_path, md = tmp_path / "rel.png", tmp_path / "c.json", tmp_path / "c.md"
    r = runner.invoke(judge_cli.app, ["calibrate", "--input", str(inp), "--plot", str(png), "--summary", str(s_path),
                                      "--markdown", str(md), "--output", str(tmp_path / "per.jsonl")])
    assert r.exit_code == 0, r.output
    assert [p for p, _ in seen] == list(audit.PROFILES)
    assert seen[0][1]["response"].startswith("<CT_SCAN><thinking>") and seen[0][1]["ground_truth"] == "<CT_SCAN>Liver"
    s = json.loads(s_path.read_text())
    y = [p["label"] for p in pairs()]
    strict = s["profiles"]["medix-r1-strict"]
    p_strict = [0.9 if v else 0.2 for v in y]
    assert strict["brier"] == pytest.approx(brier_score_loss(y, p_strict)) and strict["n"] == 30
    assert strict["ece"] == pytest.approx(0.5 * 0.2 + 0.5 * 0.1)  # p 0.2: 0% correct; p 0.9: 100% correct
    assert s["profiles"]["medix-r1-soft"]["brier"] > strict["brier"]
    assert s["best"]["profile"] == "medix-r1" and s["best"]["kappa"] == pytest.approx(1.0)  # ties keep the order
    assert s["report_lines"] == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = md.read_text()
    assert text.startswith("### MediX reward calibration: `pairs.jsonl`\n\n**Best: `medix-r1` with p(YES) ≥ ")
    assert "| profile | n | Brier | ECE | AUC |" in text and "1 report lines (0–5 labels) left out" in text
    per = [json.loads(line) for line in (tmp_path / "per.jsonl").read_text().splitlines()]
    assert len(per) == 30 and set(per[0]["profiles"]) == set(audit.PROFILES)


def test_calibrate_exit_2_when_pairs_fail_or_lines_are_invalid(tmp_path, monkeypatch):
    inp = labelled(tmp_path / "pairs.jsonl", [*pairs(10), {"id": "bad", "answer": "a", "reference": "b",
                                                           "label": 3}])
    monkeypatch.setattr(AsyncMedixClient, "reward", fake_reward(failing={"p1"}))
    r = runner.invoke(judge_cli.app, ["calibrate", "--input", str(inp), "--profiles", "medix-r1",
                                      "--summary", str(tmp_path / "c.json")])
    assert r.exit_code == judge_cli.EXIT_UNJUDGED and ":11: invalid line" in r.output
    s = json.loads((tmp_path / "c.json").read_text())
    assert s["profiles"]["medix-r1"]["failed"] == 1 and s["profiles"]["medix-r1"]["n"] == 9


def test_p_yes_of_a_reward_result():
    assert audit.p_yes_of({"overall": 1.0, "details": {"decided_by": "exact"}}) == 1.0
    assert audit.p_yes_of({"overall": 0.1, "details": {"decided_by": "invalid"}}) == 0.0
    assert audit.p_yes_of({"overall": 0.5, "details": {"decided_by": "backends", "judge_p_yes": 0.3}}) == 0.3
    assert audit.p_yes_of({"overall": None, "details": {"decided_by": "backends"}}) is None


def test_no_warnings_leak_from_undefined_statistics():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert audit.kappa([0, 0], [0, 0]) is None and audit.spearman([1, 1], [1, 2]) is None
