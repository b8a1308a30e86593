"""Prompts of the reference-based evaluation judge (our wording) and the JSON each reply must follow."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

Rubric = Literal["binary", "report"]
# Bias probes: the item asked a second time with the prompt changed in a way that should not change the verdict.
# `swap`: the prediction in the reference's place and the reference in the prediction's (a symmetric question for
# `binary`, "do these say the same thing"; for `report` the scale reads omissions and additions the other way).
Probe = Literal["swap"]
PROMPT_VERSION = "medix-eval-v1"

SYSTEM = {
    "binary": (
        "You grade a model's answer to a medical question against the reference answer. Score 1 when the "
        "prediction states the reference answer, or names the correct option, possibly in other words; score 0 "
        "when it states something else, hedges between several answers, or gives no answer. Reply only with "
        'JSON: {"score": 0} or {"score": 1}.'
    ),
    "report": (
        "You grade a generated medical report or summary against the reference for clinical accuracy on a 0-5 "
        "scale: 5 all key findings correct and nothing wrong added; 4 minor omissions; 3 some key findings "
        "missing or one clinically relevant error; 2 several errors or omissions; 1 mostly wrong; 0 unrelated "
        'or empty. Reply only with JSON: {"score": N} with N from 0 to 5.'
    ),
}

USER = "Question:\n{question}\n\nReference answer:\n{reference}\n\nPrediction:\n{prediction}"
RECHECK = (
    "Check your judgement again: compare the prediction with the reference once more and correct your score "
    "if it was wrong. Reply only with the JSON."
)


def schema(rubric: Rubric) -> dict[str, Any]:
    values = [0, 1] if rubric == "binary" else [0, 1, 2, 3, 4, 5]
    return {"type": "object", "properties": {"score": {"type": "integer", "enum": values}},
            "required": ["score"], "additionalProperties": False}


def first_messages(rubric: Rubric, question: str, reference: str, prediction: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM[rubric]},
            {"role": "user", "content": USER.format(question=question or "(not given)", reference=reference,
                                                    prediction=prediction or "(empty)")}]


def probe_texts(probe: Probe, reference: str, prediction: str) -> tuple[str, str]:
    """The (reference, prediction) that the probe's prompt shows in place of the item's. The probe's conversation
    is then the main prompt's on these texts (`first_messages`, `RECHECK`): the same cache key as an item sent with
    the two texts exchanged, which is the same question, so their verdicts are shared."""
    if probe == "swap":
        return prediction, reference
    raise ValueError(f"unknown probe {probe!r}")


def fingerprint(rubric: Rubric) -> str:
    """What of the prompts decides a rubric's scores, hashed: the version and every text and schema the judge
    sees (a cache key built on this misses when a prompt's wording changes under the same version)."""
    parts = [PROMPT_VERSION, SYSTEM[rubric], USER, RECHECK, json.dumps(schema(rubric), sort_keys=True)]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]
