"""The HTTP layer (errors, limits, ops routes) over fake backends; the real stack is in tests/integration."""

import asyncio

import pytest

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
