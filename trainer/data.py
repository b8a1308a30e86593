"""Medical QA JSONL -> a TRL prompt dataset with `ground_truth` and `modality` columns, and the held-back split.

The prompt has three parts, each switchable from `medix-train`:

- the system prompt, which names the reply's shape (modality tag, `<thinking>` block, `<answer>` block) and the
  tags to use;
- a worked example, given as an earlier user/assistant exchange of the conversation: a small instruct model copies
  the shape of its own earlier reply far more often than it follows a description (SmolLM2-135M with the system
  prompt alone: no reply in the format; with the exchange, some replies in every early step, see
  docs/training.md), and GRPO can only reinforce a format it sometimes samples;
- an image line before the question (`Image: CT scan, lung.`) built from the row's own metadata: SLAKE asks about
  an image the text-only policy cannot see, so without it the modality tag could only be guessed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from clients.datasets import modality_tag, read_jsonl

SYSTEM_PROMPT = (
    "You answer questions about a medical image. Reply in exactly this shape, on one line:\n"
    "<MODALITY_TAG><thinking>one short sentence of reasoning</thinking><answer>a few words</answer>\n"
    "The tag is <X_RAY> for an X-ray, <CT_SCAN> for a CT scan, <MRI_SCAN> for an MRI scan. "
    "Write nothing after </answer>."
)

# Our own example (not a row of the bundled data): the exchange the policy sees before each question.
EXAMPLE_QUESTION = "Image: X-ray, chest.\nQuestion: On which side of the chest does the heart mostly lie?"
EXAMPLE_REPLY = ("<X_RAY><thinking>On a frontal chest X-ray the heart shadow bulges mostly to the patient's left."
                 "</thinking><answer>Left</answer>")

# Words for the image line, by the data's modality name (SLAKE's, or a tag as clients.datasets maps them).
MODALITY_WORDS = {"CT": "CT scan", "CT_SCAN": "CT scan", "X-Ray": "X-ray", "X_RAY": "X-ray", "MRI": "MRI scan",
                  "MRI_SCAN": "MRI scan"}


def image_line(row: dict[str, Any]) -> str | None:
    """`Image: CT scan, lung.` from the row's `modality` and `location`; None when the row has no modality."""
    raw = row.get("modality")
    if not raw:
        return None
    words = MODALITY_WORDS.get(str(raw), str(raw).replace("_", " "))
    location = str(row.get("location") or "").replace("_", " ").strip().lower()
    return f"Image: {words}, {location}." if location else f"Image: {words}."


def user_message(row: dict[str, Any], question_field: str = "question", image_hint: bool = True) -> str:
    """The user turn: the image line (when asked for and known), then the question."""
    line = image_line(row) if image_hint else None
    question = str(row[question_field])
    return f"{line}\nQuestion: {question}" if line else question


def prompt_messages(row: dict[str, Any], question_field: str = "question", worked_example: bool = True,
                    image_hint: bool = True) -> list[dict[str, str]]:
    example = ([{"role": "user", "content": EXAMPLE_QUESTION}, {"role": "assistant", "content": EXAMPLE_REPLY}]
               if worked_example else [])
    return [{"role": "system", "content": SYSTEM_PROMPT}, *example,
            {"role": "user", "content": user_message(row, question_field, image_hint)}]


def to_example(row: dict[str, Any], question_field: str = "question", answer_field: str = "answer", *,
               worked_example: bool = True, image_hint: bool = True) -> dict[str, Any]:
    """One training example. Extra columns (e.g. `image`, `images`) pass through unchanged for VLM policies."""
    passthrough = {k: v for k, v in row.items() if k in ("image", "images")}
    return {
        "prompt": prompt_messages(row, question_field, worked_example, image_hint),
        "ground_truth": str(row[answer_field]),
        "modality": modality_tag(row),
        **passthrough,
    }


def split_holdout(rows: list[dict[str, Any]], every: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(training rows, held-back rows): the rows of every `every`-th image are held back, images counted in order
    of first appearance by `img_id` (a row without one is its own image). Holding back whole images keeps the
    other questions about a held-back image out of training too. `every` 0 holds nothing back."""
    if every <= 0:
        return rows, []
    order: dict[Any, int] = {}
    for i, row in enumerate(rows):
        order.setdefault(row.get("img_id", ("row", i)), len(order))
    held = {img for img, n in order.items() if n % every == every - 1}
    train, holdout = [], []
    for i, row in enumerate(rows):
        (holdout if row.get("img_id", ("row", i)) in held else train).append(row)
    return train, holdout


def read_rows(path: Path) -> list[dict[str, Any]]:
    return list(read_jsonl(path))


def load_dataset(rows: Iterable[dict[str, Any]], limit: int | None = None, question_field: str = "question",
                 answer_field: str = "answer", *, worked_example: bool = True, image_hint: bool = True) -> Any:
    from datasets import Dataset

    out = []
    for row in rows:
        out.append(to_example(row, question_field, answer_field, worked_example=worked_example,
                              image_hint=image_hint))
        if limit and len(out) >= limit:
            break
    return Dataset.from_list(out)


def write_holdout(path: Path, rows: list[dict[str, Any]], question_field: str = "question",
                  answer_field: str = "answer", image_hint: bool = True) -> None:
    """The held-back rows as `medix-judge generate` reads them: `question` is the user turn exactly as training
    builds it (image line included); `answer`, `dataset`, `modality` and `id` are kept."""
    with path.open("w") as f:
        for i, row in enumerate(rows):
            f.write(json.dumps({"id": str(row.get("id", i)), "dataset": row.get("dataset", "data"),
                                "question": user_message(row, question_field, image_hint),
                                "answer": str(row[answer_field]), "modality": row.get("modality")},
                               ensure_ascii=False) + "\n")
