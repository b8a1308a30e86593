"""Judge on OpenAI-compatible chat servers, first of all vLLM servers; several replicas are balanced, calls that
share a prompt prefix kept on one replica."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from collections.abc import Sequence
from typing import Any

import httpx
from opentelemetry.trace import TracerProvider

from clients.http import PooledAsyncClient
from service.backends.base import (
    CALL_AFFINITY,
    CALL_PRIORITY,
    DEFAULT_CHOICES,
    PROBE_MESSAGES,
    UNRESOLVED_MODEL,
    Completion,
    PermanentBackendError,
    TransientBackendError,
    VerdictPlan,
    choice_prefixes,
    finite_logprobs,
    plan_verdict,
    single_step_completion,
)
from service.backends.http import auth_headers, raise_for_status, traced
from service.backends.replies import ChatCompletion, ModelList, Tokens, read
from service.runtime.exceptions import InputRejected, redact
from service.runtime.usage import judge_reply

log = logging.getLogger("medix.judge")

REPLICA_REST_S = 2.0
ROUTINGS = ("affinity", "least_busy")


class OpenAIJudge:
    """Calls go to the replica with the fewest in flight, except that a call carrying a prefix key (CALL_AFFINITY:
    the verdict prompt up to the candidate) goes to the replica that key hashes to (rendezvous hashing: a replica
    that goes away moves only its own keys), unless that one has more than `affinity_slack` calls in flight beyond
    the least busy: then the least busy takes it. A replica that failed a call rests a moment, so that the retry
    goes to another one (client-side failover)."""

    name = "openai"

    def __init__(self, base_urls: str | list[str], model: str | None, api_key: str | None, timeout_s: float,
                 max_connections: int, *, verdict_choices: Sequence[str] = DEFAULT_CHOICES,
                 single_step: bool = True, transport: httpx.AsyncBaseTransport | None = None,
                 routing: str = "affinity", affinity_slack: int = 32,
                 tracer_provider: TracerProvider | None = None) -> None:
        if routing not in ROUTINGS:
            raise ValueError(f"unknown judge routing {routing!r}; one of {', '.join(ROUTINGS)}")
        self._routing, self._affinity_slack = routing, affinity_slack
        self._urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        self._model = model
        self._choices = tuple(verdict_choices)
        self._use_single_step = single_step
        self._plan: VerdictPlan | None = None  # learned from the first server that answers
        self._plan_lock = asyncio.Lock()
        self._priority_ok = True  # until a server refuses the `priority` field
        # Small pools per replica: one httpx pool's cost per request grows with the calls in flight (clients/http.py).
        self._clients = [
            PooledAsyncClient(max_connections=max_connections, base_url=url, headers=auth_headers(api_key),
                              transport=transport, timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)))
            for url in self._urls
        ]
        traced(self._clients, tracer_provider)  # each call inside a traced request carries its trace context
        self._turn = itertools.cycle(range(len(self._clients)))  # breaks ties between equally busy replicas
        self._down_until = [0.0] * len(self._clients)  # a replica that failed a call rests a moment
        self._in_flight = [0] * len(self._clients)
        self._seeds = [hashlib.blake2b(url.encode(), digest_size=8).digest() for url in self._urls]

    @property
    def model_id(self) -> str:
        return self._model or UNRESOLVED_MODEL

    async def start(self) -> None:
        try:
            await self._resolve_model()
            await self._verdict_plan()
        except (TransientBackendError, PermanentBackendError, TimeoutError):
            # The servers may come up later; /readyz reports it meanwhile, and the first verdict learns the plan.
            log.info("judge server not answering yet: the verdict's first tokens are learned on the first verdict")

    async def close(self) -> None:
        await asyncio.gather(*(c.aclose() for c in self._clients))

    async def _list_models(self, i: int) -> list[str]:
        try:
            resp = await self._clients[i].get("/models")
        except httpx.TransportError as exc:
            raise TransientBackendError(f"cannot reach {self._urls[i]}: {exc!r}") from exc
        raise_for_status(resp, f"GET {self._urls[i]}/models")
        return [m.id for m in read(ModelList, resp, f"GET {self._urls[i]}/models").data or []]

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
                replicas[url] = redact(str(exc), 200)
        if not any(v == "ok" for v in replicas.values()):
            raise TransientBackendError(f"no judge replica answers: {replicas}")
        return {"model": self._model, "replicas": replicas, **self.describe()}

    def describe(self) -> dict[str, Any]:
        plan = self._plan.describe() if self._plan else {"verdict": "not learned yet (no server answered)"}
        routing = {"routing": self._routing, "calls_in_flight": dict(zip(self._urls, self._in_flight, strict=True))}
        return {"dtype": "set by the judge server (`medix-reward judge-server` prints its choice)",
                "tenant_priority": "sent" if self._priority_ok else "refused by the server",
                **(routing if len(self._urls) > 1 else {}), **plan}

    def _pick(self) -> int:
        """The replica for the next call: see the class's docstring. Resting replicas are passed over unless all
        are resting."""
        n = len(self._clients)
        if n == 1:
            return 0
        now = time.monotonic()
        up = [i for i in range(n) if self._down_until[i] <= now] or list(range(n))
        start = next(self._turn)
        least = min(up, key=lambda i: (self._in_flight[i], (i - start) % n))
        key = CALL_AFFINITY.get()
        if key is None or self._routing != "affinity" or len(up) == 1:
            return least
        digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
        preferred = max(up, key=lambda i: hashlib.blake2b(digest, key=self._seeds[i], digest_size=8).digest())
        if self._in_flight[preferred] - self._in_flight[least] > self._affinity_slack:
            return least  # the key's replica lags: its prefix cache is worth less than the wait
        return preferred

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
        resp = await self._post("/chat/completions", body)
        out = self._reply(resp).choices[0]
        step = out.first_step
        # A NaN or infinite logprob is no evidence: left out, as if the server had not sent it.
        first = finite_logprobs((t.token, t.logprob) for t in step.top_logprobs or ()) if step else None
        text = out.message.content or ""
        return Completion(text=text, first_token_logprobs=first)

    async def _post(self, path: str, body: dict[str, Any], i: int | None = None) -> httpx.Response:
        """POST to a replica (the next in turn by default): `path` under its /v1 base URL, or an absolute URL
        (the server's own routes, e.g. /tokenize). A chat call carries the tenant priority of the calling task
        (see service.runtime.scheduling) until a server refuses the field."""
        i = self._pick() if i is None else i
        priority = CALL_PRIORITY.get()
        if priority > 0 and self._priority_ok and path == "/chat/completions":
            body = {**body, "priority": priority}
        self._in_flight[i] += 1
        try:
            resp = await self._clients[i].post(path, json=body)
            if resp.status_code == 400 and "priority" in body and "priorit" in resp.text.lower():
                self._priority_ok = False
                log.warning("the judge server does not schedule by priority (vLLM: --scheduling-policy priority): "
                            "tenants share its queue in arrival order; %s", resp.text[:200])
                resp = await self._clients[i].post(path, json={k: v for k, v in body.items() if k != "priority"})
            raise_for_status(resp, f"POST {path if path.startswith('http') else self._urls[i] + path}")
        except httpx.TimeoutException as exc:
            self._rest(i)
            raise TimeoutError(f"{self._urls[i]}: {exc!r}") from exc
        except httpx.TransportError as exc:
            self._rest(i)
            raise TransientBackendError(f"cannot reach {self._urls[i]}: {exc!r}") from exc
        except TransientBackendError:
            self._rest(i)  # 5xx, 429: the retry goes to another replica, even for a call with a prefix key
            raise
        finally:
            self._in_flight[i] -= 1
        return resp

    @staticmethod
    def _reply(resp: httpx.Response) -> ChatCompletion:
        """The judge's chat reply, its token counts added to the request's usage."""
        reply = read(ChatCompletion, resp, "the judge")
        judge_reply(*reply.tokens)
        return reply

    def _rest(self, i: int) -> None:
        if len(self._clients) > 1:
            self._down_until[i] = time.monotonic() + REPLICA_REST_S

    # -- the reward's verdict: one decoding step ------------------------------------------------------------
    def _single_step_body(self, model: str, messages: list[dict[str, str]], plan: VerdictPlan,
                          top_logprobs: int) -> dict[str, Any]:
        ids = plan.token_ids
        return {
            "model": model, "messages": messages, "temperature": 0, "max_tokens": 1,
            "chat_template_kwargs": {"enable_thinking": False},
            # vLLM's own parameters: the step may only emit a choice's first token, and the logprobs of exactly
            # those tokens come back (top_logprobs serves a server that ignores logprob_token_ids); tokens are
            # named by id, so that a token is never confused with another that decodes alike.
            "allowed_token_ids": ids, "logprobs": True, "logprob_token_ids": ids,
            "top_logprobs": max(top_logprobs, len(ids)), "return_tokens_as_token_ids": True,
        }

    @staticmethod
    def _read_single_step(resp: httpx.Response) -> tuple[int | None, dict[int, float]]:
        """The emitted token's id and the logprobs by token id, from a reply with `return_tokens_as_token_ids`;
        None as the id when the reply names tokens otherwise (the server ignored the parameter)."""
        step = OpenAIJudge._reply(resp).choices[0].first_step
        if step is None:
            return None, {}

        def token_id(token: str) -> int | None:
            if token.startswith("token_id:") and token[9:].lstrip("-").isdigit():
                return int(token[9:])
            return None

        entries = [(token_id(e.token), e.logprob) for e in [step, *(step.top_logprobs or ())]]
        logprobs = finite_logprobs((tid, lp) for tid, lp in entries if tid is not None)
        return token_id(step.token), logprobs

    def _root(self, i: int) -> str:
        """The server's own root (the base URL without /v1), where vLLM serves /tokenize."""
        url = self._urls[i].rstrip("/")
        return url[:-3] if url.endswith("/v1") else url

    async def _tokenize(self, i: int, model: str, messages: list[dict[str, str]], reply: str | None) -> list[int]:
        body: dict[str, Any] = {"model": model, "chat_template_kwargs": {"enable_thinking": False}}
        if reply is None:
            body |= {"messages": messages, "add_generation_prompt": True}
        else:
            body |= {"messages": [*messages, {"role": "assistant", "content": reply}],
                     "add_generation_prompt": False, "continue_final_message": True}
        resp = await self._post(f"{self._root(i)}/tokenize", body, i)
        return read(Tokens, resp, "/tokenize").tokens

    async def _learn_plan(self) -> VerdictPlan:
        """The choices' first tokens from the server's tokenizer, then one single-step call to see that the
        server takes it; the constrained call where either fails. Raises when no server answers (try later)."""
        if not self._use_single_step:
            return VerdictPlan(self._choices, None, "single-step verdicts switched off")
        model = await self._resolve_model()
        i = self._pick()
        try:
            context = await self._tokenize(i, model, PROBE_MESSAGES, None)
            reply_ids: dict[str, list[int]] = {}
            for prefix in choice_prefixes(self._choices):
                ids = await self._tokenize(i, model, PROBE_MESSAGES, prefix)
                if ids[:len(context)] != context:
                    return VerdictPlan(self._choices, None, "the chat template does not continue an assistant reply "
                                       "after the generation prompt")
                reply_ids[prefix] = ids[len(context):]
        except (PermanentBackendError, InputRejected) as exc:
            return VerdictPlan(self._choices, None, f"the server's /tokenize is not usable: {exc}"[:300])
        plan = plan_verdict(self._choices, reply_ids)
        if plan.token_choice is None:
            return plan
        try:
            resp = await self._post("/chat/completions", self._single_step_body(model, PROBE_MESSAGES, plan, 2), i)
        except (PermanentBackendError, InputRejected) as exc:
            return VerdictPlan(self._choices, None, f"the server refused the single-step call: {exc}"[:300])
        token, logprobs = self._read_single_step(resp)
        if token is None or token not in plan.token_choice:
            return VerdictPlan(self._choices, None, "the server ignored allowed_token_ids or "
                               f"return_tokens_as_token_ids (it emitted {resp.text[:120]!r})")
        if not set(plan.token_choice.values()) <= {plan.token_choice[t] for t in logprobs if t in plan.token_choice}:
            return VerdictPlan(self._choices, plan.token_choice,
                               f"{plan.reason}; the server ignored logprob_token_ids: p(YES) from the top logprobs")
        return plan

    async def _verdict_plan(self) -> VerdictPlan:
        if self._plan is None:
            async with self._plan_lock:
                if self._plan is None:
                    self._plan = await self._learn_plan()
                    level = logging.INFO if self._plan.token_choice else logging.WARNING
                    log.log(level, "judge verdict: %s (%s)", self._plan.mode, self._plan.reason)
        return self._plan

    async def verdict(self, messages: list[dict[str, str]], *, choices: Sequence[str], max_tokens: int,
                      top_logprobs: int) -> Completion:
        plan = None
        if tuple(choices) == self._choices:
            try:
                plan = await self._verdict_plan()
            except (TransientBackendError, PermanentBackendError, TimeoutError):
                plan = None  # no server answers yet: the constrained call fails or retries as any call would
        if plan is None or plan.token_choice is None:
            return await self.complete(messages, max_tokens=max_tokens, choice=list(choices),
                                       top_logprobs=top_logprobs)
        resp = await self._post("/chat/completions",
                                self._single_step_body(await self._resolve_model(), messages, plan, top_logprobs))
        token, logprobs = self._read_single_step(resp)
        out = single_step_completion(plan, token, logprobs) if token is not None else None
        if out is None:  # a replica that does not take the restriction: this verdict the constrained way
            return await self.complete(messages, max_tokens=max_tokens, choice=list(choices),
                                       top_logprobs=top_logprobs)
        return out
