"""Medical QA JSONL -> a TRL prompt dataset with `ground_truth` and `modality` columns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clients.datasets import modality_tag, read_jsonl

SYSTEM_PROMPT = (
    "You answer questions about medical images and cases. First name the image modality as a tag such as "
    "<X_RAY>, <CT_SCAN> or <MRI_SCAN>. Then reason step by step inside <thinking></thinking>, and give the "
    "final short answer inside <answer></answer>, with nothing after it."
)


def to_example(row: dict[str, Any], question_field: str = "question", answer_field: str = "answer") -> dict[str, Any]:
    """One training example. Extra columns (e.g. `image`, `images`) pass through unchanged for VLM policies."""
    passthrough = {k: v for k, v in row.items() if k in ("image", "images")}
    return {
        "prompt": [{"role": "system", "content": SYSTEM_PROMPT},
                   {"role": "user", "content": str(row[question_field])}],
        "ground_truth": str(row[answer_field]),
        "modality": modality_tag(row),
        **passthrough,
    }


def load_dataset(path: Path, limit: int | None = None, question_field: str = "question",
                 answer_field: str = "answer") -> Any:
    from datasets import Dataset

    rows = []
    for row in read_jsonl(path):
        rows.append(to_example(row, question_field, answer_field))
        if limit and len(rows) >= limit:
            break
    return Dataset.from_list(rows)
