"""Helpers shared by the HTTP backends."""

from __future__ import annotations

import httpx

from service.backends.base import PermanentBackendError, TransientBackendError


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def raise_for_status(resp: httpx.Response, what: str) -> None:
    """5xx and 429 are worth a retry; other 4xx are not."""
    if resp.status_code < 400:
        return
    detail = resp.text[:300]
    if resp.status_code >= 500 or resp.status_code == 429:
        raise TransientBackendError(f"{what} answered {resp.status_code}: {detail}")
    raise PermanentBackendError(f"{what} answered {resp.status_code}: {detail}")
