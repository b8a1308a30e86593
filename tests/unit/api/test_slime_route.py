"""/rm, slime's remote reward model protocol (`--rm-type remote_rm --reward-key reward`), over fake backends: the
sample is scored as /reward scores it, what cannot be scored is an HTTP error (slime retries, then raises), never
a 0; with API keys set, a request without a key is served only as MEDIX_RM_TENANT."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from clients.contract import COMPONENTS
from service.runtime.exceptions import InputRejected
from service.settings import Settings
from tests.unit.fakes import FakeJudge

SAMPLE = {"prompt": "<|im_start|>user\nWhich disease?<|im_end|>\n<|im_start|>assistant\n",
          "response": "<X_RAY><thinking>t</thinking><answer>edema</answer><|im_end|>",
          "label": "<X_RAY>Pneumonia"}
ITEM = {"response": "<X_RAY><thinking>t</thinking><answer>edema</answer>", "ground_truth": "<X_RAY>Pneumonia"}


def error_of(resp, status, param=None):
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    if param is not None:
        assert error["param"] == param, error
    return error


class PickyJudge(FakeJudge):
    """Refuses any answer that says LONG, as a judge server refuses a prompt over its context."""

    async def complete(self, messages, **kw):
        if "LONG" in messages[-1]["content"]:
            raise InputRejected("prompt of 4100 tokens exceeds the context of 2048")
        return await super().complete(messages, **kw)


@pytest.mark.parametrize("sample", [
    SAMPLE,
    {**SAMPLE, "response": ITEM["response"]},  # no end-of-turn marker
    {**SAMPLE, "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which?"}]}]},
    {**SAMPLE, "prompt": None, "label": {"answer": "Pneumonia", "modality": "X_RAY"}, "extra": {"ignored": 1}},
    {"response": "<thinking>t</thinking><answer>Pneumonia</answer></s>", "label": "Pneumonia"},  # no modality
])
async def test_the_sample_is_scored_as_reward_scores_it(app_client, sample):
    label = sample["label"]
    item = {"response": sample["response"].removesuffix("<|im_end|>").removesuffix("</s>"), "ground_truth": label}
    async with app_client() as c:
        rm = await c.post("/rm", json=sample)
        ref = (await c.post("/reward", json={"items": [item]})).json()["results"][0]
    assert rm.status_code == 200, rm.text
    got = rm.json()
    assert list(got) == ["reward", *COMPONENTS]  # `--reward-key reward`; every value a number
    assert got["reward"] == ref["overall"]
    assert got == {"reward": ref["overall"], **{k: ref[k] if ref[k] is not None else 0.0 for k in COMPONENTS}}


async def test_a_profile_is_chosen_in_the_url(app_client):
    async with app_client() as c:
        ok = await c.post("/rm?profile=medix-r1", json=SAMPLE)
        unknown = await c.post("/rm?profile=nope", json=SAMPLE)
    assert ok.status_code == 200, ok.text
    error_of(unknown, 422, "profile")


@pytest.mark.parametrize(("body", "param"), [
    ({**SAMPLE, "label": None}, "label"),  # slime without --label-key
    ({k: v for k, v in SAMPLE.items() if k != "label"}, "label"),
    ({**SAMPLE, "label": "<XRAY>Pneumonia"}, "label"),
    ({**SAMPLE, "response": 5}, "response"),
])
async def test_a_sample_that_cannot_be_read_is_422_naming_the_field(app_client, body, param):
    async with app_client() as c:
        error_of(await c.post("/rm", json=body), 422, param)


async def test_a_refused_sample_is_an_error_never_a_zero(app_client):
    async with app_client(judge=PickyJudge()) as c:
        refused = await c.post("/rm", json={**SAMPLE, "response": "<X_RAY><thinking>t</thinking><answer>LONG"
                                                                   "</answer>"})
        fine = await c.post("/rm", json=SAMPLE)
    error = error_of(refused, 422, "response")
    assert error["type"] == "input_rejected" and "context" in error["message"]
    assert "reward" not in refused.json() and fine.status_code == 200


async def test_an_outage_is_503_with_retry_after(app_client):
    async with app_client(judge=FakeJudge(fail=True), retry_after_s=7) as c:
        r = await c.post("/rm", json=SAMPLE)
    error_of(r, 503, "judge")
    assert r.headers["retry-after"] == "7" and "reward" not in r.json()


async def test_rm_is_a_scoring_route_with_its_limits_and_metrics(app_client):
    async with app_client(max_body_bytes=2048, max_text_chars=80) as c:
        error_of(await c.post("/rm", json={**SAMPLE, "prompt": "x" * 4000}), 413, "body")
        error_of(await c.post("/rm", json={**SAMPLE, "response": "x" * 81}), 422, "items[0].response")
        assert (await c.post("/rm", json=SAMPLE)).status_code == 200
        text = (await c.get("/metrics")).text
    assert 'medix_requests_total{route="/rm",status="200"} 1.0' in text
    assert 'medix_requests_total{route="/rm",status="413"} 1.0' in text


# --- API keys: slime sends no Authorization header ---------------------------------------------------------------

async def test_without_keys_rm_needs_none(app_client):
    async with app_client() as c:
        assert (await c.post("/rm", json=SAMPLE)).status_code == 200


async def test_with_keys_and_no_rm_tenant_a_keyless_rm_is_401(app_client):
    async with app_client(api_keys=["k-a"]) as c:
        missing = await c.post("/rm", json=SAMPLE)
        keyed = await c.post("/rm", json=SAMPLE, headers={"Authorization": "Bearer k-a"})
    error_of(missing, 401, "authorization")
    assert keyed.status_code == 200, keyed.text


async def test_with_rm_tenant_a_keyless_rm_is_served_as_that_tenant_and_nothing_else_opens(app_client):
    async with app_client(api_keys=["k-a", "k-b"], rm_tenant="key1", rate_limit_items_per_s=0.001,
                          rate_limit_burst=2) as c:
        keyless = [(await c.post("/rm", json=SAMPLE)).status_code for _ in range(3)]
        wrong_key = await c.post("/rm", json=SAMPLE, headers={"Authorization": "Bearer nope"})
        reward_keyless = await c.post("/reward", json={"items": [ITEM]})
        as_key1 = await c.post("/reward", json={"items": [ITEM]}, headers={"Authorization": "Bearer k-a"})
        as_key2 = await c.post("/reward", json={"items": [ITEM]}, headers={"Authorization": "Bearer k-b"})
    assert keyless == [200, 200, 429]  # key1's bucket of 2 items, spent by the key-less /rm requests
    error_of(wrong_key, 401, "authorization")  # a wrong key is never taken for no key
    error_of(reward_keyless, 401, "authorization")  # only /rm goes without a key
    error_of(as_key1, 429)  # the same tenant as key1: its bucket is empty
    assert as_key2.status_code == 200, as_key2.text


@pytest.mark.parametrize("where", [{"root_path": "/api"}, {"mount": "/api"}])
async def test_rm_tenant_works_under_a_root_path(fake_app, where):
    app = fake_app(api_keys=["k-a"], rm_tenant="slime")
    outer = Starlette(routes=[Mount(where["mount"], app=app)]) if "mount" in where else app
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=outer, root_path=where.get("root_path", ""))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            ok = await c.post("/api/rm", json=SAMPLE)
            other = await c.post("/api/reward", json={"items": [ITEM]})
    assert ok.status_code == 200, ok.text
    error_of(other, 401, "authorization")


def test_rm_tenant_is_off_by_default_and_read_from_the_environment(monkeypatch):
    assert Settings().rm_tenant is None
    monkeypatch.setenv("MEDIX_RM_TENANT", "slime")
    assert Settings().rm_tenant == "slime"
