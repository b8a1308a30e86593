"""Names and small helpers of the public wire contract, shared by the client, the adapters and the service.

Nothing here imports the server: the client package installs and runs without it.
"""

from __future__ import annotations

from typing import Any

# The five score keys of every /reward result, in this order; the last four are the components.
SCORE_KEYS = ("overall", "format", "accuracy_llm", "accuracy_embed", "modality")
COMPONENTS = SCORE_KEYS[1:]


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
