"""Judge on OpenAI-compatible chat servers, first of all vLLM servers; several replicas are balanced."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx

from service.backends.base import Completion, PermanentBackendError, TransientBackendError
from service.backends.http import auth_headers, raise_for_status

REPLICA_REST_S = 2.0


class OpenAIJudge:
    """Round robin over the replicas; a failed call's retry goes to the next one (client-side failover)."""

    name = "openai"

    def __init__(self, base_urls: str | list[str], model: str | None, api_key: str | None, timeout_s: float,
                 max_connections: int) -> None:
        self._urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self._model = model
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._clients = [
            httpx.AsyncClient(base_url=url, headers=auth_headers(api_key), limits=limits,
                              timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)))
            for url in self._urls
        ]
        self._turn = itertools.cycle(range(len(self._clients)))
        self._down_until = [0.0] * len(self._clients)  # a replica that refused a connection rests a moment

    @property
    def model_id(self) -> str:
        return self._model or "unresolved"

    async def start(self) -> None:
        try:
            await self._resolve_model()
        except (TransientBackendError, PermanentBackendError):
            pass  # the servers may come up later; /readyz reports it meanwhile

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._clients))

    async def _list_models(self, i: int) -> list[str]:
        try:
            resp = await self._clients[i].get("/models")
        except httpx.TransportError as exc:
            raise TransientBackendError(f"cannot reach {self._urls[i]}: {exc!r}") from exc
        raise_for_status(resp, f"GET {self._urls[i]}/models")
        return [str(m["id"]) for m in resp.json().get("data") or []]

    async def _resolve_model(self) -> str:
        if self._model:
            return self._model
        last: Exception = TransientBackendError("no judge URL")
        for i in range(len(self._clients)):
            try:
                models = await self._list_models(i)
            except TransientBackendError as exc:
                last = exc
                continue
            if models:
                self._model = models[0]
                return self._model
        raise last

    async def health(self) -> dict[str, Any]:
        """Healthy when at least one replica serves the model; each replica's state is reported."""
        replicas: dict[str, str] = {}
        for i, url in enumerate(self._urls):
            try:
                models = await self._list_models(i)
                ok = self._model is None or self._model in models
                self._model = self._model or (models[0] if models else None)
                replicas[url] = "ok" if ok else f"does not serve {self._model!r}"
            except (TransientBackendError, PermanentBackendError) as exc:
                replicas[url] = str(exc)[:200]
        if not any(v == "ok" for v in replicas.values()):
            raise TransientBackendError(f"no judge replica answers: {replicas}")
        return {"model": self._model, "replicas": replicas}

    def _pick(self) -> int:
        """The next replica in turn that is not resting; the next in turn if all are."""
        now = time.monotonic()
        for _ in range(len(self._clients)):
            i = next(self._turn)
            if self._down_until[i] <= now:
                return i
        return next(self._turn)

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
        i = self._pick()
        try:
            resp = await self._clients[i].post("/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise TimeoutError(f"{self._urls[i]}: {exc!r}") from exc
        except httpx.TransportError as exc:
            self._down_until[i] = time.monotonic() + REPLICA_REST_S
            raise TransientBackendError(f"cannot reach {self._urls[i]}: {exc!r}") from exc
        raise_for_status(resp, f"POST {self._urls[i]}/chat/completions")
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
