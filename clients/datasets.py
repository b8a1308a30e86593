"""The bundled medical QA sets (clients/data/, see SOURCES.md there), and GRPO-shaped sample batches built from
them for tests, the benchmark and demos."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from clients.contract import ground_truth

DATA_DIR = Path(__file__).resolve().parent / "data"
SLAKE = DATA_DIR / "slake_en_test.jsonl"
PUBMEDQA = DATA_DIR / "pubmedqa_test.jsonl"
MEDQA = DATA_DIR / "medqa_usmle_4opt_test.jsonl"

# SLAKE's modality names -> the method's tags.
SLAKE_MODALITY = {"CT": "CT_SCAN", "X-Ray": "X_RAY", "MRI": "MRI_SCAN"}

SAMPLE_KINDS = ("exact", "paraphrase", "wrong", "malformed")
DEFAULT_MIX = {"exact": 0.25, "paraphrase": 0.35, "wrong": 0.25, "malformed": 0.15}


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a JSONL file as they are (newline included), each with its 1-based line number."""
    with path.open() as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                yield n, line


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    for _, line in numbered_lines(path):
        yield json.loads(line)


# -- appending to a JSONL output that a crash may have cut off ------------------------------------------------
def repair_tail(path: Path, chunk: int = 1 << 16) -> str | None:
    """Make `path` end at the end of a line before anything is appended to it. A last line without its newline is
    what a crash in the middle of a write leaves: appended to as it is, the next record would be glued onto it and
    both lost. Such a line is closed (its newline added) when it is a whole JSON object (only the newline is
    missing), else cut off: its record was never complete, so its id is not done and will be done again. Lines
    before it are not touched (a broken line in the middle stays an error for the reader). Returns "closed",
    "cut", or None (the file is missing, empty, or ends with a newline)."""
    if not path.exists():
        return None
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return None
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return None
        start = _last_line_start(f, size, chunk)
        f.seek(start)
        try:
            whole = isinstance(json.loads(f.read()), dict)
        except ValueError:  # UnicodeDecodeError included: a character cut in two
            whole = False
        if whole:
            f.seek(0, os.SEEK_END)
            f.write(b"\n")
        else:
            f.truncate(start)
        f.flush()
        os.fsync(f.fileno())
    return "closed" if whole else "cut"


def _last_line_start(f: IO[bytes], size: int, chunk: int) -> int:
    """The offset just after the last newline of the file (0 when it has none), read backwards by chunks."""
    end = size
    while end > 0:
        begin = max(0, end - chunk)
        f.seek(begin)
        i = f.read(end - begin).rfind(b"\n")
        if i >= 0:
            return begin + i + 1
        end = begin
    return 0


def open_jsonl_append(path: Path) -> IO[str]:
    """`path` opened for appending JSONL records, its torn last line repaired first (`repair_tail`)."""
    repair_tail(path)
    return path.open("a")


def append_jsonl(f: IO[str], records: Iterable[dict[str, Any]]) -> None:
    """Append records, one JSON line each, in one write; flushed and synced to disk (os.fsync) before returning,
    so a record reported done survives a crash of the process or of the machine."""
    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    f.flush()
    os.fsync(f.fileno())


def modality_tag(row: dict[str, Any]) -> str | None:
    raw = row.get("modality")
    return SLAKE_MODALITY.get(raw, raw) if raw else None


def row_ground_truth(row: dict[str, Any]) -> str | dict[str, Any]:
    """A bundled set's row (`answer`, optional `modality`) as a /reward `ground_truth`."""
    return ground_truth(row["answer"], modality_tag(row))


def _paraphrase(answer: str, rng: random.Random) -> str:
    forms = [answer.lower(), f"the {answer.lower()}", f"It is {answer}", f"{answer}, most likely",
             f"Findings indicate {answer.lower()}", answer.upper()]
    return rng.choice(forms)


def _response(tag: str | None, answer: str, rng: random.Random, malformed: bool) -> str:
    head = f"<{tag}>" if tag and rng.random() < 0.8 else ""
    thinking = "The image and the question point to this answer."
    if not malformed:
        return f"{head}<thinking>{thinking}</thinking>\n<answer>{answer}</answer>"
    return rng.choice([
        f"{head}{answer}",  # no tags at all
        f"{head}<thinking>{thinking}</thinking><answer>Answer: {answer}</answer>",  # invalid ':'
        f"{head}<thinking>{thinking}</thinking><answer>{answer}?</answer>",  # invalid '?'
        f"{head}<thinking>{thinking}</thinking><answer>{answer}</answer> I hope this helps",  # text after
        f"{head}<thinking>{thinking}</thinking><answer>_</answer>",  # one character
    ])


def grpo_batch(rows: list[dict[str, Any]], questions: int, samples: int, seed: int = 0,
               mix: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """`questions` x `samples` /reward items with a seeded mix of exact, paraphrased, wrong and malformed answers.

    Each item carries `kind` (not part of the wire contract; the service ignores it).
    """
    rng = random.Random(seed)
    mix = mix or DEFAULT_MIX
    chosen = rng.sample(rows, questions)
    answers = sorted({str(r["answer"]) for r in rows})
    items = []
    for q, row in enumerate(chosen):
        tag, ref = modality_tag(row), str(row["answer"])
        for s in range(samples):
            kind = rng.choices(list(mix), weights=list(mix.values()))[0]
            if kind == "exact":
                ans = ref
            elif kind == "paraphrase":
                ans = _paraphrase(ref, rng)
            elif kind == "wrong":
                ans = rng.choice([a for a in answers if a.lower() != ref.lower()])
            else:
                ans = ref
            items.append({
                "id": f"{row.get('id', q)}-{s}", "kind": kind, "question": row.get("question"),
                "response": _response(tag, ans, rng, malformed=kind == "malformed"),
                "ground_truth": row_ground_truth(row),
            })
    return items
