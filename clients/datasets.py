"""The bundled medical QA sets (clients/data/, see SOURCES.md there), and GRPO-shaped sample batches built from
them for tests, the benchmark and demos."""

from __future__ import annotations

import json
import os
import random
import re
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


# -- the synthetic labelled file of `medix-judge agree` (clients/data/synthetic_agreement.jsonl) ---------------------
SYNTHETIC_AGREEMENT = DATA_DIR / "synthetic_agreement.jsonl"
AGREEMENT_KINDS = {"exact": 1, "paraphrase": 1, "wrong": 0, "hedged": 0}  # binary: kind -> the rule's label
REPORT_KINDS = {"same": 5, "first_sentence": 3, "added": 3, "other": 0}  # report: kind -> the rule's 0-5 score
# How often one synthetic annotator departs from the rule on each kind: the ambiguous kinds most.
ANNOTATOR_NOISE = {"exact": 0.02, "paraphrase": 0.12, "wrong": 0.05, "hedged": 0.35,
                   "same": 0.2, "first_sentence": 0.4, "added": 0.4, "other": 0.1}


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def _plain(answer: str) -> bool:
    """An answer the reward's rules judge on its content: 2 characters or more, no `:` or `?`."""
    return len(answer) >= 2 and ":" not in answer and "?" not in answer


def _binary_prediction(kind: str, ref: str, wrong: str, rng: random.Random) -> str:
    if kind == "exact":
        return ref
    if kind == "paraphrase":
        return rng.choice([f"It is {ref}", f"The answer is {ref}", f"{ref}, most likely", f"I would go with {ref}"])
    if kind == "wrong":
        return wrong
    return rng.choice([f"Either {ref} or {wrong}", f"{wrong} or possibly {ref}"])


def _annotators(rule: int, kind: str, top: int, rng: random.Random, n: int = 3) -> list[int]:
    """n synthetic annotators: each gives the rule's label, or with ANNOTATOR_NOISE[kind] departs from it (binary:
    the other label; report: one point up or down, within 0-top)."""
    out = []
    for _ in range(n):
        label = rule
        if rng.random() < ANNOTATOR_NOISE[kind]:
            label = 1 - rule if top == 1 else min(top, max(0, rule + rng.choice([-1, 1])))
        out.append(label)
    return out


def synthetic_agreement(per_task: int = 24, reports: int = 12, seed: int = 27) -> list[dict[str, Any]]:
    """The synthetic labelled file: questions of the bundled sets with made-up predictions of known kinds and three
    made-up annotators' labels (no person labelled anything). Binary tasks (MedQA, PubMedQA, SLAKE): the kinds of
    AGREEMENT_KINDS in turn, labelled by the rule there (the reference verbatim or reworded: 1; another answer or
    a hedge between two: 0); a report task (PubMedQA-conclusion): a study's conclusion verbatim (5), its first
    sentence only (3), with another study's first sentence added (3), or another study's conclusion (0). Each
    annotator departs from the rule as ANNOTATOR_NOISE says. Deterministic for a seed."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    sets = [("MedQA-USMLE-4-options", MEDQA), ("PubMedQA", PUBMEDQA), ("SLAKE", SLAKE)]
    for task, path in sets:
        rows = [r for r in read_jsonl(path) if _plain(str(r["answer"]))]
        answers = sorted({str(r["answer"]) for r in rows})
        for i, row in enumerate(rng.sample(rows, per_task)):
            kind = list(AGREEMENT_KINDS)[i % len(AGREEMENT_KINDS)]
            ref = str(row["answer"])
            options = row.get("options")
            choices = [str(v) for v in (options.values() if isinstance(options, dict) else options or answers)]
            wrong = rng.choice([a for a in choices if a.lower() != ref.lower() and _plain(a)])
            line = {"id": f"{row['id']}-{kind}", "task": task, "rubric": "binary",
                    "question": str(row["question"])[:800], "reference": ref,
                    "prediction": _binary_prediction(kind, ref, wrong, rng)}
            if row.get("modality"):
                line["modality"] = row["modality"]
            rule = AGREEMENT_KINDS[kind]
            out.append({**line, "human": _annotators(rule, kind, 1, rng), "kind": kind, "rule_label": rule})
    studies = [r for r in read_jsonl(PUBMEDQA) if len(_sentences(r["long_answer"])) >= 2]
    chosen = rng.sample(studies, reports * 2)
    for i, (row, other) in enumerate(zip(chosen[:reports], chosen[reports:], strict=True)):
        kind = list(REPORT_KINDS)[i % len(REPORT_KINDS)]
        ref = row["long_answer"].strip()
        prediction = {"same": ref, "first_sentence": _sentences(ref)[0],
                      "added": f"{ref} {_sentences(other['long_answer'])[0]}",
                      "other": other["long_answer"].strip()}[kind]
        rule = REPORT_KINDS[kind]
        out.append({"id": f"{row['id']}-conclusion-{kind}", "task": "PubMedQA-conclusion", "rubric": "report",
                    "question": f"{row['question']} Summarise the study's conclusion.", "reference": ref,
                    "prediction": prediction, "human": _annotators(rule, kind, 5, rng), "kind": kind,
                    "rule_label": rule})
    return out
