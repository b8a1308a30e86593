"""The reward verdict in one decoding step: learning the choices' first tokens, the request, and the fallback."""

from __future__ import annotations

import json
import logging
import math
from typing import ClassVar

import httpx
import pytest

from service.backends.base import (
    CALL_PRIORITY,
    CONSTRAINED,
    SINGLE_STEP,
    Completion,
    VerdictPlan,
    choice_prefixes,
    plan_verdict,
    single_step_completion,
)
from service.backends.judge_openai import OpenAIJudge
from service.reward.prompt import CHOICES, p_yes
from service.runtime.exceptions import InputRejected

# SmolLM2's tokenizer, as far as the verdict needs it: YES is `Y` + `ES`, NO is one token, `N` is one too.
VOCAB = {"Y": 73, "E": 53, "ES": 2097, "N": 62, "NO": 13465, "Yes": 10539}
CONTEXT = [1, 9, 9, 198, 1, 520, 9531, 198]  # the rendered conversation up to `<|im_start|>assistant\n`
LOGPROBS = {73: -2.6431, 62: -6.0181, 13465: -5.3931, 10539: -2.5181}  # raw, before any restriction


def tokenize(text: str) -> list[int]:
    """Greedy longest match over VOCAB (enough for the choices' prefixes)."""
    ids, i = [], 0
    while i < len(text):
        piece = max((v for v in VOCAB if text.startswith(v, i)), key=len)
        ids.append(VOCAB[piece])
        i += len(piece)
    return ids


class FakeVLLM:
    """A vLLM OpenAI-compatible server on MockTransport; the flags make it refuse or ignore the single step."""

    def __init__(self, *, refuse: bool = False, ignore: bool = False, no_tokenize: bool = False,
                 no_logprob_ids: bool = False, down: int = 0, reject_long: bool = False) -> None:
        self.refuse, self.ignore, self.no_tokenize = refuse, ignore, no_tokenize
        self.no_logprob_ids, self.down, self.reject_long = no_logprob_ids, down, reject_long
        self.chats: list[dict] = []
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            self.down -= 1
            raise httpx.ConnectError("connection refused", request=request)
        self.paths.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "judge"}]})
        body = json.loads(request.content)
        if request.url.path == "/tokenize":
            if self.no_tokenize:
                return httpx.Response(404, json={"detail": "Not Found"})
            if body.get("add_generation_prompt"):
                return httpx.Response(200, json={"tokens": CONTEXT, "count": len(CONTEXT)})
            assert body["continue_final_message"] and body["messages"][-1]["role"] == "assistant"
            return httpx.Response(200, json={"tokens": CONTEXT + tokenize(body["messages"][-1]["content"])})
        assert request.url.path == "/v1/chat/completions"
        self.chats.append(body)
        if self.reject_long and "too long" in body["messages"][-1]["content"]:
            return httpx.Response(400, json={"error": {"message": "maximum context length is 2048 tokens"}})
        if "allowed_token_ids" in body:
            if self.refuse:
                return httpx.Response(400, json={"error": {"message": "unknown parameter allowed_token_ids"}})
            if self.ignore:  # a server that neither restricts nor names tokens by id: free text
                return self.reply("Yes, it is.", [("Yes", -0.2, [("Yes", -0.2), ("No", -1.9)])])
            ids = [] if self.no_logprob_ids else body["logprob_token_ids"]
            allowed = body["allowed_token_ids"]
            best = max(allowed, key=lambda t: LOGPROBS[t])
            top = [(f"token_id:{t}", LOGPROBS[t]) for t in ids] or [("token_id:10539", -2.5181)]
            return self.reply("Y", [(f"token_id:{best}", LOGPROBS[best], top)])
        if "structured_outputs" in body:  # constrained: the first step's logprobs after the grammar's mask
            return self.reply("YES", [("Y", -0.0936, [("Y", -0.0936), ("NO", -2.8436), ("N", -3.4686)])])
        return self.reply("Yes, it is.", [])

    @staticmethod
    def reply(text: str, steps: list) -> httpx.Response:
        content = [{"token": tok, "logprob": lp, "top_logprobs": [{"token": t, "logprob": v} for t, v in top]}
                   for tok, lp, top in steps]
        return httpx.Response(200, json={"choices": [{"message": {"content": text}, "logprobs": {"content": content}}]})


def judge_on(server: FakeVLLM, **kw) -> OpenAIJudge:
    return OpenAIJudge("http://judge:8000/v1", None, None, 5.0, 4, transport=httpx.MockTransport(server), **kw)


MESSAGES = [{"role": "system", "content": "judge"}, {"role": "user", "content": "Reference: left lung"}]


async def verdict(judge: OpenAIJudge, messages=MESSAGES) -> Completion:
    return await judge.verdict(messages, choices=CHOICES, max_tokens=4, top_logprobs=10)


# -- which first tokens decide -----------------------------------------------------------------------------------
def test_choice_prefixes():
    assert choice_prefixes(["YES", "NO"]) == ["Y", "YE", "YES", "N", "NO"]


def test_plan_allows_every_single_token_prefix_of_each_choice():
    plan = plan_verdict(CHOICES, {p: tokenize(p) for p in choice_prefixes(CHOICES)})
    assert plan.mode == SINGLE_STEP
    assert plan.token_choice == {73: "YES", 62: "NO", 13465: "NO"}
    assert plan.token_ids == [62, 73, 13465]


def test_plan_falls_back_when_choices_share_a_first_token():
    reply = {"N": [62], "NO": [62, 79], "NOP": [62, 82], "NOPE": [62, 81]}
    plan = plan_verdict(["NO", "NOPE"], reply)
    assert plan.mode == CONSTRAINED and "same token" in plan.reason


def test_plan_falls_back_when_a_prefix_token_begins_two_choices():
    reply = {"A": [1], "AB": [2], "AC": [3]}
    plan = plan_verdict(["AB", "AC"], reply)
    assert plan.mode == CONSTRAINED and "begins both" in plan.reason


def test_plan_falls_back_on_an_empty_tokenization():
    assert plan_verdict(CHOICES, {"YES": [], "NO": [13465]}).mode == CONSTRAINED


def test_single_step_completion_sums_each_choices_tokens():
    plan = VerdictPlan(("YES", "NO"), {73: "YES", 62: "NO", 13465: "NO"}, "")
    out = single_step_completion(plan, 73, {73: -2.6431, 62: -6.0181, 13465: -5.3931, 10539: -1.0})
    assert out is not None and out.text == "YES"
    assert out.first_token_logprobs["NO"] == pytest.approx(math.log(math.exp(-6.0181) + math.exp(-5.3931)))
    # The same p(YES) as the constrained call's first step, whose logprobs are renormalised over Y, N, NO.
    assert p_yes(out.first_token_logprobs, "YES") == pytest.approx(p_yes({"Y": -0.0936, "NO": -2.8436,
                                                                             "N": -3.4686}, "YES"), abs=1e-3)
    assert single_step_completion(plan, 10539, {}) is None  # a token the plan does not allow


# -- the server backend ------------------------------------------------------------------------------------------
async def test_single_step_request_shape_and_p_yes(caplog):
    server = FakeVLLM()
    judge = judge_on(server)
    with caplog.at_level(logging.INFO, logger="medix.judge"):
        await judge.start()
    assert "judge verdict: single-step" in caplog.text
    assert "/tokenize" in server.paths  # on the server's root, not under /v1
    d = judge.describe()
    assert d["verdict"] == SINGLE_STEP and d["verdict_tokens"] == {"62": "NO", "73": "YES", "13465": "NO"}

    out = await verdict(judge)
    body = server.chats[-1]
    assert body["max_tokens"] == 1 and body["temperature"] == 0
    assert body["allowed_token_ids"] == body["logprob_token_ids"] == [62, 73, 13465]
    assert body["logprobs"] is True and body["top_logprobs"] >= 3 and body["return_tokens_as_token_ids"] is True
    assert "structured_outputs" not in body
    assert out.text == "YES"
    expected = math.exp(-2.6431) / (math.exp(-2.6431) + math.exp(-6.0181) + math.exp(-5.3931))
    assert p_yes(out.first_token_logprobs, out.text) == pytest.approx(expected)
    assert (await judge.health())["verdict"] == SINGLE_STEP
    await judge.close()


async def test_refused_parameter_falls_back_to_the_constrained_call(caplog):
    server = FakeVLLM(refuse=True)
    judge = judge_on(server)
    with caplog.at_level(logging.WARNING, logger="medix.judge"):
        await judge.start()
    assert "judge verdict: constrained" in caplog.text and "refused" in caplog.text
    out = await verdict(judge)
    body = server.chats[-1]
    assert body["structured_outputs"] == {"choice": CHOICES} and body["max_tokens"] == 4
    assert "allowed_token_ids" not in body
    assert out.text == "YES" and p_yes(out.first_token_logprobs, "YES") == pytest.approx(0.9106, abs=1e-3)
    assert judge.describe()["verdict"] == CONSTRAINED


async def test_free_text_server_goes_through_the_constrained_call():
    server = FakeVLLM(ignore=True)
    judge = judge_on(server)
    await judge.start()
    assert judge.describe()["verdict"] == CONSTRAINED and "ignored" in judge.describe()["verdict_reason"]
    server.chats.clear()
    await verdict(judge)
    assert [("structured_outputs" in b, "allowed_token_ids" in b) for b in server.chats] == [(True, False)]


async def test_a_server_without_tokenize_falls_back():
    judge = judge_on(FakeVLLM(no_tokenize=True))
    await judge.start()
    assert judge.describe()["verdict"] == CONSTRAINED and "tokenize" in judge.describe()["verdict_reason"]


async def test_a_server_ignoring_logprob_token_ids_keeps_the_single_step():
    server = FakeVLLM(no_logprob_ids=True)
    judge = judge_on(server)
    await judge.start()
    assert judge.describe()["verdict"] == SINGLE_STEP and "logprob_token_ids" in judge.describe()["verdict_reason"]
    out = await verdict(judge)  # only the emitted token's logprob is known: p(YES) is the verdict's
    assert out.text == "YES" and p_yes(out.first_token_logprobs, out.text) == 1.0


async def test_a_server_down_at_start_is_learned_from_on_the_first_verdict():
    server = FakeVLLM(down=1)
    judge = judge_on(server)
    await judge.start()
    assert judge.describe()["verdict"].startswith("not learned")
    out = await verdict(judge)
    assert out.text == "YES" and judge.describe()["verdict"] == SINGLE_STEP
    assert "allowed_token_ids" in server.chats[-1]


async def test_a_refused_input_in_single_step_fails_the_item_not_the_mode():
    server = FakeVLLM(reject_long=True)
    judge = judge_on(server)
    await judge.start()
    with pytest.raises(InputRejected):
        await verdict(judge, [{"role": "user", "content": "too long"}])
    assert judge.describe()["verdict"] == SINGLE_STEP
    assert (await verdict(judge)).text == "YES"


async def test_switched_off_single_step_uses_the_constrained_call():
    server = FakeVLLM()
    judge = judge_on(server, single_step=False)
    await judge.start()
    await verdict(judge)
    assert judge.describe()["verdict"] == CONSTRAINED and "structured_outputs" in server.chats[-1]


async def test_other_choices_than_learned_use_the_constrained_call():
    server = FakeVLLM()
    judge = judge_on(server)
    await judge.start()
    await judge.verdict(MESSAGES, choices=["TRUE", "FALSE"], max_tokens=4, top_logprobs=10)
    assert server.chats[-1]["structured_outputs"] == {"choice": ["TRUE", "FALSE"]}


# -- the tenant priority each call carries -------------------------------------------------------------------
class NoPriorityVLLM(FakeVLLM):
    """A server started without priority scheduling: vLLM refuses a non-zero priority with a 400."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/chat/completions" and json.loads(request.content).get("priority"):
            self.chats.append(json.loads(request.content))
            return httpx.Response(400, json={"error": {"message": "Priority scheduling is not enabled."}})
        return super().__call__(request)


async def test_a_call_carries_the_priority_of_its_slot_and_none_at_zero():
    server = FakeVLLM()
    judge = judge_on(server)
    await verdict(judge)
    token = CALL_PRIORITY.set(3)
    try:
        await verdict(judge)
    finally:
        CALL_PRIORITY.reset(token)
    assert "priority" not in server.chats[-2] and server.chats[-1]["priority"] == 3


async def test_a_server_that_refuses_priorities_gets_the_call_without_and_no_more_of_them():
    server = NoPriorityVLLM()
    judge = judge_on(server)
    token = CALL_PRIORITY.set(2)
    try:
        first, second = await verdict(judge), await verdict(judge)
    finally:
        CALL_PRIORITY.reset(token)
    assert first.text == second.text == "YES"  # scored, never an error for the caller
    refused = [c for c in server.chats if c.get("priority")]
    assert len(refused) == 1  # refused once, then the field is left out
    assert judge.describe()["tenant_priority"] == "refused by the server"


# -- a server that ignores structured outputs: the reply read by the published rule, through /reward ------------
class SentenceServer:
    """An OpenAI-compatible server without /tokenize that ignores `structured_outputs` and answers in prose,
    the reply chosen by the answer named in the prompt."""

    REPLIES: ClassVar[dict[str, str]] = {
        "spleen": "Yes, the spleen is what the reference names.", "kidney": "Maybe; it is hard to say.",
        "liver": "No. The reference is another organ.", "heart": ""}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "judge"}]})
        if request.url.path != "/v1/chat/completions":
            return httpx.Response(404, json={"detail": "Not Found"})
        prompt = json.loads(request.content)["messages"][-1]["content"]
        text = next(reply for answer, reply in self.REPLIES.items() if answer in prompt)
        return FakeVLLM.reply(text, [("Yes", -0.1, [("Yes", -0.1), ("No", -2.4)])] if text else [])


async def test_prose_replies_are_read_as_the_published_method_reads_them(app_client):
    items = [{"id": a, "response": f"<thinking>t</thinking><answer>{a}</answer>", "ground_truth": "lower pole"}
             for a in ("spleen", "kidney", "liver")]
    async with app_client(judge=judge_on(SentenceServer()), profile="medix-r1-soft") as c:
        r = await c.post("/reward", json={"items": items})
        assert r.status_code == 200, r.text
        got = {x["id"]: (x["details"]["judge_verdict"], x["accuracy_llm"]) for x in r.json()["results"]}
        # YES anywhere reads YES, anything else NO; a prose reply's first token says nothing of p(YES).
        assert got == {"spleen": ("YES", 1.0), "kidney": ("NO", 0.0), "liver": ("NO", 0.0)}

        # An empty reply (asked twice) is no verdict: that item fails with an error, never a silent NO, and the
        # rest of its batch is scored.
        item = {"id": "h", "response": "<thinking>t</thinking><answer>heart</answer>", "ground_truth": "lower pole"}
        r = await c.post("/reward", json={"items": [items[0], item]})
        assert r.status_code == 200, r.text
        ok, empty = r.json()["results"]
        assert ok["accuracy_llm"] == 1.0 and empty["overall"] is None and empty["accuracy_llm"] is None
        assert empty["error"]["type"] == "input_rejected" and "empty" in empty["error"]["message"]
