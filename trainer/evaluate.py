"""Held-back predictions scored with the training reward (/reward), component by component.

`medix-judge run` says whether the answers are right; this says what the reward the policy was trained on makes
of the same predictions (format, modality, both accuracies, overall):

    python -m trainer.evaluate --predictions preds.jsonl --holdout runs/medix-grpo/holdout.jsonl \
        --url http://127.0.0.1:8200 --markdown rewards.md

`--predictions` is `medix-judge generate`'s output (id, prediction); `--holdout` the file `medix-train` wrote
(id, answer, modality).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from clients.client import MedixClient
from clients.contract import SCORE_KEYS, ground_truth
from clients.datasets import modality_tag, read_jsonl


def score_predictions(predictions: Path, holdout: Path, url: str | None = None, api_key: str | None = None,
                      profile: str | None = None) -> dict[str, Any]:
    rows = {str(r["id"]): r for r in read_jsonl(holdout)}
    items = []
    for p in read_jsonl(predictions):
        row = rows.get(str(p["id"]))
        if row is None:
            continue
        items.append({"id": str(p["id"]), "response": p.get("prediction") or "", "question": row.get("question"),
                      "ground_truth": ground_truth(row["answer"], modality_tag(row))})
    with MedixClient(url, api_key, retries=30) as client:
        results = client.reward(items, profile)
    means: dict[str, Any] = {"n": len(results)}
    for key in SCORE_KEYS:
        values = [getattr(r, key) for r in results if getattr(r, key) is not None]
        means[key] = sum(values) / len(values) if values else None
    means["unscored"] = sum(1 for r in results if r.overall is None)
    return means


def markdown(means: dict[str, Any], label: str) -> str:
    head = "| policy | n | " + " | ".join(SCORE_KEYS) + " |"
    rule = "| --- | ---: | " + " | ".join("---:" for _ in SCORE_KEYS) + " |"
    cells = " | ".join("—" if means[k] is None else f"{means[k]:.3f}" for k in SCORE_KEYS)
    return f"{head}\n{rule}\n| {label} | {means['n']} | {cells} |\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score held-back predictions with /reward, per component.")
    parser.add_argument("--predictions", type=Path, required=True, help="medix-judge generate output (JSONL)")
    parser.add_argument("--holdout", type=Path, required=True, help="holdout.jsonl written by medix-train")
    parser.add_argument("--url", help="service URL (default MEDIX_URL)")
    parser.add_argument("--api-key", help="service key (default MEDIX_API_KEY)")
    parser.add_argument("--profile", help="reward profile (default: the service's)")
    parser.add_argument("--label", default="policy", help="row label of the Markdown table")
    parser.add_argument("--markdown", type=Path, help="write a one-row Markdown table here")
    args = parser.parse_args(argv)
    means = score_predictions(args.predictions, args.holdout, args.url, args.api_key, args.profile)
    print(json.dumps(means))
    if args.markdown:
        args.markdown.write_text(markdown(means, args.label))


if __name__ == "__main__":
    main()
