import asyncio
import json
import os

import pytest
from typer.testing import CliRunner

from clients import datasets, judge_cli
from clients.client import AsyncMedixClient, JudgeScore, MedixUnavailable

runner = CliRunner()


def write_preds(path, n, tasks=("medqa", "pubmedqa")):
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "task": tasks[i % len(tasks)], "question": "Q?", "reference": "Liver",
                                "prediction": "liver" if i % 3 else "kidney"}) + "\n")


def fake_judge(fail_on_call=None, unavailable_on_call=None):
    calls = []

    async def judge(self, items, rounds=3, explain=False):
        calls.append([i["id"] for i in items])
        await asyncio.sleep(0.01)  # a request takes time; a kill lands during one
        if fail_on_call == len(calls):
            raise RuntimeError("killed")
        if unavailable_on_call == len(calls):
            raise MedixUnavailable(503, "backend_unavailable", "judge: down")
        return [JudgeScore(id=i["id"], task=i["task"], rubric="binary", votes=[1, 1, 1],
                           score=1.0 if i["reference"].lower() in i["prediction"].lower() else 0.0) for i in items]

    return judge, calls


def ids_in(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_killed_run_resumes_and_judges_every_id_exactly_once(tmp_path, monkeypatch):
    preds, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_preds(preds, 10)
    judge, calls = fake_judge(fail_on_call=2)
    monkeypatch.setattr(AsyncMedixClient, "judge", judge)
    args = ["run", "--input", str(preds), "--output", str(out), "--batch-size", "4", "--concurrency", "1"]
    crashed = runner.invoke(judge_cli.app, args)
    assert crashed.exit_code != 0 and ids_in(out) == ["q0", "q1", "q2", "q3"]

    judge, calls = fake_judge()
    monkeypatch.setattr(AsyncMedixClient, "judge", judge)
    done = runner.invoke(judge_cli.app, [*args, "--summary", str(tmp_path / "s.json")])
    assert done.exit_code == 0, done.output
    assert sorted(ids_in(out)) == sorted(f"q{i}" for i in range(10))  # each exactly once
    assert [i for c in calls for i in c] == [f"q{i}" for i in range(4, 10)]  # nothing judged twice
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["tasks"]["medqa"]["n"] == 5 and s["overall"] == pytest.approx((3 / 5 + 3 / 5) / 2)


def test_invalid_lines_are_reported_with_line_numbers_and_exit_2(tmp_path, monkeypatch):
    preds, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_preds(preds, 3)
    with preds.open("a") as f:
        f.write("{not json\n")
        f.write(json.dumps({"id": "x", "task": "t", "prediction": "p"}) + "\n")  # no reference
        f.write(json.dumps({"id": "q0", "task": "t", "reference": "r", "prediction": "p"}) + "\n")  # duplicate
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge()[0])
    r = runner.invoke(judge_cli.app, ["run", "--input", str(preds), "--output", str(out)])
    assert r.exit_code == judge_cli.EXIT_UNJUDGED
    assert ":4: invalid line" in r.output and ":5: invalid line" in r.output and ":6: duplicate id" in r.output
    assert sorted(ids_in(out)) == ["q0", "q1", "q2"]


def test_exit_codes_for_min_score_and_unjudged_batches(tmp_path, monkeypatch):
    preds = tmp_path / "p.jsonl"
    write_preds(preds, 6)
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge()[0])
    base = ["run", "--input", str(preds), "--batch-size", "3", "--concurrency", "1"]
    md = tmp_path / "s.md"
    ok = runner.invoke(judge_cli.app, [*base, "--output", str(tmp_path / "a.jsonl"), "--min-score", "0.5",
                                       "--markdown", str(md)])
    assert ok.exit_code == 0 and "| medqa | 3 |" in md.read_text() and "**overall**" in md.read_text()
    low = runner.invoke(judge_cli.app, [*base, "--output", str(tmp_path / "b.jsonl"), "--min-score", "0.9"])
    assert low.exit_code == judge_cli.EXIT_BELOW_MIN

    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge(unavailable_on_call=2)[0])
    out = tmp_path / "c.jsonl"
    down = runner.invoke(judge_cli.app, [*base, "--output", str(out), "--min-score", "0.0"])
    assert down.exit_code == judge_cli.EXIT_UNJUDGED and "failed" in down.output
    assert len(ids_in(out)) == 3  # the failed batch wrote nothing; no zero scores


# -- a crash in the middle of a write (issue 24, item 6) -------------------------------------------------------
def torn_append(on_call):
    """judge_cli.append_jsonl that, on call `on_call`, writes its text up to the middle of its last record and
    dies, as a kill during the write would leave the file; nothing is written after that."""
    real, calls = judge_cli.append_jsonl, {"n": 0}

    def append(f, records):
        calls["n"] += 1
        if calls["n"] > on_call:
            raise RuntimeError("dead")  # the process is gone: nothing more reaches the file
        if calls["n"] < on_call:
            return real(f, records)
        text = "".join(json.dumps(r) + "\n" for r in records)
        f.write(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
        f.flush()
        raise RuntimeError("killed in the middle of a write")

    return append


def every_line_is_json(path):
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_run_resumes_cleanly_after_a_crash_in_the_middle_of_a_write(tmp_path, monkeypatch):
    """Before: the torn half-line was skipped on resume and the next batch appended to it, glued on: those
    results lost, the file unreadable there, and `run` exit 2 on every later run."""
    preds, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_preds(preds, 10)
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge()[0])
    monkeypatch.setattr(judge_cli, "append_jsonl", torn_append(on_call=2))
    args = ["run", "--input", str(preds), "--output", str(out), "--batch-size", "4", "--concurrency", "1"]
    crashed = runner.invoke(judge_cli.app, args)
    assert crashed.exit_code != 0 and not out.read_text().endswith("\n")  # q4..q6 written, q7 half

    monkeypatch.setattr(judge_cli, "append_jsonl", datasets.append_jsonl)  # the process restarts
    judge, calls = fake_judge()
    monkeypatch.setattr(AsyncMedixClient, "judge", judge)
    done = runner.invoke(judge_cli.app, args)
    assert done.exit_code == 0, done.output
    assert "last line was cut off" in done.output
    assert sorted(r["id"] for r in every_line_is_json(out)) == sorted(f"q{i}" for i in range(10))  # once each
    assert [i for c in calls for i in c] == ["q7", "q8", "q9"]  # the torn record judged again
    again = runner.invoke(judge_cli.app, args)  # and every later run is clean too
    assert again.exit_code == 0 and "cut off" not in again.output


def fake_model(monkeypatch, fail_on_call=None):
    calls = []

    async def prediction(http, body):
        calls.append(body["messages"][-1]["content"])
        if fail_on_call == len(calls):
            raise RuntimeError("killed")
        return "liver"

    monkeypatch.setattr(judge_cli, "_prediction", prediction)
    return calls


def write_questions(path, n):
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Q{i}?", "answer": "Liver",
                                        "dataset": "medqa"}) + "\n" for i in range(n)))


def test_generate_resumes_cleanly_after_a_crash_in_the_middle_of_a_write_and_run_passes(tmp_path, monkeypatch):
    """Before: the torn prediction was glued to the next one; `run` then found an invalid line and exited 2 on
    every later run until someone edited the file."""
    data, preds, out = tmp_path / "d.jsonl", tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_questions(data, 6)
    fake_model(monkeypatch)
    monkeypatch.setattr(judge_cli, "append_jsonl", torn_append(on_call=4))
    args = ["generate", "--dataset", str(data), "--model-url", "http://model.test/v1", "--model", "m",
            "--output", str(preds), "--concurrency", "1"]
    assert runner.invoke(judge_cli.app, args).exit_code != 0
    assert len(preds.read_text().splitlines()) == 4 and not preds.read_text().endswith("\n")  # q3 torn

    monkeypatch.setattr(judge_cli, "append_jsonl", datasets.append_jsonl)  # the process restarts
    calls = fake_model(monkeypatch)
    resumed = runner.invoke(judge_cli.app, args)
    assert resumed.exit_code == 0, resumed.output
    assert calls == ["Q3?", "Q4?", "Q5?"]  # the torn row asked again, the whole ones not
    assert [r["id"] for r in every_line_is_json(preds)] == [f"q{i}" for i in range(6)]

    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge()[0])
    judged = runner.invoke(judge_cli.app, ["run", "--input", str(preds), "--output", str(out)])
    assert judged.exit_code == 0, judged.output
    assert sorted(ids_in(out)) == [f"q{i}" for i in range(6)]


def test_a_torn_last_prediction_is_named_as_such_by_run(tmp_path, monkeypatch):
    """`run` on a predictions file whose generate crashed (not rerun): the torn last line is an invalid line
    (exit 2, the item is missing), and the warning says to rerun generate."""
    preds, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_preds(preds, 3)
    with preds.open("a") as f:
        f.write('{"id": "q3", "task": "medqa", "refer')
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge()[0])
    r = runner.invoke(judge_cli.app, ["run", "--input", str(preds), "--output", str(out)])
    assert r.exit_code == judge_cli.EXIT_UNJUDGED and ":4: invalid line" in r.output
    assert "rerun `medix-judge generate`" in r.output


def test_a_torn_line_in_the_middle_is_still_an_error_and_is_left_alone(tmp_path, monkeypatch):
    """Only the tail is repaired: a broken line before it (an older glued write, a hand edit) is reported with
    its number and exit 2, as before, and the resume does not touch it."""
    data, preds = tmp_path / "d.jsonl", tmp_path / "p.jsonl"
    write_questions(data, 4)
    write_preds(preds, 2)
    with preds.open("a") as f:
        f.write('{"id": "q2", "task": "medqa", "refer\n')
    before = preds.read_text()
    fake_model(monkeypatch)
    gen = runner.invoke(judge_cli.app, ["generate", "--dataset", str(data), "--model-url", "http://m.test/v1",
                                        "--model", "m", "--output", str(preds)])
    assert gen.exit_code == 0 and preds.read_text().startswith(before) and "cut off" not in gen.output
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge()[0])
    r = runner.invoke(judge_cli.app, ["run", "--input", str(preds), "--output", str(tmp_path / "r.jsonl")])
    assert r.exit_code == judge_cli.EXIT_UNJUDGED and ":3: invalid line" in r.output
    assert "rerun" not in r.output


def test_a_whole_last_record_without_its_newline_is_closed_not_redone(tmp_path, monkeypatch):
    preds, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_preds(preds, 4)
    out.write_text(json.dumps({"id": "q0", "task": "medqa", "rubric": "binary", "score": 0.0, "votes": [0]}))
    judge, calls = fake_judge()
    monkeypatch.setattr(AsyncMedixClient, "judge", judge)
    r = runner.invoke(judge_cli.app, ["run", "--input", str(preds), "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert [i for c in calls for i in c] == ["q1", "q2", "q3"]
    assert [rec["id"] for rec in every_line_is_json(out)] == ["q0", "q1", "q2", "q3"]


def test_each_batch_is_synced_to_disk(tmp_path, monkeypatch):
    preds, out = tmp_path / "p.jsonl", tmp_path / "r.jsonl"
    write_preds(preds, 10)
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge()[0])
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    r = runner.invoke(judge_cli.app, ["run", "--input", str(preds), "--output", str(out), "--batch-size", "4"])
    assert r.exit_code == 0, r.output
    assert synced == [out.stat().st_ino] * 3  # one per batch of 4, 4, 2


def test_repair_tail_reads_back_past_long_lines(tmp_path):
    repair_tail = datasets.repair_tail
    path = tmp_path / "o.jsonl"
    whole = json.dumps({"id": "a", "text": "x" * 300}) + "\n"
    path.write_text(whole + '{"id": "b", "text": "' + "y" * 1000)
    assert repair_tail(path, chunk=64) == "cut" and path.read_text() == whole
    assert repair_tail(path) is None and path.read_text() == whole
    path.write_text('{"id": "b", "text": "\u00e9')
    path.write_bytes(path.read_bytes()[:-1])  # a character cut in two
    assert repair_tail(path, chunk=4) == "cut" and path.read_bytes() == b""
    assert repair_tail(tmp_path / "missing.jsonl") is None


def test_question_text_lists_options():
    row = {"question": "Which?", "options": "{'A': 'x', 'B': 'y'}"}
    assert judge_cli.question_text(row, "question", "options") == "Which?\n\nOptions:\nA. x\nB. y"
    assert judge_cli.question_text({"question": "Q", "options": ["yes", "no"]}, "question", "options") == \
        "Q\n\nOptions: yes, no"
    assert judge_cli.question_text({"question": "Q", "options": "__import__('os')"}, "question", "options") == "Q"


def test_run_summary_table_and_markdown_carry_intervals(tmp_path, monkeypatch):
    preds, out, md, js = tmp_path / "p.jsonl", tmp_path / "r.jsonl", tmp_path / "s.md", tmp_path / "s.json"
    write_preds(preds, 40)
    monkeypatch.setattr(AsyncMedixClient, "judge", fake_judge()[0])
    r = runner.invoke(judge_cli.app, ["run", "--input", str(preds), "--output", str(out), "--markdown", str(md),
                                      "--summary", str(js)])
    assert r.exit_code == 0, r.output
    s = json.loads(js.read_text())
    medqa = s["tasks"]["medqa"]
    assert medqa["ci_method"] == "wilson" and medqa["ci_low"] < medqa["score"] < medqa["ci_high"]
    assert s["overall_ci_low"] < s["overall"] < s["overall_ci_high"]
    assert s["overall_ci_method"] == "stratified-bootstrap"
    text = md.read_text()
    assert "| task | n | score | 95% CI | failed |" in text
    ci = f"[{medqa['ci_low']:.4f}, {medqa['ci_high']:.4f}] (wilson)"
    assert f"| medqa | 20 | {medqa['score']:.4f} | {ci} | 0 |" in text
    assert "95% CI" in r.output


# -- compare ------------------------------------------------------------------------------------------------------
def write_results(path, scores, task=lambda i: ("medqa", "pubmedqa")[i % 2]):
    """One result per id `q<i>`; scores[i] None is a failed item."""
    with path.open("w") as f:
        for i, s in scores.items():
            f.write(json.dumps({"id": f"q{i}", "task": task(i), "rubric": "binary", "score": s, "votes": []}) + "\n")


def flipped(scores, down, up):
    """A candidate: the first `down` correct items become wrong, the first `up` wrong items become right."""
    out, d, u = dict(scores), 0, 0
    for i, s in scores.items():
        if s == 1.0 and d < down:
            out[i], d = 0.0, d + 1
        elif s == 0.0 and u < up:
            out[i], u = 1.0, u + 1
    return out


def compare_args(tmp_path, base, cand, *extra):
    b, c = tmp_path / "base.jsonl", tmp_path / "cand.jsonl"
    write_results(b, base)
    write_results(c, cand)
    return ["compare", "--baseline", str(b), "--candidate", str(c), "--markdown", str(tmp_path / "c.md"),
            "--summary", str(tmp_path / "c.json"), *extra]


BASE = {i: float(i % 5 != 0) for i in range(300)}  # 80% right


def test_compare_clear_regression_fails_the_gate(tmp_path):
    r = runner.invoke(judge_cli.app, compare_args(tmp_path, BASE, flipped(BASE, 60, 5), "--max-drop", "0.02"))
    assert r.exit_code == judge_cli.EXIT_REGRESSION, r.output
    md = (tmp_path / "c.md").read_text()
    assert "**Verdict: regression**" in md and "| **overall** | 300 |" in md and "| medqa | 150 |" in md
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["overall"]["diff"] == pytest.approx(-55 / 300, abs=0.01) and c["overall"]["ci_high"] < -0.02
    assert c["overall"]["p_value"] < 0.001 and c["verdict"] == "regression"
    report_only = runner.invoke(judge_cli.app, compare_args(tmp_path, BASE, flipped(BASE, 60, 5)))
    assert report_only.exit_code == 0 and "report only" in report_only.output


def test_compare_noise_passes_and_improvement_passes(tmp_path):
    noise = runner.invoke(judge_cli.app, compare_args(tmp_path, BASE, flipped(BASE, 6, 5), "--max-drop", "0.02"))
    assert noise.exit_code == 0, noise.output
    assert "**Verdict: no significant change**" in (tmp_path / "c.md").read_text()
    better = runner.invoke(judge_cli.app, compare_args(tmp_path, BASE, flipped(BASE, 2, 30), "--max-drop", "0.02"))
    assert better.exit_code == 0 and "**Verdict: improvement**" in (tmp_path / "c.md").read_text()


def test_compare_small_drop_on_few_items_is_noise(tmp_path):
    """40 items, 0.60 -> 0.55: the issue's example; no gate should fail on it."""
    base = {i: float(i % 5 < 3) for i in range(40)}
    r = runner.invoke(judge_cli.app, compare_args(tmp_path, base, flipped(base, 3, 1), "--max-drop", "0.02"))
    c = json.loads((tmp_path / "c.json").read_text())
    assert r.exit_code == 0 and c["overall"]["verdict"] == "no significant change"
    assert c["overall"]["ci_low"] < -0.05 < c["overall"]["ci_high"]


def test_compare_mismatched_ids_are_counted_listed_and_left_out(tmp_path):
    base = {i: BASE[i] for i in range(100)}
    cand = {i: BASE[i] for i in range(15, 120)} | {3: None}
    cand[50] = None
    r = runner.invoke(judge_cli.app, compare_args(tmp_path, base, cand, "--max-drop", "0.02", "--show-ids", "3"))
    assert r.exit_code == 0, r.output
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["only_in_baseline"] == sorted(f"q{i}" for i in range(15) if i != 3)  # all of them, in the JSON
    assert c["only_in_candidate"] == sorted(f"q{i}" for i in range(100, 120))
    assert c["failed_in_candidate"] == ["q3", "q50"] and c["overall"]["pairs"] == 100 - 14 - 2
    assert "14 ids only in the baseline" in r.output and "(+11 more)" in r.output
    assert "20 ids only in the candidate" in (tmp_path / "c.md").read_text()


def test_compare_reports_a_task_mismatch_as_an_error(tmp_path):
    b, c = tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    write_results(b, {i: 1.0 for i in range(10)})
    write_results(c, {i: 1.0 for i in range(10)}, task=lambda i: "slake" if i == 4 else ("medqa", "pubmedqa")[i % 2])
    r = runner.invoke(judge_cli.app, ["compare", "--baseline", str(b), "--candidate", str(c)])
    assert r.exit_code == 0 and "error: id 'q4': task 'medqa'" in r.output and "'slake'" in r.output


def test_compare_exit_2_when_nothing_pairs(tmp_path):
    r = runner.invoke(judge_cli.app, compare_args(tmp_path, {i: 1.0 for i in range(5)},
                                                  {i: 1.0 for i in range(5, 10)}, "--max-drop", "0.02"))
    assert r.exit_code == judge_cli.EXIT_UNPAIRED and "cannot compare" in r.output
    assert json.loads((tmp_path / "c.json").read_text())["pairable"] is False


def test_compare_each_task_gate_and_reproducibility(tmp_path):
    medqa_down = [i for i in BASE if i % 2 == 0 and BASE[i] == 1.0][:30]  # medqa: 30 of 150 lost
    up_b = {i: (0.0 if i in medqa_down else 1.0 if i % 2 == 1 else BASE[i]) for i in BASE}  # pubmedqa: 30 won
    args = compare_args(tmp_path, BASE, up_b, "--max-drop", "0.02", "--seed", "3", "--resamples", "2000")
    r = runner.invoke(judge_cli.app, args)
    c = json.loads((tmp_path / "c.json").read_text())
    assert r.exit_code == 0 and c["tasks"]["medqa"]["verdict"] == "regression" and c["verdict"] != "regression"
    assert runner.invoke(judge_cli.app, [*args, "--each-task"]).exit_code == judge_cli.EXIT_REGRESSION
    assert json.loads((tmp_path / "c.json").read_text()) == c  # same seed, same numbers


def test_compare_help_documents_exit_codes_and_the_p_value():
    r = runner.invoke(judge_cli.app, ["compare", "--help"], terminal_width=200)
    assert "Exit codes" in r.output and "sign-flip" in r.output and "--max-drop" in r.output


def test_compare_a_one_pair_task_does_not_decide_the_gate(tmp_path):
    """200 unchanged pairs in one task, one pair lost in another: the overall interval collapses onto -0.5, but
    a single pair is no evidence (sign-flip p = 1): no regression."""
    base = {i: 1.0 for i in range(201)}
    cand = {**base, 200: 0.0}
    b, c = tmp_path / "base.jsonl", tmp_path / "cand.jsonl"
    task = lambda i: "tiny" if i == 200 else "big"  # noqa: E731
    write_results(b, base, task=task)
    write_results(c, cand, task=task)
    r = runner.invoke(judge_cli.app, ["compare", "--baseline", str(b), "--candidate", str(c), "--max-drop", "0.02",
                                      "--summary", str(tmp_path / "c.json")])
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["overall"]["diff"] == pytest.approx(-0.5) and out["overall"]["p_value"] > 0.5
    assert r.exit_code == 0 and out["overall"]["verdict"] == "no significant change", r.output
    assert out["tasks"]["tiny"]["verdict"] == "not enough pairs"


def test_compare_skips_and_reports_scores_outside_0_1(tmp_path):
    """NaN (which JSON readers accept) or -40 in a results file is reported and left out; it must not silence the
    gate on the 49 other items, all lost."""
    base = {i: 1.0 for i in range(50)}
    cand = {i: 0.0 for i in range(50)}
    b, c = tmp_path / "base.jsonl", tmp_path / "cand.jsonl"
    write_results(b, base)
    write_results(c, cand)
    with c.open("a") as f:
        f.write('{"id": "q7", "task": "pubmedqa", "rubric": "binary", "score": NaN, "votes": []}\n')
        f.write('{"id": "q8", "task": "medqa", "rubric": "binary", "score": -40, "votes": []}\n')
    r = runner.invoke(judge_cli.app, ["compare", "--baseline", str(b), "--candidate", str(c), "--max-drop", "0.02",
                                      "--summary", str(tmp_path / "c.json")])
    assert r.exit_code == judge_cli.EXIT_REGRESSION, r.output
    assert "cand.jsonl:51: not a result" in r.output and "cand.jsonl:52: not a result" in r.output
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["overall"]["pairs"] == 50 and out["overall"]["diff"] == -1.0
