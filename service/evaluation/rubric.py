"""Pure functions of the judge: reasoning stripping, reply parsing, voting (summaries: clients.evaluation)."""

from __future__ import annotations

import json

from service.evaluation.prompts import Rubric

# The closing tags of a reasoning block, in the order the published evaluation tries them (case-sensitive).
_REASONING_ENDS = ("</think>", "</thinking>")


def strip_reasoning(prediction: str) -> str:
    """As the published evaluation: after the last `</think>` if there is one, else after the last
    `</thinking>` if there is one, else everything; then trimmed. Case-sensitive (`</THINK>` is kept)."""
    for end in _REASONING_ENDS:
        _, found, tail = prediction.rpartition(end)
        if found:
            return tail.strip()
    return prediction.strip()


def _braced(text: str) -> list[str]:
    """What `re.findall(r"\\{.*?\\}", text, re.DOTALL)` finds, in linear time: from each `{` to the next `}`.
    (The regex restarts at every `{` when none is closed: quadratic on a reply of many `{`.)"""
    out, pos = [], 0
    while (start := text.find("{", pos)) >= 0 and (end := text.find("}", start)) >= 0:
        out.append(text[start:end + 1])
        pos = end + 1
    return out


def parse_score(reply: str, rubric: Rubric) -> int | None:
    """The integer `score` of the first JSON object in the reply, if it is in the rubric's range; None for
    anything else, never an exception: a reply nested deeper than the JSON parser goes (`[` * 5000 raises
    RecursionError), or one that is not text, does not parse (the caller asks again, then fails that item)."""
    if not isinstance(reply, str):
        return None
    for candidate in [reply.strip(), *_braced(reply)]:
        try:
            value = json.loads(candidate)
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict) and isinstance(value.get("score"), int) and not isinstance(value["score"], bool):
            score = value["score"]
            top = 1 if rubric == "binary" else 5
            return score if 0 <= score <= top else None
    return None


def aggregate(votes: list[int], rubric: Rubric) -> tuple[float, float]:
    """(score, raw): binary -> majority (1 when more than half the rounds say 1); report -> mean / 5 and mean."""
    if not votes:
        raise ValueError("no votes")
    if rubric == "binary":
        s = 1.0 if 2 * sum(votes) > len(votes) else 0.0
        return s, s
    mean = sum(votes) / len(votes)
    return mean / 5.0, mean
