"""OpenRLHF: the reward file for `--reward.remote_url clients/adapters/openrlhf.py` (OpenRLHF >= 0.10.2).

OpenRLHF loads this file and calls `reward_func(queries, prompts, labels)` for each sample (one-element lists),
`queries[i]` being the decoded prompt + response tokens. Unlike the plain HTTP path (`--reward.remote_url
http://host:8000/get_reward`), the file can send a key (MEDIX_API_KEY), retries the way the MediX client does,
and an outage reaches OpenRLHF as the real exception (it logs it and leaves the sample without a reward) instead
of five bare status lines. Service address and key: MEDIX_URL / MEDIX_API_KEY, or the keyword arguments `url`,
`api_key`, `profile`, `timeout`, `retries` when this function is wrapped.

`response_of` finds where the response starts in such a query; the service's /get_reward uses the same function.
"""

from __future__ import annotations

from typing import Any

from clients.adapters.common import checked, client_options, shared_client
from clients.contract import COMPONENTS, ground_truth, numeric_scores

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


def strip_end_markers(text: str) -> str:
    text = text.rstrip()
    changed = True
    while changed:
        changed = False
        for marker in END_MARKERS:
            if text.endswith(marker):
                text, changed = text[: -len(marker)].rstrip(), True
    return text


def response_of(query: str, prompt: str | None) -> str:
    """The response in an OpenRLHF query, without the end-of-turn markers after it. Raises ResponseNotFound."""
    return strip_end_markers(query[response_start(query, prompt):])


def reward_func(queries: list[str], prompts: list[str] | None, labels: list[Any], **kwargs: Any) -> dict[str, Any]:
    """OpenRLHF's reward function: `rewards` and `scores` (the overall reward) and `extra_logs` (the four
    components, numbers only, the same keys for every sample). Raises on an outage, never returns a 0 for it."""
    prompts = list(prompts) if prompts is not None else [None] * len(queries)
    if not len(queries) == len(prompts) == len(labels):
        raise ValueError(f"{len(queries)} queries, {len(prompts)} prompts, {len(labels)} labels")
    items = []
    for i, (query, prompt, label) in enumerate(zip(queries, prompts, labels, strict=True)):
        try:
            response = response_of(query, prompt)
        except ResponseNotFound as exc:
            raise ResponseNotFound(f"queries[{i}]: {exc}") from None
        items.append({"id": str(i), "response": response, "ground_truth": ground_truth(label)})
    results = checked(shared_client(**client_options(kwargs)).reward(items, kwargs.get("profile")),
                      [f"queries[{i}]" for i in range(len(items))])
    scores = [numeric_scores(r) for r in results]
    rewards = [s["overall"] for s in scores]
    return {"rewards": rewards, "scores": rewards,
            "extra_logs": {name: [s[name] for s in scores] for name in COMPONENTS}}
