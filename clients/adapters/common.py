"""What every adapter shares: turning a framework's sample into a /reward item."""

from __future__ import annotations

from typing import Any

from clients.client import MedixClient

COMPONENTS = ("format", "accuracy_llm", "accuracy_embed", "modality")


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


def ground_truth(answer: Any, modality: Any = None) -> Any:
    """A dataset's reference (and optional modality column) in a form /reward accepts."""
    if isinstance(answer, dict):
        return answer
    if modality:
        return {"answer": str(answer), "modality": str(modality)}
    return str(answer)


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
