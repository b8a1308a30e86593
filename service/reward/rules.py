"""The MediX-R1 reward rules as pure functions: no I/O, no backends, no state.

Two rule sets share this module (docs/reward-rules.md puts them side by side):
- `published` (profiles `medix-r1`, `medix-r1-soft`): the published reward function, edge cases included;
- `strict` (profile `medix-r1-strict`, opt-in): one thinking block and one answer block, inner edge spaces
  trimmed, case-insensitive modality via lower-case.

Every rule runs in time linear in the response length: model outputs are untrusted and may be long and
degenerate (whitespace runs, thousands of unclosed tags), and one slow item stalls its whole batch. Hence
no regex here can restart a scan at every position of a run, and block searches are plain `str.find`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # only for the type hint: the rules stay importable without pydantic models
    from service.reward.profiles import Profile

RuleSet = Literal["published", "strict"]
Decision = Literal["exact", "invalid", "backends"]


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
    """`answer` is the ground truth's text as given (after the tag); each rule set trims it its own way."""

    answer: str
    modality: Modality | None


THINKING_OPEN, THINKING_CLOSE = "<thinking>", "</thinking>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"

# Rule 1. `(?<!\s)` lets the first alternative start only at the first character of a whitespace run, so a
# run is scanned once (then backed off once) instead of once per position: linear, where the plain
# `\s+(?=[<>/])` is quadratic in the run length. The second alternative starts only right after a tag character.
_AROUND_TAG_CHARS = re.compile(r"(?<!\s)\s+(?=[<>/])|(?<=[<>/])\s+")
# `</thinking>`, whitespace, `<answer>`: the literal prefix anchors each try and `<` ends the whitespace, so a
# failed try costs only the run after that `</thinking>`; runs after distinct `</thinking>` are disjoint.
_BRIDGE = re.compile(r"</thinking>\s*<answer>")
_SPACES = re.compile(r"\s*")
_GT_TAG = re.compile(r"^\s*<([A-Za-z_]+)>(.*)$", re.DOTALL)


def normalise(response: str) -> str:
    """Rule 1: remove every whitespace run that touches '<', '>' or '/'."""
    return _AROUND_TAG_CHARS.sub("", response)


# -- rule 2: format ---------------------------------------------------------------------------------------
def format_score(normalised: str) -> float:
    """Rule 2 (published): the text from the first <thinking> on, stripped, is matched as a whole by
    `<thinking>.*?</thinking>\\s*<answer>.*?</answer>` (DOTALL), decided without backtracking.

    A whole match exists iff the text starts with <thinking> (it does, by construction), ends with
    </answer>, and some `</thinking>\\s*<answer>` lies entirely between the two, i.e. starts at or after
    index 10 and ends at or before len - 9 (the lazy texts may be empty and may contain anything).
    The first such occurrence ends earliest: a later `</thinking>` cannot begin inside an earlier
    occurrence (`<` is neither whitespace nor inside `thinking>`/`answer>`), so checking the first suffices.
    """
    start = normalised.find(THINKING_OPEN)
    if start < 0:
        return 0.0
    text = normalised[start:].strip()
    if not text.endswith(ANSWER_CLOSE):
        return 0.0
    bridge = _BRIDGE.search(text, len(THINKING_OPEN))
    return 1.0 if bridge is not None and bridge.end() <= len(text) - len(ANSWER_CLOSE) else 0.0


def strict_format_score(normalised: str) -> float:
    """Rule 2 (strict): from the first <thinking> on, exactly one thinking block, optional whitespace and
    exactly one answer block, nothing after (no stripping).

    Equivalent to a whole match of `<thinking>(?:(?!</?thinking>).)*</thinking>\\s*<answer>(?:(?!</?answer>).)*
    </answer>` (DOTALL): each block ends at the first closing tag after its opening tag and may not
    contain another opening tag (tags cannot overlap one another, so `in` on the slice is exact).
    """
    start = normalised.find(THINKING_OPEN)
    if start < 0:
        return 0.0
    text = normalised[start:]
    think_end = text.find(THINKING_CLOSE, len(THINKING_OPEN))
    if think_end < 0 or THINKING_OPEN in text[len(THINKING_OPEN):think_end]:
        return 0.0
    answer_start = _SPACES.match(text, think_end + len(THINKING_CLOSE)).end()
    if not text.startswith(ANSWER_OPEN, answer_start):
        return 0.0
    body = answer_start + len(ANSWER_OPEN)
    answer_end = text.find(ANSWER_CLOSE, body)
    if answer_end < 0 or ANSWER_OPEN in text[body:answer_end]:
        return 0.0
    return 1.0 if answer_end + len(ANSWER_CLOSE) == len(text) else 0.0


# -- rule 4: the predicted answer -------------------------------------------------------------------------
def answer_block(normalised: str) -> str | None:
    """The inside of the first <answer>…</answer>, or None.

    Same as `re.search(r"<answer>(.*?)</answer>", s, re.DOTALL)`: if the first <answer> has no </answer>
    after it, no later <answer> has one either, so two finds decide it (the regex is quadratic when many
    <answer> are left unclosed).
    """
    start = normalised.find(ANSWER_OPEN)
    if start < 0:
        return None
    body = start + len(ANSWER_OPEN)
    end = normalised.find(ANSWER_CLOSE, body)
    return normalised[body:end] if end >= 0 else None


def trim_answer(text: str) -> str:
    """Rule 4 (published): whitespace off both ends, then dots off both ends, nothing more (`Brain .` -> `Brain `)."""
    return text.strip().strip(".")


def strict_trim_answer(text: str) -> str:
    """Rule 4 (strict): also the whitespace the dots uncover (`Brain .` -> `Brain`)."""
    return text.strip().strip(".").strip()


def extract_answer(normalised: str, trim: Callable[[str], str] = trim_answer) -> str:
    """Rule 4: the first answer block's inside, else the whole (normalised) response; trimmed."""
    block = answer_block(normalised)
    return trim(normalised if block is None else block)


# -- rule 3: ground truth ---------------------------------------------------------------------------------
def parse_ground_truth(value: str | dict | GroundTruth) -> GroundTruth:
    """Rule 3: `<TAG>answer` or {"answer": ..., "modality": TAG | null}. Raises ValueError otherwise.

    A plain string with no leading tag is taken as an answer without modality; a leading
    `<WORD>` that is not a known tag is rejected, since it is almost always a typo. The answer is kept
    as given (the text after the tag's `>`); a reference that trims to nothing is rejected.
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
    # The stricter trim empties a superset of what the published one empties (e.g. `. .`): reject those too.
    if not strict_trim_answer(answer):
        raise ValueError("the reference answer is empty")
    return GroundTruth(answer=answer, modality=modality)


# -- rule 5 -----------------------------------------------------------------------------------------------
def is_invalid_answer(answer: str, min_length: int, forbidden: tuple[str, ...]) -> bool:
    """Rule 5: too short, or containing a forbidden substring (anti reward hacking)."""
    return len(answer) < min_length or any(s in answer for s in forbidden)


# -- rule 9: modality -------------------------------------------------------------------------------------
def modality_score(normalised: str, modality: Modality | None) -> float | None:
    """Rule 9 (published): the text before the first <thinking>, trimmed, equals <TAG> after upper-casing
    both (str.upper: `ſ` upper-cases to `S`); no <thinking> gives 0; null without a modality."""
    if modality is None:
        return None
    start = normalised.find(THINKING_OPEN)
    if start < 0:
        return 0.0
    return 1.0 if normalised[:start].strip().upper() == f"<{modality.value}>".upper() else 0.0


def strict_modality_score(normalised: str, modality: Modality | None) -> float | None:
    """Rule 9 (strict): as published but compared lower-cased, and with no <thinking> the whole text is
    the prefix (a bare `<X_RAY>` scores 1)."""
    if modality is None:
        return None
    prefix = normalised.split(THINKING_OPEN, 1)[0].strip()
    return 1.0 if prefix.lower() == f"<{modality.value}>".lower() else 0.0


# -- rules 1-6 and 9 together -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rules:
    trim: Callable[[str], str]
    format: Callable[[str], float]
    modality: Callable[[str, Modality | None], float | None]


RULE_SETS: dict[str, Rules] = {
    "published": Rules(trim=trim_answer, format=format_score, modality=modality_score),
    "strict": Rules(trim=strict_trim_answer, format=strict_format_score, modality=strict_modality_score),
}


@dataclass(frozen=True, slots=True)
class Settled:
    """What the rules decide without a backend; `decided_by` says whether the backends are still needed."""

    answer: str
    reference: str
    format: float
    modality: float | None
    decided_by: Decision


def settle(response: str, ground_truth: str | dict | GroundTruth, profile: Profile) -> Settled:
    """Rules 1-6 and 9 under the profile's rule set: invalid answers score 0 (checked first), an exact
    match scores 1, anything else goes to the judge and the embedder."""
    gt = parse_ground_truth(ground_truth)
    chosen = RULE_SETS[profile.rule_set]
    text = normalise(response)
    answer = extract_answer(text, chosen.trim)
    reference = chosen.trim(gt.answer)
    decided: Decision
    if is_invalid_answer(answer, profile.invalid_min_length, profile.invalid_substrings):
        decided = "invalid"
    elif answer == reference:
        decided = "exact"
    else:
        decided = "backends"
    return Settled(answer=answer, reference=reference, format=chosen.format(text),
                   modality=chosen.modality(text, gt.modality), decided_by=decided)


# -- rule 10 ----------------------------------------------------------------------------------------------
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
