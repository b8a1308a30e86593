"""A simulated OpenAI-compatible judge and embedder server: a test double for benchmarks, never the service's default.

It answers what the service's `openai` judge backend (backends/judge_openai.py) and `openai` embed backend
(backends/embed_openai.py) ask, with the latency of a GPU engine and next to no CPU of its own, so that
`medix-reward bench --modes capacity` measures the service's core and not the engine's.

- Latency: continuous batching at a set prompt-token rate. Requests join a running engine loop; each step takes the
  running requests, then waiting ones, up to `max_num_seqs` sequences and `max_batched_tokens` tokens (a prompt
  longer than what is left of the budget is prefilled in chunks over several steps, as vLLM's chunked prefill
  does), and lasts tokens / rate seconds of wall time: an asyncio sleep, nothing is computed. A request's first
  generated token comes with the step that finishes its prompt (a verdict of `max_tokens` 1 is one step); each
  further token costs one token in a later step. Steps run back to back on an ideal timeline, so the event loop's
  millisecond timers do not slow a busy engine down.
- Tokens are counted, not tokenised: a chat message is one token for its role plus ceil(characters / 4), the
  generation prompt one more; an embedding input ceil(characters / 4) + 1. `/tokenize` cuts text into the same
  4-character pieces (ids from a hash), so its count is the count the latency is computed from. `Y`, `YE`,
  `YES`, `N` and `NO` are tokens of their own, so that YES and NO have distinct first tokens and the service's
  single-step verdict plan is learned.
- Replies: the verdict is a hash of the conversation: p(YES) in [0.02, 0.98], YES when p >= 0.5, finite
  logprobs, on both verdict paths (one step: `allowed_token_ids`, `logprob_token_ids`,
  `return_tokens_as_token_ids`; constrained: `structured_outputs.choice`); `structured_outputs.json` gets an
  object of the schema's properties (an enum's member picked by the hash); embeddings are unit vectors of `dim`
  floats picked by a hash of the text from a pool of 1,024. Every reply carries `usage`.
- Accounting: `GET /sim/stats` gives each engine's busy seconds (the sum of its steps) and their share of the wall
  time since the last `POST /sim/reset`, which can also set new rates.

Routes: the judge under /judge (base URL `http://host:port/judge/v1`; `/judge/tokenize`,
`/judge/reset_prefix_cache` and `/judge/health` at its root), the embedder under /embed (base URL
`http://host:port/embed/v1`), and `/health`, `/metrics`, `/sim/stats`, `/sim/reset` at the root. A plain ASGI app
on uvicorn, not FastAPI: fastapi and starlette stay in service/api (tests/unit/test_layering.py), and a bare app
costs the simulator's core less per request.

Run it alone: `python -m service.bench.simserver --port 8900 --judge-tokens-per-s 60000 --cpus 0`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service.bench.waiting import wait_until_up

JUDGE_MODEL = "sim-judge"
EMBED_MODEL = "sim-embed"
DEFAULT_DIM = 1024  # MedEmbed-large's, the method's embedder
POOL = 1024  # distinct embedding vectors; a text's vector is picked from them by its hash
CHARS_PER_TOKEN = 4
# Back-to-back steps keep to the ideal timeline when the loop wakes up at most this late.
CATCH_UP_S = 0.005


# -- the latency model (pure) -----------------------------------------------------------------------------------
@dataclass
class EngineModel:
    """A GPU engine as the simulator sees it: a token rate and a scheduler's budgets per step."""

    tokens_per_s: float
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192

    def __post_init__(self) -> None:
        if self.tokens_per_s <= 0 or self.max_num_seqs < 1 or self.max_batched_tokens < 1:
            raise ValueError(f"not an engine: {self}")

    def step_seconds(self, tokens: int) -> float:
        """A step of `tokens` tokens (prompt chunks and one per decoding sequence) takes tokens / rate seconds."""
        return tokens / self.tokens_per_s


@dataclass(slots=True, eq=False)
class Seq:
    """One request inside the engine: prompt tokens still to compute, generated tokens still to produce after the
    first (which comes with the prompt's last chunk)."""

    prefill: int
    decode: int
    done: asyncio.Future[None] | None = None

    @property
    def finished(self) -> bool:
        return self.prefill == 0 and self.decode < 0


def schedule_step(running: list[Seq], waiting: deque[Seq], model: EngineModel) -> list[tuple[Seq, int]]:
    """The tokens each sequence gets in the next step: the running ones first (a decoding sequence one token, one
    still prefilling what is left of the budget), then waiting ones admitted in arrival order while there are
    sequence slots and budget; an admitted sequence moves to `running`. Nothing is changed but the admission."""
    budget = model.max_batched_tokens
    work: list[tuple[Seq, int]] = []
    for seq in running:
        if budget == 0:
            break
        take = min(seq.prefill, budget) if seq.prefill else 1
        work.append((seq, take))
        budget -= take
    while waiting and budget > 0 and len(running) < model.max_num_seqs:
        seq = waiting.popleft()
        running.append(seq)
        take = min(seq.prefill, budget)
        work.append((seq, take))
        budget -= take
    return work


def advance(work: list[tuple[Seq, int]]) -> list[Seq]:
    """Apply a step's work; the sequences it finished."""
    finished = []
    for seq, take in work:
        if seq.prefill:
            seq.prefill -= take
            if seq.prefill == 0:
                seq.decode -= 1  # the first generated token comes with the prompt's last chunk
        else:
            seq.decode -= 1
        if seq.finished:
            finished.append(seq)
    return finished


@dataclass
class EngineStats:
    busy_s: float = 0.0
    steps: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    since: float = field(default_factory=time.perf_counter)

    def snapshot(self, running: int, waiting: int) -> dict[str, Any]:
        wall = time.perf_counter() - self.since
        return {"busy_s": self.busy_s, "wall_s": wall, "busy_share": self.busy_s / wall if wall > 0 else 0.0,
                "steps": self.steps, "requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens, "running": running, "waiting": waiting}


class SimEngine:
    """The engine loop: requests join it at any time; each step sleeps tokens / rate seconds."""

    def __init__(self, model: EngineModel) -> None:
        self.model = model
        self.stats = EngineStats()
        self.running: list[Seq] = []
        self.waiting: deque[Seq] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._end = 0.0  # when the last step ends on the ideal timeline (loop time)

    def reset(self, tokens_per_s: float | None = None) -> None:
        if tokens_per_s is not None:
            self.model = EngineModel(tokens_per_s, self.model.max_num_seqs, self.model.max_batched_tokens)
        self.stats = EngineStats()

    def snapshot(self) -> dict[str, Any]:
        return {**self.stats.snapshot(len(self.running), len(self.waiting)),
                "tokens_per_s": self.model.tokens_per_s}

    async def run(self, prompt_tokens: int, generated: int = 1) -> None:
        """Returns when the request's prompt is computed and its `generated` tokens produced (at least one)."""
        loop = asyncio.get_running_loop()
        seq = Seq(max(1, prompt_tokens), max(1, generated) - 1, loop.create_future())
        self.stats.requests += 1
        self.stats.prompt_tokens += seq.prefill
        self.stats.generated_tokens += seq.decode + 1
        self.waiting.append(seq)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._loop())
        assert self._wake is not None
        self._wake.set()
        assert seq.done is not None
        await seq.done

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _drop_abandoned(self) -> None:
        self.running = [s for s in self.running if not (s.done is not None and s.done.done())]
        if any(s.done is not None and s.done.done() for s in self.waiting):
            self.waiting = deque(s for s in self.waiting if not (s.done is not None and s.done.done()))

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        idle = True
        while True:
            self._drop_abandoned()
            if not self.running and not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                idle = True
                continue
            work = schedule_step(self.running, self.waiting, self.model)
            tokens = sum(take for _, take in work)
            seconds = self.model.step_seconds(tokens)
            now = loop.time()
            # Back to back: the step starts when the last one ended, not when the loop's timer woke up.
            start = self._end if not idle and 0 <= now - self._end < CATCH_UP_S else now
            idle = False
            self._end = start + seconds
            if self._end > now:
                await asyncio.sleep(self._end - now)
            self.stats.busy_s += seconds
            self.stats.steps += 1
            finished = advance(work)
            if finished:
                gone = set(map(id, finished))
                self.running = [s for s in self.running if id(s) not in gone]
                for seq in finished:
                    if seq.done is not None and not seq.done.done():
                        seq.done.set_result(None)


# -- tokens and replies (pure) ------------------------------------------------------------------------------------
# Tokens of their own: role markers, and every prefix of YES and NO (so their first tokens differ).
SPECIAL = {"<system>": 1, "<user>": 2, "<assistant>": 3, "<end>": 4, "Y": 10, "YE": 11, "YES": 12, "N": 13, "NO": 14}
ROLE_TOKEN = {"system": 1, "user": 2, "assistant": 3}


def text_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def prompt_tokens(messages: list[dict[str, Any]], generation_prompt: bool = True) -> int:
    """A conversation's tokens as the latency model counts them: per message one for its role and ceil(chars / 4),
    one more for the generation prompt."""
    return sum(1 + text_tokens(str(m.get("content") or "")) for m in messages) + int(generation_prompt)


def piece_ids(text: str) -> list[int]:
    """The text in 4-character pieces: a special token where the piece is one, else an id from a hash."""
    out = []
    for i in range(0, len(text), CHARS_PER_TOKEN):
        piece = text[i:i + CHARS_PER_TOKEN]
        special = SPECIAL.get(piece)
        out.append(special if special is not None
                   else 1000 + int.from_bytes(hashlib.blake2b(piece.encode(), digest_size=3).digest(), "big"))
    return out


def tokenize(messages: list[dict[str, Any]], add_generation_prompt: bool, continue_final_message: bool) -> list[int]:
    """The token ids of a chat as a chat template would write them: each message its role, its pieces and an end
    (the final assistant message left open with `continue_final_message`), then the generation prompt. Its length
    is `prompt_tokens` plus the ends."""
    ids: list[int] = []
    for i, m in enumerate(messages):
        ids.append(ROLE_TOKEN.get(str(m.get("role")), 2))
        ids += piece_ids(str(m.get("content") or ""))
        if not (continue_final_message and i == len(messages) - 1):
            ids.append(SPECIAL["<end>"])
    if add_generation_prompt and not continue_final_message:
        ids.append(SPECIAL["<assistant>"])
    return ids


def digest(messages: list[dict[str, Any]]) -> int:
    text = "\x1f".join(f"{m.get('role')}\x1e{m.get('content')}" for m in messages)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def p_yes_of(h: int) -> float:
    """p(YES) from a hash: in [0.02, 0.98], never exactly 0.5."""
    p = 0.02 + 0.96 * ((h % 10_000) + 0.5) / 10_000
    return p


def _token_name(tid: int, as_ids: bool) -> str:
    if as_ids:
        return f"token_id:{tid}"
    return next((k for k, v in SPECIAL.items() if v == tid), f"<{tid}>")


def chat_reply(body: dict[str, Any], model: str) -> tuple[dict[str, Any], int, int]:
    """The reply to a chat completion request, its prompt tokens and its generated tokens."""
    messages = body.get("messages") or []
    h = digest(messages)
    p = p_yes_of(h)
    verdict = "YES" if p >= 0.5 else "NO"
    lp = {"YES": math.log(p), "NO": math.log1p(-p)}
    allowed = body.get("allowed_token_ids")
    as_ids = bool(body.get("return_tokens_as_token_ids"))
    structured = body.get("structured_outputs") or {}
    logprobs = None
    if allowed:  # one step among the allowed first tokens: the whole-word token carries the choice's logprob
        first = {SPECIAL["YES"]: "YES", SPECIAL["Y"]: "YES", SPECIAL["YE"]: "YES", SPECIAL["NO"]: "NO",
                 SPECIAL["N"]: "NO"}
        emitted = SPECIAL[verdict] if SPECIAL[verdict] in allowed else allowed[0]
        text = _token_name(emitted, False)
        asked = body.get("logprob_token_ids") or allowed
        whole = {SPECIAL["YES"]: lp["YES"], SPECIAL["NO"]: lp["NO"]}
        scored = {t: whole.get(t, -20.0 if t in first else -30.0) for t in asked}
        top = [{"token": _token_name(t, as_ids), "logprob": v} for t, v in scored.items()]
        logprobs = {"content": [{"token": _token_name(emitted, as_ids), "logprob": scored.get(emitted, -30.0),
                                 "top_logprobs": top}]}
        generated = 1
    elif "json" in structured:
        text = json.dumps(_fill(structured["json"], h))
        generated = min(int(body.get("max_tokens") or 16), text_tokens(text))
    else:
        choices = structured.get("choice") or ["YES", "NO"]
        text = verdict if verdict in choices else choices[h % len(choices)]
        if body.get("logprobs"):
            top = [{"token": c, "logprob": lp[c]} for c in ("YES", "NO")]
            logprobs = {"content": [{"token": text, "logprob": lp.get(text, -30.0), "top_logprobs": top}]}
        generated = 1
    prompt = prompt_tokens(messages)
    reply = {
        "id": f"chatcmpl-sim-{h:x}", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated},
    }
    return reply, prompt, generated


def _fill(schema: dict[str, Any], h: int) -> Any:
    """A value of a JSON schema's simple shape: an object of its properties, an enum's member by the hash."""
    if "enum" in schema:
        return schema["enum"][h % len(schema["enum"])]
    kind = schema.get("type")
    if kind == "object":
        return {k: _fill(v, h) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return []
    return {"integer": 1, "number": 0.5, "boolean": True, "null": None}.get(kind, "sim")


class VectorPool:
    """Unit vectors of `dim` floats, made on first use, each kept with its JSON text: a reply costs a join."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._json: dict[int, str] = {}

    def vector_json(self, text: str) -> str:
        i = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big") % POOL
        out = self._json.get(i)
        if out is None:
            out = json.dumps(self.vector(i))
            self._json[i] = out
        return out

    def vector(self, i: int) -> list[float]:
        import numpy as np

        v = np.random.default_rng(i).standard_normal(self.dim).astype(np.float64)
        v /= np.linalg.norm(v)
        return [float(x) for x in v.astype(np.float32)]


def embeddings_reply(texts: list[str], model: str, pool: VectorPool) -> tuple[bytes, int]:
    """The /v1/embeddings reply as bytes (assembled from the pool's JSON texts), and its tokens."""
    tokens = sum(text_tokens(t) + 1 for t in texts)
    data = ",".join(f'{{"object":"embedding","index":{i},"embedding":{pool.vector_json(t)}}}'
                    for i, t in enumerate(texts))
    usage = json.dumps({"prompt_tokens": tokens, "total_tokens": tokens})
    return (f'{{"object":"list","model":{json.dumps(model)},"data":[{data}],"usage":{usage}}}').encode(), tokens


# -- the ASGI app -------------------------------------------------------------------------------------------------
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class SimServer:
    """The simulated judge (under /judge) and embedder (under /embed), each with an engine of its own."""

    def __init__(self, judge: EngineModel, embed: EngineModel, *, judge_model: str = JUDGE_MODEL,
                 embed_model: str = EMBED_MODEL, dim: int = DEFAULT_DIM, max_model_len: int = 32_768) -> None:
        self.judge, self.embed = SimEngine(judge), SimEngine(embed)
        self.judge_model, self.embed_model = judge_model, embed_model
        self.max_model_len = max_model_len
        self.pool = VectorPool(dim)
        self._routes: dict[tuple[str, str], Callable[[bytes], Awaitable[tuple[int, bytes]]]] = {
            ("GET", "/health"): self._ok, ("GET", "/judge/health"): self._ok, ("GET", "/embed/health"): self._ok,
            ("GET", "/judge/v1/models"): self._judge_models, ("GET", "/embed/v1/models"): self._embed_models,
            ("POST", "/judge/v1/chat/completions"): self._chat, ("POST", "/judge/tokenize"): self._tokenize,
            ("POST", "/judge/reset_prefix_cache"): self._reset_prefix,
            ("POST", "/embed/v1/embeddings"): self._embeddings,
            ("GET", "/sim/stats"): self._stats, ("POST", "/sim/reset"): self._reset, ("GET", "/metrics"): self._metrics,
        }

    def stats(self) -> dict[str, Any]:
        return {"judge": self.judge.snapshot(), "embed": self.embed.snapshot()}

    def reset(self, judge_tokens_per_s: float | None = None, embed_tokens_per_s: float | None = None) -> None:
        self.judge.reset(judge_tokens_per_s)
        self.embed.reset(embed_tokens_per_s)

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.judge.close()
                    await self.embed.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        handler = self._routes.get((scope["method"], scope["path"]))
        if handler is None:
            status, out = 404, b'{"error":{"message":"not found"}}'
        else:
            try:
                status, out = await handler(body)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                status, out = 400, json.dumps({"error": {"message": f"bad request: {exc!r}"}}).encode()
        content_type = b"text/plain; version=0.0.4" if scope["path"] == "/metrics" else b"application/json"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    @staticmethod
    def _json(obj: Any) -> tuple[int, bytes]:
        return 200, json.dumps(obj, separators=(",", ":")).encode()

    async def _ok(self, _: bytes) -> tuple[int, bytes]:
        return 200, b"{}"

    def _models(self, name: str) -> tuple[int, bytes]:
        return self._json({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "medix-sim",
                                                        "max_model_len": self.max_model_len}]})

    async def _judge_models(self, _: bytes) -> tuple[int, bytes]:
        return self._models(self.judge_model)

    async def _embed_models(self, _: bytes) -> tuple[int, bytes]:
        return self._models(self.embed_model)

    async def _chat(self, raw: bytes) -> tuple[int, bytes]:
        body = json.loads(raw)
        if body.get("model") not in (None, self.judge_model):
            return 404, json.dumps({"error": {"message": f"model {body.get('model')!r} not served"}}).encode()
        reply, prompt, generated = chat_reply(body, self.judge_model)
        if prompt > self.max_model_len:
            return 400, b'{"error":{"message":"prompt longer than max_model_len"}}'
        await self.judge.run(prompt, generated)
        return self._json(reply)

    async def _tokenize(self, raw: bytes) -> tuple[int, bytes]:
        body = json.loads(raw)
        ids = tokenize(body.get("messages") or [], bool(body.get("add_generation_prompt", True)),
                       bool(body.get("continue_final_message")))
        return self._json({"count": len(ids), "tokens": ids, "max_model_len": self.max_model_len})

    async def _reset_prefix(self, _: bytes) -> tuple[int, bytes]:
        return self._json({"success": True})

    async def _embeddings(self, raw: bytes) -> tuple[int, bytes]:
        body = json.loads(raw)
        texts = body["input"]
        texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
        out, tokens = embeddings_reply(texts, self.embed_model, self.pool)
        await self.embed.run(tokens, 1)
        return 200, out

    async def _stats(self, _: bytes) -> tuple[int, bytes]:
        return self._json(self.stats())

    async def _reset(self, raw: bytes) -> tuple[int, bytes]:
        body = json.loads(raw) if raw.strip() else {}
        self.reset(body.get("judge_tokens_per_s"), body.get("embed_tokens_per_s"))
        return self._json(self.stats())

    async def _metrics(self, _: bytes) -> tuple[int, bytes]:
        lines = []
        for name, engine, model in (("judge", self.judge, self.judge_model), ("embed", self.embed, self.embed_model)):
            s = engine.snapshot()
            label = f'{{model_name="{model}"}}'
            lines += [f"vllm:num_requests_running{label} {s['running']}",
                      f"vllm:num_requests_waiting{label} {s['waiting']}",
                      f"vllm:prompt_tokens_total{label} {s['prompt_tokens']}",
                      f"vllm:generation_tokens_total{label} {s['generated_tokens']}",
                      f'medix_sim_busy_seconds_total{{engine="{name}"}} {s["busy_s"]}']
        return 200, ("\n".join(lines) + "\n").encode()


def create_app(judge_tokens_per_s: float, embed_tokens_per_s: float, *, max_num_seqs: int = 256,
               max_batched_tokens: int = 8192, dim: int = DEFAULT_DIM) -> SimServer:
    """The simulator's ASGI app: a judge engine and an embedder engine of these rates and budgets."""
    return SimServer(EngineModel(judge_tokens_per_s, max_num_seqs, max_batched_tokens),
                     EngineModel(embed_tokens_per_s, max_num_seqs, max_batched_tokens), dim=dim)


# -- running it in a process of its own ---------------------------------------------------------------------------
class SimProcess:
    """The simulator in a subprocess on `port`, pinned to `cpus` (None: not pinned), so that its CPU is not the
    measured process's. `judge_url` and `embed_url` are the base URLs the service takes."""

    def __init__(self, port: int, *, judge_tokens_per_s: float, embed_tokens_per_s: float, dim: int = DEFAULT_DIM,
                 max_num_seqs: int = 256, max_batched_tokens: int = 8192, cpus: set[int] | None = None,
                 timeout_s: float = 60) -> None:
        self.port, self.cpus, self.timeout_s = port, cpus, timeout_s
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"medix-bench-sim-{port}.log"
        self.url = f"http://127.0.0.1:{port}"
        self.judge_url, self.embed_url = f"{self.url}/judge/v1", f"{self.url}/embed/v1"
        self.argv = [sys.executable, "-m", "service.bench.simserver", "--port", str(port),
                     "--judge-tokens-per-s", str(judge_tokens_per_s), "--embed-tokens-per-s", str(embed_tokens_per_s),
                     "--dim", str(dim), "--max-num-seqs", str(max_num_seqs),
                     "--max-batched-tokens", str(max_batched_tokens)]
        if cpus:
            self.argv += ["--cpus", ",".join(str(c) for c in sorted(cpus))]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> SimProcess:
        # Its output goes to a file: a pipe nobody reads would stop the server once full.
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT)
        proc = self.proc
        try:
            wait_until_up(f"{self.url}/health", what="the simulated judge server", timeout_s=self.timeout_s,
                          every_s=0.1, exited=lambda: None if proc.poll() is None else self.log.read_text()[-2000:])
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def reset(self, judge_tokens_per_s: float | None = None, embed_tokens_per_s: float | None = None) -> None:
        body = {k: v for k, v in (("judge_tokens_per_s", judge_tokens_per_s),
                                  ("embed_tokens_per_s", embed_tokens_per_s)) if v is not None}
        httpx.post(f"{self.url}/sim/reset", json=body, timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        resp = httpx.get(f"{self.url}/sim/stats", timeout=10)
        resp.raise_for_status()
        return dict(resp.json())

    def cpu_seconds(self) -> float | None:
        """The simulator process's CPU seconds so far (user + system), from /proc; None where not readable."""
        if self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Simulated OpenAI-compatible judge and embedder (a benchmark's "
                                     "test double: continuous batching at a set token rate).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--judge-tokens-per-s", type=float, default=60_000.0)
    parser.add_argument("--embed-tokens-per-s", type=float, default=1_000_000.0)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-batched-tokens", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=DEFAULT_DIM)
    parser.add_argument("--cpus", default="", help="Pin to these cores (e.g. 0 or 0-3).")
    args = parser.parse_args(argv)
    if args.cpus and hasattr(os, "sched_setaffinity"):
        from service.engine.cpu import parse_cpus

        os.sched_setaffinity(0, parse_cpus(args.cpus))
    import uvicorn

    app = create_app(args.judge_tokens_per_s, args.embed_tokens_per_s, max_num_seqs=args.max_num_seqs,
                     max_batched_tokens=args.max_batched_tokens, dim=args.dim)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
