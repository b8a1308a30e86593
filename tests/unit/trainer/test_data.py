"""trainer.data: the prompt a policy sees, and the held-back split (pure logic, no model, no network)."""

from __future__ import annotations

import json
from pathlib import Path

from trainer.data import (
    EXAMPLE_REPLY,
    SYSTEM_PROMPT,
    image_line,
    prompt_messages,
    split_holdout,
    to_example,
    user_message,
    write_holdout,
)

ROW = {"id": "slake_1", "dataset": "SLAKE", "question": "Which organ is abnormal?", "answer": "Lung",
       "modality": "CT", "location": "Lung", "img_id": 7}


def test_image_line_from_the_rows_metadata() -> None:
    assert image_line(ROW) == "Image: CT scan, lung."
    assert image_line({**ROW, "modality": "X-Ray", "location": "Chest_heart"}) == "Image: X-ray, chest heart."
    assert image_line({**ROW, "location": None}) == "Image: CT scan."
    assert image_line({"question": "q"}) is None


def test_user_message_with_and_without_the_image_line() -> None:
    assert user_message(ROW) == "Image: CT scan, lung.\nQuestion: Which organ is abnormal?"
    assert user_message(ROW, image_hint=False) == "Which organ is abnormal?"
    assert user_message({"question": "Why?"}) == "Why?"  # no modality, no image line


def test_worked_example_is_an_earlier_exchange_in_the_format() -> None:
    messages = prompt_messages(ROW)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == SYSTEM_PROMPT and messages[2]["content"] == EXAMPLE_REPLY
    assert EXAMPLE_REPLY.startswith("<X_RAY><thinking>") and EXAMPLE_REPLY.endswith("</answer>")
    assert [m["role"] for m in prompt_messages(ROW, worked_example=False)] == ["system", "user"]


def test_example_carries_the_reward_columns() -> None:
    example = to_example({**ROW, "image": "a.jpg", "qid": 3})
    assert example["ground_truth"] == "Lung" and example["modality"] == "CT_SCAN" and example["image"] == "a.jpg"
    assert "qid" not in example


def test_holdout_takes_whole_images() -> None:
    rows = [{"id": str(i), "img_id": i // 3, "question": "q", "answer": "a"} for i in range(36)]  # 12 images
    train, held = split_holdout(rows, 4)
    assert {r["img_id"] for r in held} == {3, 7, 11}  # every 4th image, counted from the first one seen
    assert not {r["img_id"] for r in train} & {r["img_id"] for r in held}
    assert len(train) + len(held) == len(rows)
    assert split_holdout(rows, 0) == (rows, [])


def test_holdout_without_image_ids_counts_rows() -> None:
    rows = [{"id": str(i), "question": "q", "answer": "a"} for i in range(10)]
    train, held = split_holdout(rows, 5)
    assert [r["id"] for r in held] == ["4", "9"] and len(train) == 8


def test_holdout_file_is_what_medix_judge_generate_reads(tmp_path: Path) -> None:
    path = tmp_path / "holdout.jsonl"
    write_holdout(path, [ROW, {"question": "Why?", "answer": "Because"}])
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first == {"id": "slake_1", "dataset": "SLAKE", "question": user_message(ROW), "answer": "Lung",
                     "modality": "CT"}
    assert second["id"] == "1" and second["dataset"] == "data" and second["modality"] is None
