"""medix-judge agree and calibrate end to end: the real service, the local judge, the bundled synthetic labelled
file (20 of its items, one round each, with the swap probe)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sklearn.metrics import cohen_kappa_score

from clients.audit import consensus
from clients.datasets import SYNTHETIC_AGREEMENT, read_jsonl

pytestmark = pytest.mark.integration
JUDGE_BIN = str(Path(sys.executable).parent / "medix-judge")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """5 items of each task of the bundled synthetic file: 15 binary, 5 report."""
    rows, taken = [], {}
    for r in read_jsonl(SYNTHETIC_AGREEMENT):
        if taken.get(r["task"], 0) < 5:
            taken[r["task"]] = taken.get(r["task"], 0) + 1
            rows.append(r)
    path = tmp_path_factory.mktemp("audit") / "labelled.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path, rows


def test_agree_end_to_end_with_the_swap_probe_then_resumes(service, labelled, tmp_path):
    path, rows = labelled
    out, s_path, md = tmp_path / "results.jsonl", tmp_path / "agree.json", tmp_path / "agree.md"
    argv = [JUDGE_BIN, "agree", "--input", str(path), "--output", str(out), "--url", service.url, "--rounds", "1",
            "--probe", "swap", "--summary", str(s_path), "--markdown", str(md), "--resamples", "200",
            "--batch-size", "8"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr

    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in rows)  # each id once
    for r in results:
        assert r["score"] is not None and len(r["votes"]) == 1
        assert r["probe"]["kind"] == "swap" and isinstance(r["probe"]["flipped"], bool)
        assert r["rubric"] == next(x["rubric"] for x in rows if x["id"] == r["id"])

    s = json.loads(s_path.read_text())
    assert set(s["tasks"]) == {"MedQA-USMLE-4-options", "PubMedQA", "SLAKE", "PubMedQA-conclusion"}
    by_id = {r["id"]: r for r in results}
    for task in ("MedQA-USMLE-4-options", "PubMedQA", "SLAKE"):
        t = s["tasks"][task]
        mine = [x for x in rows if x["task"] == task and consensus(x["human"], "binary") is not None]
        people = [consensus(x["human"], "binary") for x in mine]
        judge = [int(by_id[x["id"]]["score"]) for x in mine]
        assert t["n"] == len(mine) and {"agreement", "kappa", "kappa_low", "kappa_high"} <= set(t)
        assert t["agreement"] == pytest.approx(sum(a == b for a, b in zip(people, judge, strict=True)) / len(mine))
        assert t["confusion"]["matrix"][0][0] + t["confusion"]["matrix"][1][1] == sum(
            a == b for a, b in zip(people, judge, strict=True))
        if len(set(people) | set(judge)) > 1:
            assert t["kappa"] == pytest.approx(cohen_kappa_score(people, judge, labels=[0, 1]))
        flips = sum(by_id[x["id"]]["probe"]["flipped"] for x in rows if x["task"] == task)
        assert t["probe"]["probed"] == 5 and t["probe"]["flipped"] == flips
    report = s["tasks"]["PubMedQA-conclusion"]
    assert report["n_report"] == 5 and {"weighted_kappa", "weighted_kappa_low", "spearman"} <= set(report)
    assert s["overall"]["n"] == sum(t["n"] for t in s["tasks"].values())
    assert s["unjudged"] == s["failed"] == s["invalid_lines"] == 0
    text = md.read_text()
    assert text.startswith("### MediX judge against people: `labelled.jsonl`\n\nNo gate")
    assert "| **overall** |" in text and "| PubMedQA-conclusion | judge 0 |" in text

    # Resumes like `run`: every id is there, nothing is judged again; the gate is read from the same results.
    again = subprocess.run([*argv, "--min-kappa", "1.01"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "resuming: 20 ids already" in again.stderr and "under --min-kappa 1.01" in again.stderr
    assert len(out.read_text().splitlines()) == 20


def test_judge_probe_on_the_wire(service):
    item = {"id": "p1", "task": "medqa", "question": "Which organ filters the blood?", "reference": "Kidney",
            "prediction": "The kidney, most likely"}
    body = {"items": [item], "rounds": 1, "probe": "swap", "explain": True}
    first = httpx.post(f"{service.url}/judge", json=body, timeout=300).json()["results"][0]
    assert first["score"] in (0.0, 1.0) and first["probe"]["kind"] == "swap"
    assert first["probe"]["score"] in (0.0, 1.0) and len(first["probe"]["replies"]) == 1
    assert first["probe"]["flipped"] == (first["probe"]["score"] != first["score"])
    # The probe's question is the one an item with the two texts exchanged asks: the same cache entry.
    swapped = {**item, "id": "p2", "reference": item["prediction"], "prediction": item["reference"]}
    second = httpx.post(f"{service.url}/judge", json={"items": [swapped], "rounds": 1}, timeout=300).json()
    assert second["results"][0]["cached"] and second["results"][0]["score"] == first["probe"]["score"]
    plain = httpx.post(f"{service.url}/judge", json={"items": [item], "rounds": 1}, timeout=300).json()
    assert "probe" not in plain["results"][0] and plain["results"][0]["cached"]


def test_calibrate_end_to_end(service, labelled, tmp_path):
    path, rows = labelled
    png, s_path = tmp_path / "reliability.png", tmp_path / "calibration.json"
    done = subprocess.run([JUDGE_BIN, "calibrate", "--input", str(path), "--url", service.url, "--plot", str(png),
                           "--summary", str(s_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    s = json.loads(s_path.read_text())
    binary = [r for r in rows if r["rubric"] == "binary"]
    assert s["report_lines"] == 5
    for name in ("medix-r1", "medix-r1-soft", "medix-r1-strict"):
        p = s["profiles"][name]
        assert p["failed"] == 0 and p["n"] + s["ties"] == len(binary)
        assert 0 <= p["brier"] <= 1 and 0 <= p["ece"] <= 1 and sum(p["reliability"]["count"]) == p["n"]
    assert s["best"]["profile"] in s["profiles"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert "### MediX reward calibration: `labelled.jsonl`" in done.stdout
