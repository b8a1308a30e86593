"""Embeddings from an OpenAI-compatible /v1/embeddings server (vLLM, TEI)."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from service.backends.base import UNRESOLVED_MODEL, PermanentBackendError, TransientBackendError
from service.backends.http import auth_headers, raise_for_status


class OpenAIEmbedder:
    name = "openai"

    def __init__(self, base_url: str, model: str | None, api_key: str | None, timeout_s: float,
                 max_batch: int) -> None:
        self._base_url = base_url
        self._model = model
        self._max_batch = max_batch
        self._client = httpx.AsyncClient(base_url=base_url, headers=auth_headers(api_key),
                                         timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)))

    @property
    def model_id(self) -> str:
        return self._model or UNRESOLVED_MODEL

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self._client.aclose()

    async def _get(self, path: str) -> httpx.Response:
        try:
            resp = await self._client.get(path)
        except httpx.TransportError as exc:
            raise TransientBackendError(f"cannot reach {self._base_url}: {exc!r}") from exc
        raise_for_status(resp, f"GET {path}")
        return resp

    async def health(self) -> dict[str, Any]:
        models = (await self._get("/models")).json().get("data") or []
        if not self._model and models:
            self._model = str(models[0]["id"])
        return {"url": self._base_url, "model": self._model}

    async def embed(self, texts: list[str], tenant: str = "") -> np.ndarray:
        # The embeddings server batches concurrent requests itself; `tenant` is not needed there.
        if not self._model:
            await self.health()
        rows: list[list[float]] = []
        for i in range(0, len(texts), self._max_batch):
            chunk = texts[i:i + self._max_batch]
            try:
                resp = await self._client.post("/embeddings", json={"model": self._model, "input": chunk})
            except httpx.TimeoutException as exc:
                raise TimeoutError(str(exc)) from exc
            except httpx.TransportError as exc:
                raise TransientBackendError(f"cannot reach {self._base_url}: {exc!r}") from exc
            raise_for_status(resp, "POST /embeddings")
            try:
                data = sorted(resp.json()["data"], key=lambda d: d["index"])
                rows.extend(d["embedding"] for d in data)
            except (KeyError, TypeError, ValueError) as exc:
                raise PermanentBackendError(f"unexpected embeddings reply: {resp.text[:200]}") from exc
        if len(rows) != len(texts):
            raise PermanentBackendError(f"asked for {len(texts)} embeddings, got {len(rows)}")
        vecs = np.asarray(rows, dtype=np.float32)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)
