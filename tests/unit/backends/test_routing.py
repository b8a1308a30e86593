"""Several judge replicas: calls that share the verdict prompt up to the candidate go to one replica, the least
busy takes a call whose replica lags, and a replica that failed rests while the retry goes elsewhere."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter

import httpx
import pytest

from service.backends.base import CALL_AFFINITY, TransientBackendError
from service.backends.judge_openai import OpenAIJudge
from service.reward.prompt import DEFAULT_PROMPT, VerdictPrompt, load_prompt
from tests.unit.fakes import FakeJudge

URLS = ["http://a:8000/v1", "http://b:8000/v1", "http://c:8000/v1"]
MESSAGES = [{"role": "system", "content": "judge"}, {"role": "user", "content": "Reference: x\nCandidate: y"}]


class Replicas:
    """Chat servers on MockTransport that record which host took each call; `hold` keeps a host's calls open
    until released, `fail` makes a host answer 503."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        self.hold: dict[str, asyncio.Event] = {}
        self.fail: set[str] = set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"data": [{"id": "judge"}]})
        self.hosts.append(host)
        if host in self.hold:
            await self.hold[host].wait()
        if host in self.fail:
            return httpx.Response(503, json={"error": "overloaded"})
        json.loads(request.content)
        content = [{"token": "YES", "logprob": -0.1, "top_logprobs": [{"token": "YES", "logprob": -0.1}]}]
        choice = {"message": {"content": "YES"}, "logprobs": {"content": content}}
        return httpx.Response(200, json={"choices": [choice]})


def judge_on(replicas: Replicas, urls: list[str] = URLS, **kw) -> OpenAIJudge:
    return OpenAIJudge(urls, "judge", None, 5.0, 64, transport=httpx.MockTransport(replicas), single_step=False, **kw)


async def call(judge: OpenAIJudge, key: str | None) -> None:
    token = CALL_AFFINITY.set(key)
    try:
        await judge.complete(MESSAGES, max_tokens=4, choice=["YES", "NO"])
    finally:
        CALL_AFFINITY.reset(token)


async def test_calls_sharing_a_prefix_go_to_one_replica_and_groups_spread():
    replicas = Replicas()
    judge = judge_on(replicas)
    per_key: dict[str, set[str]] = {}
    for group in range(60):
        for _ in range(4):
            before = len(replicas.hosts)
            await call(judge, f"system\x1eReference: finding {group}\nCandidate: ")
            per_key.setdefault(str(group), set()).update(replicas.hosts[before:])
    assert all(len(hosts) == 1 for hosts in per_key.values())
    share = Counter(next(iter(h)) for h in per_key.values())
    assert set(share) == {"a", "b", "c"} and min(share.values()) >= 10  # 60 groups over 3 replicas
    await judge.close()


async def test_least_busy_routing_ignores_the_key_and_calls_without_a_key_go_to_the_least_busy():
    replicas = Replicas()
    judge = judge_on(replicas, routing="least_busy")
    for _ in range(6):
        await call(judge, "the same group")
    assert set(replicas.hosts) == {"a", "b", "c"}  # idle replicas take turns
    replicas.hosts.clear()
    replicas.hold["a"] = asyncio.Event()
    held = [asyncio.create_task(call(judge, None)) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert sorted(replicas.hosts) == ["a", "b", "c"]  # one each: a busy replica is passed over
    replicas.hold["a"].set()
    await asyncio.gather(*held)
    await judge.close()


async def test_a_lagging_replica_hands_its_keys_to_the_least_busy():
    replicas = Replicas()
    judge = judge_on(replicas, urls=URLS[:2], affinity_slack=4)
    await call(judge, "group")
    home = replicas.hosts[-1]
    other = ({"a", "b"} - {home}).pop()
    replicas.hold[home] = asyncio.Event()
    replicas.hosts.clear()
    tasks = [asyncio.create_task(call(judge, "group")) for _ in range(8)]
    await asyncio.sleep(0.05)
    # Its own replica takes the key's calls until it has 5 more in flight than the other (slack 4); then the other.
    assert Counter(replicas.hosts) == {home: 5, other: 3}
    replicas.hold[home].set()
    await asyncio.gather(*tasks)
    await judge.close()


async def test_a_failed_replica_rests_and_only_its_keys_move():
    replicas = Replicas()
    judge = judge_on(replicas)
    homes = {}
    for g in range(30):
        await call(judge, f"group {g}")
        homes[g] = replicas.hosts[-1]
    down = homes[0]
    replicas.fail.add(down)
    with pytest.raises(TransientBackendError):
        await call(judge, "group 0")
    replicas.fail.clear()
    for g in range(30):
        await call(judge, f"group {g}")
        if homes[g] == down:
            assert replicas.hosts[-1] != down  # resting: its keys go elsewhere
        else:
            assert replicas.hosts[-1] == homes[g]  # rendezvous hashing: the other keys stay where they were
    await judge.close()


def test_the_shared_part_is_what_a_group_sends_alike():
    one = DEFAULT_PROMPT.shared_part("Pneumonia", None, 4000)
    assert one == DEFAULT_PROMPT.shared_part("Pneumonia", "what is shown?", 4000)  # the default asks no question
    assert one != DEFAULT_PROMPT.shared_part("Effusion", None, 4000)
    rendered = "\x1e".join(m["content"] for m in DEFAULT_PROMPT.messages("left lung", "Pneumonia", None, 4000))
    assert rendered.startswith(one) and rendered[len(one):].startswith("left lung")
    assert DEFAULT_PROMPT.candidate_last


def test_a_prompt_with_the_candidate_first_is_flagged(tmp_path, caplog):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": "x", "system": "Judge.", "user": "{answer} vs {reference}"}))
    with caplog.at_level(logging.WARNING, logger="medix.prompt"):
        prompt = load_prompt(path)
    assert not prompt.candidate_last and "prefix cache" in caplog.text
    assert VerdictPrompt(version="y", system="{question}", user="{reference} {answer}").candidate_last


class KeyRecordingJudge(FakeJudge):
    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str | None] = []

    async def verdict(self, messages, *, choices, max_tokens, top_logprobs):
        self.keys.append(CALL_AFFINITY.get())
        return await super().verdict(messages, choices=choices, max_tokens=max_tokens, top_logprobs=top_logprobs)


async def test_each_verdict_carries_its_groups_shared_part(app_client):
    judge = KeyRecordingJudge()
    items = [{"response": f"<answer>{a}</answer>", "ground_truth": gt}
             for gt in ("Pneumonia", "Effusion") for a in ("left lung", "right lung")]
    async with app_client(judge=judge) as c:
        assert (await c.post("/reward", json={"items": items})).status_code == 200
    assert len(judge.keys) == 4 and len(set(judge.keys)) == 2
    assert all(k and k.startswith(DEFAULT_PROMPT.system) for k in judge.keys)
    assert CALL_AFFINITY.get() is None
