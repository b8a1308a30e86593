import asyncio
import json

import pytest
from typer.testing import CliRunner

from clients import judge_cli
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


def test_question_text_lists_options():
    row = {"question": "Which?", "options": "{'A': 'x', 'B': 'y'}"}
    assert judge_cli.question_text(row, "question", "options") == "Which?\n\nOptions:\nA. x\nB. y"
    assert judge_cli.question_text({"question": "Q", "options": ["yes", "no"]}, "question", "options") == \
        "Q\n\nOptions: yes, no"
    assert judge_cli.question_text({"question": "Q", "options": "__import__('os')"}, "question", "options") == "Q"
