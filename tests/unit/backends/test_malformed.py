"""Malformed and non-finite backend replies (issue 24, items 3 and 7): read through typed models, a reply that does
not fit is the backend's failure (503 with Retry-After, counted by the circuit breaker) or that item's own error,
never a 500; a NaN or infinite logprob is no evidence, and no NaN reaches a score."""

from __future__ import annotations

import json
import math
import sys
import types
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest

from service.backends.base import PermanentBackendError, TransientBackendError, VerdictPlan
from service.backends.embed_openai import OpenAIEmbedder
from service.backends.judge_openai import OpenAIJudge
from service.backends.judge_vllm import VLLMJudge
from service.reward.prompt import CHOICES, p_yes
from tests.unit.backends.test_verdict import FakeVLLM, judge_on
from tests.unit.fakes import FakeJudge

GOOD = {"response": "<X_RAY><thinking>t</thinking><answer>edema</answer>", "ground_truth": "<X_RAY>Pneumonia"}
MESSAGES = [{"role": "user", "content": "Reference answer: edema\nCandidate answer: edema"}]
NAN, INF = float("nan"), float("inf")


def chat(content, logprobs=None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    if logprobs is not None:
        choice["logprobs"] = {"content": logprobs}
    return {"id": "x", "object": "chat.completion", "choices": [choice], "usage": {"prompt_tokens": 3}}


class ChatServer:
    """An OpenAI-compatible judge without /tokenize (verdicts go the constrained way) whose every chat completion
    is `body` (bytes as they are, or a value written with Python's JSON writer, NaN and Infinity included)."""

    def __init__(self, body) -> None:
        self.body = body
        self.chats = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "judge", "owned_by": "vllm"}]})
        if request.url.path != "/v1/chat/completions":
            return httpx.Response(404, json={"detail": "Not Found"})
        self.chats += 1
        raw = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return httpx.Response(200, content=raw, headers={"content-type": "application/json"})


def judge(server) -> OpenAIJudge:
    return OpenAIJudge("http://judge:8000/v1", None, None, 5.0, 4, transport=httpx.MockTransport(server))


MALFORMED_CHATS = {
    "content is a number": chat(5),
    "a logprob entry is a bare string": chat("YES", ["x"]),
    "top_logprobs of strings": chat("YES", [{"token": "Y", "logprob": -0.1, "top_logprobs": ["Y"]}]),
    "a logprob that is a string": chat("YES", [{"token": "Y", "logprob": "-0.1"}]),
    "no choices": {"choices": []},
    "a choice that is a string": {"choices": ["YES"]},
    "no message": {"choices": [{"index": 0}]},
    "a list, not an object": [chat("YES")],
    "not JSON": b"<html>502 Bad Gateway</html>",
    "nested past the parser's limit": b'{"choices": ' + b"[" * 5000 + b"]" * 5000 + b"}",
}


# -- item 7: the judge's chat completion -------------------------------------------------------------------------
@pytest.mark.parametrize("body", MALFORMED_CHATS.values(), ids=MALFORMED_CHATS.keys())
async def test_a_malformed_chat_completion_is_the_backends_failure(body):
    j = judge(ChatServer(body))
    with pytest.raises(PermanentBackendError, match="malformed reply from the judge"):
        await j.complete(MESSAGES, max_tokens=4, choice=CHOICES, top_logprobs=5)
    await j.close()


async def test_extra_and_missing_optional_fields_are_tolerated():
    body = chat(None, [{"token": "Y", "logprob": -0.1, "bytes": [89], "top_logprobs": None}])
    body["choices"][0]["message"] |= {"reasoning_content": None, "tool_calls": []}
    out = await judge(ChatServer(body)).complete(MESSAGES, max_tokens=4, top_logprobs=5)
    assert out.text == "" and out.first_token_logprobs == {}


class MalformedSingleStep(FakeVLLM):
    """Takes the single step at start, then answers every verdict's step with a logprobs entry that is a string."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.broken and request.url.path == "/v1/chat/completions":
            return httpx.Response(200, json=chat("token_id:73", ["token_id:73"]))
        return super().__call__(request)


async def test_a_malformed_single_step_reply_is_the_backends_failure():
    server = MalformedSingleStep()
    j = judge_on(server)
    await j.start()
    assert j.describe()["verdict"] == "single-step"
    server.broken = True
    with pytest.raises(PermanentBackendError, match="malformed"):
        await j.verdict(MESSAGES, choices=CHOICES, max_tokens=4, top_logprobs=5)


@pytest.mark.parametrize("body", [b"<html>", b'{"tokens": ["a"]}', b'{"tokens": null}', b"[1, 2]"])
async def test_a_malformed_tokenize_reply_leaves_the_constrained_call(body):
    class Server(FakeVLLM):
        def __call__(self, request):
            if request.url.path == "/tokenize":
                return httpx.Response(200, content=body)
            return super().__call__(request)

    j = judge_on(Server())
    await j.start()
    assert j.describe()["verdict"] == "constrained" and "tokenize" in j.describe()["verdict_reason"]


@pytest.mark.parametrize("body", [b"[]", b'{"data": [{"name": "x"}]}', b'{"data": "judge"}', b"nope"])
async def test_a_malformed_model_list_is_not_ready_and_not_a_crash(body):
    def server(request):
        return httpx.Response(200, content=body)

    j = judge(server)
    with pytest.raises(TransientBackendError, match="malformed reply"):  # /readyz: no replica answers
        await j.health()
    with pytest.raises(PermanentBackendError, match="malformed reply"):  # a call: the backend's failure
        await j.complete(MESSAGES, max_tokens=4)


async def test_a_malformed_judge_reply_is_503_with_retry_after_and_opens_the_breaker(app_client):
    server = ChatServer(chat(5))
    async with app_client(judge=judge(server), retry_after_s=7, breaker_failures=2, breaker_open_s=60) as c:
        replies = [await c.post("/reward", json={"items": [GOOD]}) for _ in range(3)]
    assert [r.status_code for r in replies] == [503, 503, 503], replies[-1].text
    assert all(r.headers["retry-after"] for r in replies)
    assert replies[0].json()["error"]["param"] == "judge" and "malformed" in replies[0].json()["error"]["message"]
    assert server.chats == 2  # the third request met an open circuit: no call made


async def test_a_judge_reply_nested_too_deep_is_that_items_unparseable_reply(app_client):
    server = ChatServer(chat("[" * 5000))
    item = {"id": "a", "task": "medqa", "question": "Which organ?", "reference": "Liver", "prediction": "liver"}
    async with app_client(judge=judge(server)) as c:
        r = await c.post("/judge", json={"items": [item], "rounds": 1})
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["score"] is None and result["error"]["type"] == "unparseable_reply"


# -- item 3: NaN and infinite logprobs are no evidence -----------------------------------------------------------
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
async def test_non_finite_logprobs_from_the_server_are_left_out(bad):
    top = [{"token": "Y", "logprob": bad}, {"token": "NO", "logprob": -2.0}]
    body = chat("YES", [{"token": "Y", "logprob": bad, "top_logprobs": top}])
    assert b"NaN" in json.dumps(body).encode() or b"Infinity" in json.dumps(body).encode()
    out = await judge(ChatServer(body)).complete(MESSAGES, max_tokens=4, choice=CHOICES, top_logprobs=5)
    assert out.first_token_logprobs == {"NO": -2.0}
    assert 0.0 <= p_yes(out.first_token_logprobs, out.text) <= 1.0


async def test_nan_logprobs_give_a_finite_soft_score_not_a_null(app_client):
    top = [{"token": "Y", "logprob": NAN}, {"token": "N", "logprob": NAN}]
    server = ChatServer(chat("YES", [{"token": "Y", "logprob": NAN, "top_logprobs": top}]))
    async with app_client(judge=judge(server), profile="medix-r1-soft") as c:
        r = await c.post("/reward", json={"items": [GOOD]})
        again = await c.post("/reward", json={"items": [GOOD]})  # from the cache
    for reply in (r, again):
        assert reply.status_code == 200, reply.text
        res = reply.json()["results"][0]
        assert res["error"] is None and res["accuracy_llm"] == 1.0 and math.isfinite(res["overall"])
        assert res["details"]["judge_p_yes"] == 1.0  # no evidence: the verdict's own


# -- the in-process engine: the same for vLLM's outputs ----------------------------------------------------------
@dataclass
class Logprob:
    logprob: float
    decoded_token: str | None = None


@dataclass
class Output:
    text: str
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None


@dataclass
class Final:
    outputs: list[Output] = field(default_factory=list)


class FakeEngine:
    def __init__(self, out: Output) -> None:
        self.out = out

    async def generate(self, prompt, params, request_id, priority=0):
        yield Final([self.out])


class FakeTokenizer:
    def apply_chat_template(self, messages, **kw):
        return [1, 2, 3]

    def decode(self, ids):
        return {73: "Y", 62: "N", 13465: "NO"}.get(ids[0], "?")


@pytest.fixture
def vllm_stub(monkeypatch):
    """Enough of vllm's import surface for the backend's calls (the engine itself is faked)."""
    class Params:
        def __init__(self, **kw):
            self.kw = kw

    top = types.ModuleType("vllm")
    top.SamplingParams = Params
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = Params
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    for name, module in {"vllm": top, "vllm.sampling_params": sampling, "vllm.inputs": inputs}.items():
        monkeypatch.setitem(sys.modules, name, module)


def engine_judge(out: Output, plan: VerdictPlan | None = None) -> VLLMJudge:
    j = VLLMJudge("m", max_model_len=4096, enforce_eager=True, memory_fraction=0.5)
    j._engine, j._tokenizer, j._plan = FakeEngine(out), FakeTokenizer(), plan
    return j


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
async def test_the_engines_non_finite_logprobs_are_left_out(vllm_stub, bad):
    out = Output("YES", [73], [{73: Logprob(bad, "Y"), 13465: Logprob(-2.0, "NO"), 62: Logprob(bad)}])
    got = await engine_judge(out).complete(MESSAGES, max_tokens=4, choice=CHOICES, top_logprobs=5)
    assert got.first_token_logprobs == {"NO": -2.0}
    plan = VerdictPlan(("YES", "NO"), {73: "YES", 62: "NO", 13465: "NO"}, "")
    step = await engine_judge(out, plan).verdict(MESSAGES, choices=CHOICES, max_tokens=4, top_logprobs=5)
    assert step.text == "YES" and step.first_token_logprobs == {"NO": -2.0}
    assert 0.0 <= p_yes(step.first_token_logprobs, step.text) <= 1.0


# -- item 7: embeddings ------------------------------------------------------------------------------------------
def vec(i: int) -> list[float]:
    return [3.0, 4.0 + i]


MALFORMED_EMBEDDINGS = {
    "unequal lengths": lambda n: [{"index": i, "embedding": [1.0] * (2 + i)} for i in range(n)],
    "null": lambda n: [{"index": i, "embedding": None} for i in range(n)],
    "base64 text": lambda n: [{"index": i, "embedding": "AACAPwAAAEA="} for i in range(n)],
    "strings for numbers": lambda n: [{"index": i, "embedding": ["1.0", "2.0"]} for i in range(n)],
    "NaN": lambda n: [{"index": i, "embedding": [NAN, 1.0]} for i in range(n)],
    "Infinity": lambda n: [{"index": i, "embedding": [1.0, -INF]} for i in range(n)],
    "beyond float32": lambda n: [{"index": i, "embedding": [1e39, 1.0]} for i in range(n)],
    "empty vectors": lambda n: [{"index": i, "embedding": []} for i in range(n)],
    "one short": lambda n: [{"index": i, "embedding": vec(i)} for i in range(n - 1)],
    "an index twice": lambda n: [{"index": 0, "embedding": vec(i)} for i in range(n)],
    "an index out of range": lambda n: [{"index": i + 1, "embedding": vec(i)} for i in range(n)],
    "data is not a list": lambda n: {"0": vec(0)},
    "no index": lambda n: [{"embedding": vec(i)} for i in range(n)],
}


class EmbedServer:
    def __init__(self, data=None, raw: bytes | None = None) -> None:
        self.data, self.raw = data, raw
        self.posts = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.posts += 1
        if self.raw is not None:
            return httpx.Response(200, content=self.raw)
        n = len(json.loads(request.content)["input"])
        body = {"object": "list", "model": "e", "data": self.data(n), "usage": {"prompt_tokens": n}}
        return httpx.Response(200, content=json.dumps(body).encode())


def embedder(server) -> OpenAIEmbedder:
    return OpenAIEmbedder("http://embed:8080/v1", "e", None, 5.0, max_batch=8, transport=httpx.MockTransport(server))


@pytest.mark.parametrize("data", MALFORMED_EMBEDDINGS.values(), ids=MALFORMED_EMBEDDINGS.keys())
async def test_malformed_embeddings_are_the_backends_failure(data):
    with pytest.raises(PermanentBackendError):
        await embedder(EmbedServer(data)).embed(["a", "b", "c"])


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}"])
async def test_an_embeddings_body_that_does_not_parse_is_the_backends_failure(raw):
    with pytest.raises(PermanentBackendError, match="malformed reply"):
        await embedder(EmbedServer(raw=raw)).embed(["a"])


async def test_good_embeddings_in_any_order_with_extra_fields():
    server = EmbedServer(lambda n: [{"index": i, "embedding": vec(i), "object": "embedding"} for i in range(n)][::-1])
    vecs = await embedder(server).embed(["a", "b"])
    expected = np.array([vec(0), vec(1)]) / np.linalg.norm([vec(0), vec(1)], axis=1, keepdims=True)
    np.testing.assert_allclose(vecs, expected, rtol=1e-6)
    assert vecs.dtype == np.float32


async def test_nan_embeddings_are_503_with_retry_after_and_open_the_breaker(app_client):
    server = EmbedServer(MALFORMED_EMBEDDINGS["NaN"])
    async with app_client(judge=FakeJudge(), embedder=embedder(server), embed_retries=0, retry_after_s=7,
                          breaker_failures=2, breaker_open_s=60) as c:
        replies = [await c.post("/reward", json={"items": [GOOD]}) for _ in range(3)]
    assert [r.status_code for r in replies] == [503, 503, 503], replies[-1].text
    assert replies[0].headers["retry-after"] == "7" and replies[0].json()["error"]["param"] == "embed"
    assert server.posts == 2  # the breaker opened after two failed calls


@pytest.mark.parametrize("bad", [NAN, INF])
async def test_non_finite_vectors_from_the_in_process_model_are_the_backends_failure(bad):
    from service.backends.embed_st import SentenceTransformerEmbedder

    class Model:
        def encode(self, texts, **kw):
            return np.array([[bad, 1.0] if t == "bad" else [0.6, 0.8] for t in texts], dtype=np.float32)

    e = SentenceTransformerEmbedder("m", device="cpu", max_batch=8, max_wait_s=0.001)
    e._model = Model()
    e._batcher.start()
    try:
        assert (await e.embed(["good"])).shape == (1, 2)
        with pytest.raises(PermanentBackendError, match="non-finite"):
            await e.embed(["good", "bad"])
    finally:
        await e.close()
