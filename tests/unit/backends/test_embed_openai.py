"""The OpenAI-compatible embedder against a vLLM-like server (GET /v1/models) and Hugging Face TEI (no /v1/models;
GET /info and GET /health at the root), through httpx.MockTransport."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from service.backends.base import UNRESOLVED_MODEL, PermanentBackendError, TransientBackendError
from service.backends.embed_openai import OpenAIEmbedder

URL = "http://embed:8080/v1"


class FakeServer:
    """Answers like vLLM (`tei=False`) or like TEI 1.9 (`tei=True`); records every request's method and path."""

    def __init__(self, *, tei: bool, model: str = "abhinand/MedEmbed-large-v0.1", healthy: bool = True) -> None:
        self.tei, self.model, self.healthy = tei, model, healthy
        self.seen: list[str] = []
        self.posted: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        route = f"{request.method} {request.url.path}"
        self.seen.append(route)
        if route == "GET /v1/models" and not self.tei:
            return httpx.Response(200, json={"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if route == "GET /info" and self.tei:
            return httpx.Response(200, json={"model_id": self.model, "model_type": {"embedding": {"pooling": "cls"}},
                                             "max_client_batch_size": 256, "version": "1.9.3"})
        if route == "GET /health" and self.tei:
            return httpx.Response(200 if self.healthy else 503)
        if route == "POST /v1/embeddings":
            body = json.loads(request.content)
            self.posted.append(body)
            data = [{"object": "embedding", "index": i, "embedding": [3.0, 4.0 + i]} for i in range(len(body["input"]))]
            return httpx.Response(200, json={"object": "list", "data": data[::-1], "model": self.model})
        return httpx.Response(404, json={"error": "Not Found"})


def embedder(server: FakeServer, model: str | None = None) -> OpenAIEmbedder:
    return OpenAIEmbedder(URL, model, None, 5.0, max_batch=2, transport=httpx.MockTransport(server))


async def test_a_vllm_server_names_its_model_at_v1_models():
    server = FakeServer(tei=False)
    e = embedder(server)
    assert e.model_id == UNRESOLVED_MODEL
    assert await e.health() == {"url": URL, "model": server.model, "server": "openai"}
    assert e.model_id == server.model and server.seen == ["GET /v1/models"]
    await e.close()


async def test_a_tei_server_becomes_ready_from_info_and_health():
    server = FakeServer(tei=True)
    e = embedder(server)
    info = await e.health()
    assert info == {"url": URL, "model": server.model, "server": "tei"}
    assert e.model_id == server.model  # cached embeddings are keyed by the real model, not a placeholder
    assert server.seen == ["GET /v1/models", "GET /health", "GET /info"]
    server.seen.clear()
    await e.health()  # known to be TEI now: only its health route is asked
    assert server.seen == ["GET /health"]
    await e.close()


async def test_embeddings_from_tei_carry_its_model_in_order_and_normalised():
    server = FakeServer(tei=True)
    e = embedder(server)
    vecs = await e.embed(["a", "b", "c"])  # no health check before: the first call learns the model
    assert [p["model"] for p in server.posted] == [server.model] * 2 and [p["input"] for p in server.posted] == [
        ["a", "b"], ["c"]]
    expected = np.array([[3, 4], [3, 5], [3, 4]], dtype=np.float32)
    np.testing.assert_allclose(vecs, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)
    await e.close()


async def test_a_configured_model_is_not_asked_for():
    server = FakeServer(tei=True, model="served-name")
    e = embedder(server, model="my-name")
    assert (await e.health())["model"] == "my-name"
    assert "GET /info" not in server.seen
    await e.close()


async def test_an_unhealthy_tei_is_not_ready():
    e = embedder(FakeServer(tei=True, healthy=False))
    with pytest.raises(TransientBackendError, match="503"):
        await e.health()
    await e.close()


async def test_a_server_with_neither_models_nor_tei_routes_is_not_ready():
    def nothing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    e = OpenAIEmbedder(URL, None, None, 5.0, max_batch=2, transport=httpx.MockTransport(nothing))
    with pytest.raises(PermanentBackendError, match="/health answered 404"):
        await e.health()
    await e.close()


async def test_a_refused_key_is_a_misconfiguration_not_tei():
    def refused(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "unauthorized"})

    e = OpenAIEmbedder(URL, None, "wrong", 5.0, max_batch=2, transport=httpx.MockTransport(refused))
    with pytest.raises(PermanentBackendError, match="401"):
        await e.health()
    await e.close()
