"""Embeddings from an OpenAI-compatible /v1/embeddings server (vLLM, Hugging Face TEI).

Both serve `POST <url>/embeddings` (the URL ends in /v1). They differ in what else they serve: vLLM lists its
models at `GET <url>/models`; TEI has no such route (404) but tells its model at `GET /info` (`model_id`) and its
state at `GET /health`, both at the server's root. The model id (part of every cached embedding's key, and the
`model` sent) and the health are learned from /models when it answers, else from TEI's /info and /health.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
from opentelemetry.trace import TracerProvider

from service.backends.base import UNRESOLVED_MODEL, PermanentBackendError, TransientBackendError
from service.backends.http import auth_headers, raise_for_status, traced
from service.backends.replies import Embeddings, ModelList, TEIInfo, embedding_matrix, read
from service.runtime.usage import embed_reply

OPENAI = "openai"  # GET <url>/models answers (vLLM, most OpenAI-compatible servers)
TEI = "tei"  # no /models; GET /info and GET /health at the root (Hugging Face text-embeddings-inference)


class OpenAIEmbedder:
    name = "openai"

    def __init__(self, base_url: str, model: str | None, api_key: str | None, timeout_s: float,
                 max_batch: int, transport: httpx.AsyncBaseTransport | None = None,
                 tracer_provider: TracerProvider | None = None) -> None:
        self._base_url = base_url.rstrip("/")
        # TEI's /info and /health sit at the server's root, beside /v1.
        self._root = self._base_url.removesuffix("/v1")
        self._model = model
        self._max_batch = max_batch
        self._server: str | None = None  # learned at the first health check: OPENAI or TEI
        self._client = httpx.AsyncClient(base_url=self._base_url, headers=auth_headers(api_key), transport=transport,
                                         timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)))
        traced([self._client], tracer_provider)

    @property
    def model_id(self) -> str:
        return self._model or UNRESOLVED_MODEL

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        await self._client.aclose()

    async def _get(self, url: str, what: str) -> httpx.Response:
        try:
            resp = await self._client.get(url)
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"GET {what}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise TransientBackendError(f"cannot reach {self._base_url}: {exc!r}") from exc
        return resp

    async def _models(self) -> httpx.Response | None:
        """`GET <url>/models`, or None when the server has no such route (TEI)."""
        resp = await self._get("/models", "/models")
        if resp.status_code in (404, 405):
            return None
        raise_for_status(resp, "GET /models")
        return resp

    async def _tei_health(self) -> None:
        resp = await self._get(f"{self._root}/health", "/health")
        raise_for_status(resp, "GET /health")

    async def _tei_model(self) -> str | None:
        resp = await self._get(f"{self._root}/info", "/info")
        raise_for_status(resp, "GET /info")
        return read(TEIInfo, resp, "GET /info").model_id or None

    async def health(self) -> dict[str, Any]:
        """Raises when the server cannot answer; learns the served model when none is configured."""
        if self._server != TEI:
            resp = await self._models()
            if resp is not None:
                self._server = OPENAI
                models = read(ModelList, resp, "GET /models").data or []
                if not self._model and models:
                    self._model = models[0].id
                return {"url": self._base_url, "model": self._model, "server": OPENAI}
        # TEI: /models is not served; /health says whether it is up, /info names its model.
        await self._tei_health()
        if not self._model:
            self._model = await self._tei_model()
        self._server = TEI
        return {"url": self._base_url, "model": self._model, "server": TEI}

    async def embed(self, texts: list[str], tenant: str = "") -> np.ndarray:
        # The embeddings server batches concurrent requests itself; `tenant` is not needed there.
        if not self._model:
            await self.health()
        chunks: list[np.ndarray] = []
        for i in range(0, len(texts), self._max_batch):
            chunk = texts[i:i + self._max_batch]
            try:
                resp = await self._client.post("/embeddings", json={"model": self._model, "input": chunk})
            except httpx.TimeoutException as exc:
                raise TimeoutError(str(exc)) from exc
            except httpx.TransportError as exc:
                raise TransientBackendError(f"cannot reach {self._base_url}: {exc!r}") from exc
            raise_for_status(resp, "POST /embeddings")
            # One float vector per input, of one length, all finite: anything else is the server's failure.
            reply = read(Embeddings, resp, "POST /embeddings")
            embed_reply(reply.tokens)
            chunks.append(embedding_matrix(reply.data, len(chunk), "POST /embeddings"))
        if not chunks:
            return np.zeros((0, 0), np.float32)
        if len({c.shape[1] for c in chunks}) != 1:
            raise PermanentBackendError(f"embeddings of unequal length across batches: {[c.shape[1] for c in chunks]}")
        vecs = np.concatenate(chunks).astype(np.float64)  # float64: the norm of any finite float32 row is finite
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return (vecs / np.maximum(norms, 1e-12)).astype(np.float32)
