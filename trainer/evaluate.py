"""Held-back predictions scored with the training reward (/reward), component by component.

`medix-judge run` says whether the answers are right; this says what the reward the policy was trained on makes
of the same predictions (format, modality, both accuracies, overall):

    python -m trainer.evaluate --predictions preds.jsonl --holdout runs/medix-grpo/holdout.jsonl \
        --url http://127.0.0.1:8200 --markdown rewards.md

`--predictions` is `medix-judge generate`'s output (id, prediction); `--holdout` the file `medix-train` wrote
(id, answer, modality).

`medix-judge generate` asks each question with a system prompt alone. To ask them as training did, with the worked
example as an earlier exchange, let this module write the predictions first (same fields, so `medix-judge run`
judges them as usual):

    python -m trainer.evaluate --holdout runs/medix-grpo/holdout.jsonl --model-url http://127.0.0.1:8302/v1 \
        --model policy --predictions preds.jsonl --url http://127.0.0.1:8200
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from clients.client import MedixClient
from clients.contract import SCORE_KEYS
from clients.datasets import read_jsonl, row_ground_truth


def score_predictions(predictions: Path, holdout: Path, url: str | None = None, api_key: str | None = None,
                      profile: str | None = None) -> dict[str, Any]:
    rows = {str(r["id"]): r for r in read_jsonl(holdout)}
    items = []
    for p in read_jsonl(predictions):
        row = rows.get(str(p["id"]))
        if row is None:
            continue
        items.append({"id": str(p["id"]), "response": p.get("prediction") or "", "question": row.get("question"),
                      "ground_truth": row_ground_truth(row)})
    with MedixClient(url, api_key, retries=30) as client:
        results = client.reward(items, profile)
    means: dict[str, Any] = {"n": len(results)}
    for key in SCORE_KEYS:
        values = [getattr(r, key) for r in results if getattr(r, key) is not None]
        means[key] = sum(values) / len(values) if values else None
    means["unscored"] = sum(1 for r in results if r.overall is None)
    return means


def generate(holdout: Path, model_url: str, model: str, output: Path, max_tokens: int = 64,
             concurrency: int = 8) -> int:
    """Ask the policy each held-back question greedily, with the training prompt (system prompt, worked example,
    then the question); write `medix-judge generate`'s fields (id, task, question, reference, prediction).
    Returns how many requests failed (their rows are left out)."""
    import httpx

    from trainer.data import EXAMPLE_QUESTION, EXAMPLE_REPLY, SYSTEM_PROMPT

    rows = list(read_jsonl(holdout))
    failed = 0

    async def go() -> list[dict[str, Any]]:
        nonlocal failed
        slots = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=model_url.rstrip("/"), timeout=600) as http:
            async def one(row: dict[str, Any]) -> dict[str, Any] | None:
                nonlocal failed
                messages = [{"role": "system", "content": SYSTEM_PROMPT},
                            {"role": "user", "content": EXAMPLE_QUESTION},
                            {"role": "assistant", "content": EXAMPLE_REPLY},
                            {"role": "user", "content": row["question"]}]
                async with slots:
                    try:
                        resp = await http.post("/chat/completions", json={
                            "model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
                        resp.raise_for_status()
                        text = resp.json()["choices"][0]["message"]["content"] or ""
                    except (httpx.HTTPError, KeyError, IndexError, ValueError):
                        failed += 1
                        return None
                return {"id": str(row["id"]), "task": str(row.get("dataset", "data")), "question": row["question"],
                        "reference": str(row["answer"]), "prediction": text}

            return [r for r in await asyncio.gather(*(one(r) for r in rows)) if r is not None]

    done = asyncio.run(go())
    with output.open("w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in done)
    return failed


def markdown(means: dict[str, Any], label: str) -> str:
    head = "| policy | n | " + " | ".join(SCORE_KEYS) + " |"
    rule = "| --- | ---: | " + " | ".join("---:" for _ in SCORE_KEYS) + " |"
    cells = " | ".join("—" if means[k] is None else f"{means[k]:.3f}" for k in SCORE_KEYS)
    return f"{head}\n{rule}\n| {label} | {means['n']} | {cells} |\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score held-back predictions with /reward, per component.")
    parser.add_argument("--predictions", type=Path, required=True,
                        help="medix-judge generate output (JSONL); written first when --model-url is given")
    parser.add_argument("--holdout", type=Path, required=True, help="holdout.jsonl written by medix-train")
    parser.add_argument("--url", help="service URL (default MEDIX_URL)")
    parser.add_argument("--api-key", help="service key (default MEDIX_API_KEY)")
    parser.add_argument("--profile", help="reward profile (default: the service's)")
    parser.add_argument("--label", default="policy", help="row label of the Markdown table")
    parser.add_argument("--markdown", type=Path, help="write a one-row Markdown table here")
    parser.add_argument("--model-url", help="OpenAI-compatible base URL (…/v1) of the policy: ask it the held-back "
                        "questions with the training prompt (worked example included) and write --predictions")
    parser.add_argument("--model", default="policy", help="served model name of the policy")
    parser.add_argument("--max-tokens", type=int, default=64, help="completion budget of each answer")
    parser.add_argument("--generate-only", action="store_true",
                        help="with --model-url: write the predictions and stop (score them later)")
    args = parser.parse_args(argv)
    if args.model_url:
        failed = generate(args.holdout, args.model_url, args.model, args.predictions, args.max_tokens)
        if failed:
            print(f"{failed} questions got no answer from the policy and are left out")
        if args.generate_only:
            return
    means = score_predictions(args.predictions, args.holdout, args.url, args.api_key, args.profile)
    print(json.dumps(means))
    if args.markdown:
        args.markdown.write_text(markdown(means, args.label))


if __name__ == "__main__":
    main()
