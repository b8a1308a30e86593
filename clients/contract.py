"""Names and small helpers of the public wire contract, shared by the client, the adapters and the service.

Nothing here imports the server: the client package installs and runs without it.
"""

from __future__ import annotations

import re
from typing import Any

# The five score keys of every /reward result, in this order; the last four are the components.
SCORE_KEYS = ("overall", "format", "accuracy_llm", "accuracy_embed", "modality")
COMPONENTS = SCORE_KEYS[1:]
# With an adapter's `on_refused="skip"` (and /get_reward's `?on_refused=skip`), every sample also carries this key:
# 1.0 for an item the service refused (scored with the chosen neutral reward), else 0.0; its mean is the share refused.
REFUSED_KEY = "medix_refused"


def ground_truth(answer: Any, modality: Any = None) -> str | dict[str, Any]:
    """A reference (and an optional modality tag such as `X_RAY`) in a form /reward accepts.

    An object passes through; with a modality the method's own `<TAG>answer` form is built; otherwise the
    text is sent as it is (the service reads a leading `<TAG>` from it, as the method's data carries one).
    """
    if isinstance(answer, dict):
        return answer
    if modality:
        return f"<{str(modality).strip('<>')}>{answer}"
    return str(answer)


def numeric_scores(result: Any, overall_key: str = "overall") -> dict[str, float]:
    """A scored result (anything with the five score attributes) as the flat numeric dict trainers log: the same
    keys for every result, `overall` under `overall_key`, and a null component (a null modality: no modality in
    the label) as 0, since frameworks average every key and cannot hold a null. An unscored result (null
    `overall`) is a ValueError: callers fail such items first, each the way its framework can bear it."""
    if result.overall is None:
        raise ValueError(f"result {getattr(result, 'id', '?')} has no score; fail unscored results first "
                         "(the adapters' checked())")
    return {overall_key: float(result.overall),
            **{name: float(v) if (v := getattr(result, name)) is not None else 0.0 for name in COMPONENTS}}


def refused_scores(result: Any, reward: float, overall_key: str = "overall") -> dict[str, float]:
    """The numeric dict of an item the service refused, for a caller that opted to go on (`on_refused="skip"`):
    `reward` (the neutral reward the caller chose) under `overall_key`, the components it has (a null as 0), and
    REFUSED_KEY 1.0. `numeric_scores(...) | {REFUSED_KEY: 0.0}` is the scored items' counterpart."""
    return {overall_key: float(reward),
            **{name: float(v) if (v := getattr(result, name, None)) is not None else 0.0 for name in COMPONENTS},
            REFUSED_KEY: 1.0}


# -- OpenRLHF's queries: where the response starts (the reward file and the service's /get_reward) -----------
# End-of-turn markers a decoded sequence may still carry after the response (decoded with special tokens).
END_MARKERS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<eos>",
               "<|end|>", "<｜end▁of▁sentence｜>", "<pad>", "<|pad|>")
# Where chat templates open the assistant's turn: the response follows the last one in a query.
ASSISTANT_MARKERS = ("<|im_start|>assistant", "<|start_header_id|>assistant<|end_header_id|>", "<|assistant|>",
                     "<start_of_turn>model", "<｜Assistant｜>", "[/INST]")
# The shortest tail of the prompt that, found in the query, is trusted to mark where the prompt ends.
MIN_TAIL = 16


class ResponseNotFound(ValueError):
    """The query does not show where its prompt ends, so the response cannot be told apart from the prompt."""


def _longest_prompt_tail(query: str, prompt: str) -> int:
    """The length of the longest suffix of `prompt` that occurs in `query`. Occurrence is monotone in the length
    (a suffix of an occurring string occurs too), so a binary search finds it in O(log n) substring searches."""
    lo, hi = 0, len(prompt)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if prompt[-mid:] in query:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _after_last_assistant_marker(query: str) -> int | None:
    ends = [i + len(m) for m in ASSISTANT_MARKERS if (i := query.rfind(m)) >= 0]
    if not ends:
        return None
    start = max(ends)
    while start < len(query) and query[start] == "\n":  # templates put a newline or two after the marker
        start += 1
    return start


def response_start(query: str, prompt: str | None) -> int:
    """Where the response starts in `query` (the decoded prompt + response).

    1. The query starts with the prompt: right after it.
    2. Otherwise the longest tail of the prompt found in the query (at least MIN_TAIL characters, or the whole
       prompt) marks the prompt's end: the prompt was truncated from the left, or a vision-language processor
       expanded its image placeholders (only the text after the last image survives as it was sent).
    3. Otherwise the last assistant-turn marker of a known chat template.
    Without a prompt, a query that carries no assistant marker is all response. Raises ResponseNotFound.
    """
    if prompt:
        if query.startswith(prompt):
            return len(prompt)
        k = _longest_prompt_tail(query, prompt)
        if k >= min(MIN_TAIL, len(prompt)):
            return query.find(prompt[-k:]) + k
    marker = _after_last_assistant_marker(query)
    if marker is not None:
        return marker
    if prompt:
        raise ResponseNotFound("cannot tell where the response starts: the query holds neither the prompt nor its "
                               f"last {MIN_TAIL} characters, nor an assistant-turn marker of a known chat template")
    return 0


def _end_run_pattern(markers: tuple[str, ...]) -> re.Pattern[str]:
    """Matches, at the start of a reversed text, its run of trailing whitespace and end markers. No marker ends
    with another (so at most one fits the end at each point and the run has a single reading) and none holds
    whitespace; the groups are possessive, so the match never backtracks: one pass over the run."""
    overlapping = any(a != b and a.endswith(b) for a in markers for b in markers)
    if overlapping or any(c.isspace() for m in markers for c in m):
        raise ValueError("end markers must not end one another nor hold whitespace")
    reversed_markers = "|".join(re.escape(m[::-1]) for m in sorted(markers, key=len, reverse=True))
    return re.compile(rf"\s*+(?:(?:{reversed_markers})\s*+)*+")


_END_RUN = _end_run_pattern(END_MARKERS)


def strip_end_markers(text: str) -> str:
    """`text` without its trailing whitespace and end-of-turn markers, in any order and number (`answer</s>
    <|im_end|>` and a newline -> `answer`). Linear in the text's length: one reversed copy and one regex pass
    over the run (stripping marker by marker copied the text each time: quadratic on thousands of markers)."""
    return text[: len(text) - _END_RUN.match(text[::-1]).end()]


def response_of(query: str, prompt: str | None) -> str:
    """The response in an OpenRLHF query, without the end-of-turn markers after it. Raises ResponseNotFound."""
    return strip_end_markers(query[response_start(query, prompt):])
