"""Judge on an OpenAI-compatible chat server, first of all a vLLM server."""

from __future__ import annotations

from typing import Any

import httpx

from service.backends.base import Completion, PermanentBackendError, TransientBackendError
from service.backends.http import auth_headers, raise_for_status


class OpenAIJudge:
    name = "openai"

    def __init__(self, base_url: str, model: str | None, api_key: str | None, timeout_s: float,
                 max_connections: int) -> None:
        self._base_url = base_url
        self._model = model
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers=auth_headers(api_key),
            timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    @property
    def model_id(self) -> str:
        return self._model or "unresolved"

    async def start(self) -> None:
        try:
            await self._resolve_model()
        except (TransientBackendError, PermanentBackendError):
            pass  # the server may come up later; /readyz reports it meanwhile

    async def close(self) -> None:
        await self._client.aclose()

    async def _list_models(self) -> list[str]:
        try:
            resp = await self._client.get("/models")
        except httpx.TransportError as exc:
            raise TransientBackendError(f"cannot reach {self._base_url}: {exc!r}") from exc
        raise_for_status(resp, "GET /models")
        return [str(m["id"]) for m in resp.json().get("data") or []]

    async def _resolve_model(self) -> str:
        if not self._model:
            models = await self._list_models()
            if not models:
                raise PermanentBackendError(f"{self._base_url} serves no model")
            self._model = models[0]
        return self._model

    async def health(self) -> dict[str, Any]:
        models = await self._list_models()
        if self._model and self._model not in models:
            raise PermanentBackendError(f"{self._base_url} does not serve {self._model!r} (serves {models})")
        self._model = self._model or (models[0] if models else None)
        return {"url": self._base_url, "model": self._model}

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        choice: list[str] | None = None,
        json_schema: dict[str, Any] | None = None,
        top_logprobs: int | None = None,
    ) -> Completion:
        body: dict[str, Any] = {
            "model": await self._resolve_model(),
            "messages": messages,
            "temperature": 0,
            "max_tokens": max_tokens,
            "chat_template_kwargs": {"enable_thinking": False},
        }
        if choice is not None:
            body["structured_outputs"] = {"choice": choice}
        elif json_schema is not None:
            body["structured_outputs"] = {"json": json_schema}
        if top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = top_logprobs
        try:
            resp = await self._client.post("/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise TimeoutError(str(exc)) from exc
        except httpx.TransportError as exc:
            raise TransientBackendError(f"cannot reach {self._base_url}: {exc!r}") from exc
        raise_for_status(resp, "POST /chat/completions")
        try:
            out = resp.json()["choices"][0]
            text = out["message"]["content"] or ""
            first = None
            content = (out.get("logprobs") or {}).get("content") or []
            if content:
                first = {t["token"]: float(t["logprob"]) for t in content[0].get("top_logprobs", [])}
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise PermanentBackendError(f"unexpected reply from the judge: {resp.text[:200]}") from exc
        return Completion(text=text, first_token_logprobs=first)
