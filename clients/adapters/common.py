"""What every adapter shares: turning a framework's sample into a /reward item, and a result into a score dict."""

from __future__ import annotations

from typing import Any

from clients.client import MedixClient
from clients.contract import COMPONENTS


def text_of(message: Any) -> str:
    """A completion or prompt as text: plain strings pass; chat messages give the last message's content."""
    if isinstance(message, str):
        return message
    if isinstance(message, list) and message:
        last = message[-1]
        content = last.get("content", "") if isinstance(last, dict) else last
        if isinstance(content, list):  # multimodal content parts: keep the text parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return str(content)
    if isinstance(message, dict):
        return str(message.get("content", ""))
    return str(message)


def component_means(results: list[Any]) -> dict[str, float]:
    out = {}
    for name in COMPONENTS:
        values = [getattr(r, name) for r in results if getattr(r, name) is not None]
        if values:
            out[name] = sum(values) / len(values)
    return out


_clients: dict[tuple[str | None, str | None], MedixClient] = {}


def shared_client(url: str | None = None, api_key: str | None = None) -> MedixClient:
    """One pooled client per (url, key) for the synchronous adapters (EasyR1, verl)."""
    key = (url, api_key)
    if key not in _clients:
        _clients[key] = MedixClient(url, api_key)
    return _clients[key]


def score_dict(r: Any, overall_key: str = "overall") -> dict[str, float]:
    """A result as the flat numeric dict trainers log: a null modality (no modality in the label) is 0 here,
    since frameworks average every key and cannot hold a null."""
    return {overall_key: r.overall, **{name: (getattr(r, name) if getattr(r, name) is not None else 0.0)
                                       for name in COMPONENTS}}
