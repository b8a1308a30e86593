"""The HTTP layer (errors, limits, ops routes) over fake backends; the real stack is in tests/integration."""

import asyncio

import pytest

from service.backends.base import TransientBackendError
from service.runtime.exceptions import InputRejected
from tests.unit.fakes import FakeJudge

GOOD = {"response": "<X_RAY><thinking>t</thinking><answer>edema</answer>", "ground_truth": "<X_RAY>Pneumonia"}


def assert_error_shape(resp, status, param=None):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and {"type", "message", "param"} <= set(body["error"])
    if param is not None:
        assert body["error"]["param"] == param, body
    return body["error"]


async def test_reward_ok(app_client):
    async with app_client() as c:
        r = await c.post("/reward", json={"items": [GOOD]})
    assert r.status_code == 200
    assert set(r.json()["results"][0]) >= {"id", "overall", "format", "accuracy_llm", "accuracy_embed", "modality"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"items": [GOOD, {"ground_truth": "<X_RAY>x"}]}, "items[1].response"),
        ({"items": [{"response": "x", "ground_truth": "<XRAY>x"}]}, "items[0].ground_truth"),
        ({"items": [{"response": "x", "ground_truth": {"answer": "x", "modality": "PHOTO"}}]},
         "items[0].ground_truth.modality"),
        ({"items": [{"response": 5, "ground_truth": "x"}]}, "items[0].response"),
        ({"items": []}, "items"),
        ({"items": "nope"}, "items"),
        ({}, "items"),
        ({"items": [GOOD], "profile": "unknown"}, "profile"),
    ],
)
async def test_invalid_requests_name_the_field(body, param, app_client):
    async with app_client() as c:
        err = assert_error_shape(await c.post("/reward", json=body), 422, param)
    assert param in err["message"]


async def test_malformed_json_is_422_in_the_error_shape(app_client):
    async with app_client() as c:
        r = await c.post("/reward", content=b'{"items": [', headers={"content-type": "application/json"})
    assert assert_error_shape(r, 422)["type"] == "invalid_json"


async def test_too_many_items_is_422_and_big_body_is_413(app_client):
    async with app_client(max_items_per_request=3, max_body_bytes=2048) as c:
        assert_error_shape(await c.post("/reward", json={"items": [GOOD] * 4}), 422, "items")
        assert_error_shape(await c.post("/reward", json={"items": [GOOD] * 30}), 413, "body")


async def test_judge_outage_is_503_with_retry_after_and_no_results(app_client):
    async with app_client(judge=FakeJudge(fail=True), retry_after_s=7) as c:
        r = await c.post("/reward", json={"items": [GOOD]})
        ready = await c.get("/readyz")
    err = assert_error_shape(r, 503, "judge")
    assert r.headers["retry-after"] == "7" and "results" not in r.json()
    assert "judge" in err["message"]
    assert_error_shape(ready, 503, "judge")


async def test_overload_is_429_with_retry_after(app_client):
    class SlowJudge(FakeJudge):
        async def complete(self, *a, **k):
            await asyncio.sleep(0.3)
            return await super().complete(*a, **k)

    async with app_client(judge=SlowJudge(), max_inflight_requests=1) as c:
        first = asyncio.create_task(c.post("/reward", json={"items": [GOOD]}))
        await asyncio.sleep(0.1)
        second = await c.post("/reward", json={"items": [GOOD]})
        assert (await first).status_code == 200
    assert_error_shape(second, 429)
    assert second.headers["retry-after"]


async def test_ops_routes_and_metric_names(app_client):
    async with app_client() as c:
        assert (await c.get("/healthz")).json()["status"] == "ok"
        ready = await c.get("/readyz")
        assert ready.status_code == 200 and set(ready.json()["components"]) == {"judge", "embed", "cache"}
        await c.post("/reward", json={"items": [GOOD]})
        text = (await c.get("/metrics")).text
        assert (await c.get("/openapi.json")).status_code == 200
        assert_error_shape(await c.get("/nope"), 404)
    for name in ("medix_requests_total", "medix_request_duration_seconds_bucket", "medix_items_total",
                 "medix_inflight_requests", "medix_backend_requests_total", "medix_backend_duration_seconds_bucket",
                 "medix_embed_batch_size", "medix_cache_requests_total", "medix_reward_component_bucket"):
        assert name in text, name
    assert 'medix_requests_total{route="/reward",status="200"} 1.0' in text


async def test_api_keys_guard_scoring_routes_only(app_client):
    async with app_client(api_keys=["k-a", "k-b"], metrics_key="m-key") as c:
        missing = await c.post("/reward", json={"items": [GOOD]})
        assert_error_shape(missing, 401, "authorization")
        assert missing.headers["www-authenticate"] == "Bearer"
        assert_error_shape(await c.post("/judge", json={}, headers={"Authorization": "Bearer nope"}), 401)
        ok = await c.post("/reward", json={"items": [GOOD]}, headers={"Authorization": "Bearer k-b"})
        assert ok.status_code == 200
        assert (await c.get("/healthz")).status_code == 200 and (await c.get("/readyz")).status_code == 200
        assert_error_shape(await c.get("/metrics"), 401)
        assert (await c.get("/metrics", headers={"Authorization": "Bearer m-key"})).status_code == 200


async def test_one_keys_flood_does_not_starve_another(app_client):
    keys = {"a": {"Authorization": "Bearer k-a"}, "b": {"Authorization": "Bearer k-b"}}
    async with app_client(api_keys=["k-a", "k-b"], rate_limit_items_per_s=1, rate_limit_burst=4) as c:
        flood = [await c.post("/reward", json={"items": [GOOD] * 2}, headers=keys["a"]) for _ in range(4)]
        assert [r.status_code for r in flood] == [200, 200, 429, 429]
        assert_error_shape(flood[2], 429, "items")
        assert int(flood[2].headers["retry-after"]) >= 1
        other = await c.post("/reward", json={"items": [GOOD] * 4}, headers=keys["b"])
        assert other.status_code == 200
        text = (await c.get("/metrics")).text
    assert "medix_rate_limited_total 2.0" in text


async def test_request_id_is_accepted_echoed_or_made(app_client):
    async with app_client() as c:
        given = await c.post("/reward", json={"items": [GOOD]}, headers={"X-Request-Id": "trainer-7.step-3"})
        made = await c.get("/healthz")
        bad = await c.get("/healthz", headers={"X-Request-Id": "no spaces\tor tabs"})
    assert given.headers["x-request-id"] == "trainer-7.step-3"
    assert len(made.headers["x-request-id"]) == 32 and bad.headers["x-request-id"] != "no spaces\tor tabs"


async def test_text_over_the_limit_is_422_naming_it(app_client):
    long = dict(GOOD, response="x" * 100)
    async with app_client(max_text_chars=80) as c:
        assert_error_shape(await c.post("/reward", json={"items": [GOOD, long]}), 422, "items[1].response")


class PickyJudge(FakeJudge):
    """Refuses any prompt whose candidate answer contains LONG, as a server refuses a prompt over its context."""

    async def complete(self, messages, **kw):
        if "LONG" in messages[-1]["content"]:
            raise InputRejected("prompt of 4100 tokens exceeds the context of 2048")
        return await super().complete(messages, **kw)


async def test_one_refused_item_fails_alone_and_the_batch_is_scored(app_client):
    bad = {"response": "<thinking>t</thinking><answer>LONG answer</answer>", "ground_truth": "<X_RAY>Pneumonia"}
    async with app_client(judge=PickyJudge()) as c:
        r = await c.post("/reward", json={"items": [GOOD, bad, {**GOOD, "id": "x"}]})
    assert r.status_code == 200, r.text
    ok1, failed, ok2 = r.json()["results"]
    assert ok1["overall"] is not None and ok2["overall"] is not None and ok1.get("error") is None
    assert failed["overall"] is None and failed["accuracy_llm"] is None  # never a silent score
    assert failed["error"]["type"] == "input_rejected" and failed["error"]["param"] == "items[1]"
    assert "context" in failed["error"]["message"]


async def test_every_text_field_is_held_to_the_length_limit(app_client):
    long = "x" * 81
    async with app_client(max_text_chars=80) as c:
        for item, param in [({**GOOD, "ground_truth": "<X_RAY>" + long}, "items[0].ground_truth"),
                            ({**GOOD, "question": long}, "items[0].question"),
                            ({**GOOD, "ground_truth": {"answer": long, "modality": None}},
                             "items[0].ground_truth.answer")]:
            assert_error_shape(await c.post("/reward", json={"items": [item]}), 422, param)
        r = await c.post("/get_reward", json={"query": ["q"], "prompts": [long], "labels": ["a"]})
        assert_error_shape(r, 422, "prompts[0]")


async def test_a_refused_request_costs_no_rate_limit_tokens(app_client):
    async with app_client(rate_limit_items_per_s=0.01, rate_limit_burst=2) as c:
        assert_error_shape(await c.post("/reward", json={"items": [GOOD, GOOD], "profile": "nope"}), 422, "profile")
        assert (await c.post("/reward", json={"items": [GOOD, GOOD]})).status_code == 200
        assert_error_shape(await c.post("/reward", json={"items": [GOOD] * 3}), 422, "items")  # over the burst
        assert_error_shape(await c.post("/reward", json={"items": [GOOD]}), 429)


async def test_backend_urls_reach_callers_without_credentials_or_paths(app_client):
    class LeakyJudge(FakeJudge):
        async def complete(self, *a, **k):
            raise TransientBackendError("cannot reach http://admin:hunter2@judge.internal:8100/v1?token=t0k: refused")

        async def health(self):
            return {"replicas": {"http://admin:hunter2@judge.internal:8100/v1": "ok"}}

    async with app_client(judge=LeakyJudge()) as c:
        r = await c.post("/reward", json={"items": [{**GOOD, "response": "<answer>edema x</answer>"}]})
        ready = await c.get("/readyz")
    for text in (r.text, ready.text):
        assert "hunter2" not in text and "admin" not in text and "t0k" not in text
    assert "judge.internal:8100" in r.text


def test_a_prompt_template_that_cannot_render_stops_start_up(tmp_path):
    from service.reward.prompt import load_prompt

    f = tmp_path / "p.json"
    f.write_text('{"version": "v", "system": "Reply as {\\"verdict\\": ...}", "user": "{answer} {reference}"}')
    with pytest.raises(ValueError, match="literal braces"):
        load_prompt(f)


class SlowJudge(FakeJudge):
    async def complete(self, *a, **k):
        await asyncio.sleep(0.3)
        return await super().complete(*a, **k)


@pytest.mark.parametrize("limits", [{"max_inflight_requests": 1}, {"max_inflight_items": 2}])
async def test_one_keys_burst_never_turns_another_key_away(app_client, limits):
    pending = {**GOOD, "response": "<X_RAY><thinking>t</thinking><answer>edema</answer>"}
    async with app_client(judge=SlowJudge(), api_keys=["k-a", "k-b"], **limits) as c:
        a = {"authorization": "Bearer k-a"}
        first = asyncio.create_task(c.post("/reward", json={"items": [pending, pending]}, headers=a))
        await asyncio.sleep(0.1)
        again = await c.post("/reward", json={"items": [pending]}, headers=a)
        other = await c.post("/reward", json={"items": [pending]}, headers={"authorization": "Bearer k-b"})
        assert (await first).status_code == 200
    assert_error_shape(again, 429)
    assert other.status_code == 200, other.text


async def test_work_is_admitted_by_items_so_many_one_item_requests_pass(app_client):
    async with app_client(judge=SlowJudge(), max_inflight_items=128) as c:  # the old limit was 64 requests
        answers = await asyncio.gather(*(c.post("/reward", json={"items": [{**GOOD, "id": str(i)}]})
                                         for i in range(100)))
    assert [r.status_code for r in answers] == [200] * 100


async def test_get_reward_answers_empty_lists_with_empty_lists(app_client):
    # OpenRLHF 0.10.2-0.11.0 split a one-sample list across several reward URLs: every URL after the first gets
    # empty lists. A 422 there was retried five times and left the sample without a reward, stopping training.
    async with app_client(rate_limit_items_per_s=0.01, rate_limit_burst=1) as c:
        for _ in range(3):  # nothing to score: no rate-limit token is taken
            r = await c.post("/get_reward", json={"query": [], "prompts": [], "labels": []})
            assert r.status_code == 200, r.text
            assert r.json() == {"rewards": [], "scores": [], "extra_logs": {
                "format": [], "accuracy_llm": [], "accuracy_embed": [], "modality": []}}
        r = await c.post("/get_reward?on_refused=skip", json={"query": [], "labels": []})
        assert r.status_code == 200 and "medix_refused" in r.json()["extra_logs"]
        assert_error_shape(await c.post("/get_reward", json={"query": [], "labels": ["a"]}), 422, "labels")
        assert_error_shape(await c.post("/get_reward", json={"query": [], "prompts": ["p"], "labels": []}), 422,
                           "prompts")


async def test_get_reward_on_refused_skip_scores_the_chosen_reward_and_counts_it(app_client):
    ok = "Q: " + GOOD["response"]
    bad = "Q: <thinking>t</thinking><answer>LONG answer</answer>"
    body = {"query": [ok, bad], "prompts": ["Q: ", "Q: "], "labels": ["<X_RAY>Pneumonia"] * 2}
    async with app_client(judge=PickyJudge()) as c:
        assert_error_shape(await c.post("/get_reward", json=body), 422, "query[1]")  # the default: refused
        r = await c.post("/get_reward?on_refused=skip&refused_reward=0.25", json=body)
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["rewards"][1] == got["scores"][1] == 0.25 and got["rewards"][0] != 0.25
        assert got["extra_logs"]["medix_refused"] == [0.0, 1.0]
        assert all(len(v) == 2 and None not in v for v in got["extra_logs"].values())
        for query in ("on_refused=drop", "on_refused=skip&refused_reward=nan", "on_refused=skip&refused_reward=x"):
            assert_error_shape(await c.post(f"/get_reward?{query}", json=body), 422)
