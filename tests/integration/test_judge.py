"""/judge and medix-judge on the real stack, on real rows of the shared MedQA and PubMedQA files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from clients.datasets import read_jsonl
from tests.integration.stack import DATA, metric

pytestmark = pytest.mark.integration
JUDGE_BIN = str(Path(sys.executable).parent / "medix-judge")


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    """Real questions; predictions right (with reasoning to strip), wrong, and hedged."""
    medqa = list(read_jsonl(DATA / "medqa_usmle_4opt_test.jsonl"))[:6]
    pubmed = list(read_jsonl(DATA / "pubmedqa_test.jsonl"))[:6]
    rows = []
    for i, r in enumerate(medqa + pubmed):
        task = "medqa" if r["dataset"].startswith("MedQA") else "pubmedqa"
        if i % 3 == 0:
            pred = f"<think>Considering the options.</think>{r['answer']}"
        elif i % 3 == 1:
            pred = "no" if r["answer"] == "yes" else "Order a CT scan of the head"
        else:
            pred = str(r["answer"])
        rows.append({"id": r["id"], "task": task, "question": r["question"][:1500], "reference": str(r["answer"]),
                     "prediction": pred})
    path = tmp_path_factory.mktemp("judge") / "predictions.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    return path, rows


def test_judge_scores_votes_and_summary(service, predictions):
    _, rows = predictions
    r = httpx.post(f"{service.url}/judge", json={"items": rows, "rounds": 3, "explain": True}, timeout=600)
    assert r.status_code == 200, r.text
    body = r.json()
    results = body["results"]
    assert [x["id"] for x in results] == [x["id"] for x in rows]
    for x in results:
        assert x["rubric"] == "binary" and len(x["votes"]) == 3 and set(x["votes"]) <= {0, 1}
        assert x["score"] == (1.0 if sum(x["votes"]) >= 2 else 0.0)
        assert len(x["replies"]) == 3 and all(json.loads(rep)["score"] in (0, 1) for rep in x["replies"])
    for task in ("medqa", "pubmedqa"):
        mine = [x["score"] for x in results if x["task"] == task]
        assert body["summary"]["tasks"][task]["n"] == 6
        assert body["summary"]["tasks"][task]["score"] == pytest.approx(sum(mine) / len(mine))
    assert body["summary"]["overall"] == pytest.approx(
        sum(t["score"] for t in body["summary"]["tasks"].values()) / 2)

    calls = metric(service.url, "medix_backend_requests_total", {"backend": "judge", "result": "ok"})
    again = httpx.post(f"{service.url}/judge", json={"items": rows}, timeout=600).json()
    assert all(x["cached"] for x in again["results"])
    assert [x["score"] for x in again["results"]] == [x["score"] for x in results]
    assert metric(service.url, "medix_backend_requests_total", {"backend": "judge", "result": "ok"}) == calls


def test_report_rubric_gives_raw_and_normalised_mean(service):
    item = {"id": "rep-1", "task": "report", "rubric": "report", "question": "Summarise the chest X-ray.",
            "reference": "Right lower lobe consolidation consistent with pneumonia. No effusion.",
            "prediction": "Consolidation in the right lower lobe, likely pneumonia; no pleural effusion."}
    x = httpx.post(f"{service.url}/judge", json={"items": [item], "rounds": 2}, timeout=300).json()["results"][0]
    assert len(x["votes"]) == 2 and all(0 <= v <= 5 for v in x["votes"])
    assert x["raw_score"] == pytest.approx(sum(x["votes"]) / 2) and x["score"] == pytest.approx(x["raw_score"] / 5)


def test_medix_judge_run_resumes_after_a_kill(service, predictions, tmp_path):
    path, rows = predictions
    out, md, summary = tmp_path / "results.jsonl", tmp_path / "summary.md", tmp_path / "summary.json"
    argv = [JUDGE_BIN, "run", "--input", str(path), "--output", str(out), "--url", service.url, "--batch-size", "2",
            "--concurrency", "1", "--markdown", str(md), "--summary", str(summary),
            "--rounds", "2"]  # not the 3 rounds of the other test: nothing comes from the cache
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not out.exists() or not out.read_text().strip()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert 0 < len(first) < len(rows)

    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == sorted(r["id"] for r in rows)  # every id exactly once
    assert f"resuming: {len(first)} ids already" in done.stderr
    assert "medqa" in done.stdout and "overall" in done.stdout  # the table, plain lines when not a TTY
    s = json.loads(summary.read_text())
    assert s["tasks"]["medqa"]["n"] == 6 and s["failed"] == 0
    assert "| pubmedqa | 6 |" in md.read_text()


def test_medix_judge_generate_then_run(service, judge_server, tmp_path):
    preds, out = tmp_path / "preds.jsonl", tmp_path / "results.jsonl"
    gen = subprocess.run([JUDGE_BIN, "generate", "--dataset", str(DATA / "pubmedqa_test.jsonl"), "--model-url",
                          judge_server, "--model", "smollm2-135m-instruct", "--output", str(preds), "--limit", "4",
                          "--max-tokens", "32"], capture_output=True, text=True, timeout=300)
    assert gen.returncode == 0, gen.stderr
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(lines) == 4 and all(x["task"] == "PubMedQA" and x["prediction"] for x in lines)
    assert "Options: yes, no, maybe" in lines[0]["question"]
    run = subprocess.run([JUDGE_BIN, "run", "--input", str(preds), "--output", str(out), "--url", service.url,
                          "--min-score", "1.01"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1 and "under --min-score" in run.stderr  # a tiny model cannot score over 1
