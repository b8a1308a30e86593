"""The MediX-R1 reward rules as pure functions: no I/O, no backends, no state."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class Modality(StrEnum):
    X_RAY = "X_RAY"
    MICROSCOPY = "MICROSCOPY"
    CLINICAL_PHOTOGRAPHY = "CLINICAL_PHOTOGRAPHY"
    CT_SCAN = "CT_SCAN"
    GRAPHICS = "GRAPHICS"
    ANGIOGRAPHY = "ANGIOGRAPHY"
    PET_SCAN = "PET_SCAN"
    ULTRASOUND = "ULTRASOUND"
    MRI_SCAN = "MRI_SCAN"
    FUNDUS_PHOTOGRAPHY = "FUNDUS_PHOTOGRAPHY"
    OCT_SCAN = "OCT_SCAN"
    ENDOSCOPY = "ENDOSCOPY"
    MAMMOGRAPHY = "MAMMOGRAPHY"
    FLUOROSCOPY = "FLUOROSCOPY"
    OTHER = "OTHER"
    SPECT = "SPECT"


@dataclass(frozen=True, slots=True)
class GroundTruth:
    answer: str
    modality: Modality | None


# Whitespace runs touching '<', '>' or '/' (an empty replacement is faster than a group template).
_AROUND_TAG_CHARS = re.compile(r"\s+(?=[<>/])|(?<=[<>/])\s+")
# Exactly one thinking block, optional whitespace, exactly one answer block, nothing after.
_FORMAT = re.compile(
    r"<thinking>(?:(?!</?thinking>).)*</thinking>\s*<answer>(?:(?!</?answer>).)*</answer>",
    re.DOTALL,
)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_GT_TAG = re.compile(r"^\s*<([A-Za-z_]+)>(.*)$", re.DOTALL)
THINKING_OPEN = "<thinking>"


def normalise(response: str) -> str:
    """Rule 1: remove whitespace directly around '<', '>' and '/'."""
    return _AROUND_TAG_CHARS.sub("", response)


def format_score(normalised: str) -> float:
    """Rule 2: from the first <thinking> on, exactly <thinking>…</thinking> <answer>…</answer>."""
    start = normalised.find(THINKING_OPEN)
    if start < 0:
        return 0.0
    return 1.0 if _FORMAT.fullmatch(normalised, start) else 0.0


def trim_answer(text: str) -> str:
    """Rule 4's trimming, applied to predicted and reference answers alike."""
    return text.strip().strip(".").strip()


def extract_answer(normalised: str) -> str:
    """Rule 4: inside of the first <answer>…</answer>, else the whole response; trimmed."""
    m = _ANSWER.search(normalised)
    return trim_answer(m.group(1) if m else normalised)


def parse_ground_truth(value: str | dict | GroundTruth) -> GroundTruth:
    """Rule 3: `<TAG>answer` or {"answer": ..., "modality": TAG | null}. Raises ValueError otherwise.

    A plain string with no leading tag is taken as an answer without modality; a leading
    `<WORD>` that is not a known tag is rejected, since it is almost always a typo.
    """
    if isinstance(value, GroundTruth):
        return value
    if isinstance(value, str):
        m = _GT_TAG.match(value)
        if m:
            tag = m.group(1).upper()
            if tag not in Modality.__members__:
                raise ValueError(f"unknown modality tag <{m.group(1)}>; expected one of {', '.join(Modality)}")
            answer, modality = m.group(2), Modality(tag)
        else:
            answer, modality = value, None
    elif isinstance(value, dict):
        answer = value.get("answer")
        if not isinstance(answer, str):
            raise ValueError("object form needs a string 'answer'")
        raw = value.get("modality")
        if raw is None:
            modality = None
        elif isinstance(raw, str) and raw.strip().strip("<>").upper() in Modality.__members__:
            modality = Modality(raw.strip().strip("<>").upper())
        else:
            raise ValueError(f"unknown modality {raw!r}; expected one of {', '.join(Modality)} or null")
    else:
        raise ValueError("must be a string '<TAG>answer' or an object {answer, modality}")
    answer = trim_answer(answer)
    if not answer:
        raise ValueError("the reference answer is empty")
    return GroundTruth(answer=answer, modality=modality)


def is_invalid_answer(answer: str, min_length: int, forbidden: tuple[str, ...]) -> bool:
    """Rule 5: too short, or containing a forbidden substring (anti reward hacking)."""
    return len(answer) < min_length or any(s in answer for s in forbidden)


def modality_score(normalised: str, modality: Modality | None) -> float | None:
    """Rule 9: the text before <thinking>, trimmed, equals <TAG> ignoring case; null without a modality."""
    if modality is None:
        return None
    prefix = normalised.split(THINKING_OPEN, 1)[0].strip()
    return 1.0 if prefix.lower() == f"<{modality.value}>".lower() else 0.0


def compose(
    *,
    format_: float,
    accuracy_llm: float,
    accuracy_embed: float,
    modality: float | None,
    weights: dict[str, float],
    content_weight: float,
    format_weight: float,
) -> float:
    """Rule 10, with a null modality's weight shared out over the other content components."""
    w_llm, w_embed = weights["accuracy_llm"], weights["accuracy_embed"]
    content = w_llm * accuracy_llm + w_embed * accuracy_embed
    total = w_llm + w_embed
    if modality is not None:
        content += weights["modality"] * modality
        total += weights["modality"]
    return content_weight * (content / total if total else 0.0) + format_weight * format_
