"""Adapters called as each framework calls them, against the real HTTP app on fake backends.

Each framework's own code drives the same adapters against the real stack in tests/integration/frameworks.
"""

import asyncio
import functools
import importlib
import importlib.util
import inspect
import logging
import pickle
import time

import httpx
import numpy as np
import pytest

from clients.adapters import easyr1, openrlhf, trl, verl
from clients.adapters.common import (
    TRAINER_RETRIES,
    TRAINER_TIMEOUT,
    ItemFailed,
    checked,
    shared_async_client,
    shared_client,
)
from clients.adapters.trl import MedixReward, MedixRewardSync
from clients.client import AsyncMedixClient, MedixClient, MedixError, MedixUnavailable
from clients.contract import REFUSED_KEY, SCORE_KEYS, numeric_scores
from service.runtime.exceptions import InputRejected
from tests.integration.stack import free_port
from tests.unit.fakes import FakeJudge

GOOD = "<X_RAY><thinking>look</thinking><answer>pneumonia</answer>"
REFUSED = "<X_RAY><thinking>t</thinking><answer>LONG answer</answer>"  # the judge refuses it (see RefusingJudge)
VERL_KEYS = {"score", *SCORE_KEYS[1:]}


class RefusingJudge(FakeJudge):
    """Refuses any candidate answer containing LONG, as a judge server refuses a prompt over its context."""

    async def complete(self, messages, **kw):
        if "LONG" in messages[-1]["content"]:
            raise InputRejected("prompt of 4100 tokens exceeds the context of 2048")
        return await super().complete(messages, **kw)


@pytest.fixture(scope="module")
def url(fake_app, served):
    with served(fake_app(RefusingJudge(), max_items_per_request=5, retry_after_s=1)) as url:
        yield url


@pytest.fixture(scope="module")
def down_url(fake_app, served):
    with served(fake_app(FakeJudge(fail=True), retry_after_s=1, breaker_open_s=1), ready_path="/healthz") as url:
        yield url


@pytest.fixture
def nobody():
    """An address where nothing listens: a service that is down."""
    return f"http://127.0.0.1:{free_port()}"


def _reference(url, items):
    with MedixClient(url) as c:
        return [r.overall for r in c.reward(items)]


# -- TRL -----------------------------------------------------------------------------------------------------
TRL_CALL = {
    "prompts": [[{"role": "user", "content": "Which disease?"}]] * 3,
    "completions": [[{"role": "assistant", "content": c}]
                    for c in (GOOD, "<thinking>x</thinking><answer>Edema</answer>", "Pneumonia")],
    "completion_ids": [[1], [2], [3]], "ground_truth": ["Pneumonia"] * 3, "modality": ["X_RAY", "X_RAY", None],
    "trainer_state": None, "log_extra": lambda *a: None,
}


def test_trl_reward_called_like_grpo_trainer(url):
    logged, logged_sync = {}, {}
    reward, sync = MedixReward(url), MedixRewardSync(url)
    out = asyncio.run(reward(**TRL_CALL, log_metric=lambda k, v: logged.__setitem__(k, v)))
    assert len(out) == 3 and out[0] > out[1]
    assert sync(**TRL_CALL, log_metric=lambda k, v: logged_sync.__setitem__(k, v)) == out
    assert set(logged) == {"medix/format", "medix/accuracy_llm", "medix/accuracy_embed", "medix/modality"}
    assert logged_sync == logged and reward.history[0]["rewards"] == out
    items = [{"response": c[0]["content"], "question": "Which disease?", "ground_truth": f"<{m}>Pneumonia" if m
              else "Pneumonia"} for c, m in zip(TRL_CALL["completions"], TRL_CALL["modality"], strict=True)]
    assert out == _reference(url, items)


def test_trl_outage_raises_or_skips(down_url, nobody):
    kwargs = {"prompts": ["q"], "completions": [GOOD], "ground_truth": ["<X_RAY>Edema"]}
    with pytest.raises(MedixUnavailable):
        asyncio.run(MedixReward(down_url, retries=1).__call__(**kwargs))
    with pytest.raises(MedixUnavailable):
        MedixRewardSync(nobody, retries=0)(**kwargs)
    assert asyncio.run(MedixReward(down_url, on_outage="skip", retries=0)(**kwargs)) == [None]
    assert MedixRewardSync(nobody, on_outage="skip", retries=0)(**kwargs) == [None]


def test_trl_an_item_the_service_refused_is_none_for_that_sample(url):
    out = MedixRewardSync(url)(prompts=["q", "q"], completions=[GOOD, REFUSED], ground_truth=["<X_RAY>Pneumonia"] * 2)
    assert out[0] == pytest.approx(1.0) and out[1] is None


def test_trl_async_reward_refuses_a_trl_that_would_not_await_it(monkeypatch):
    monkeypatch.setattr(trl, "_trl_version", lambda: (1, 13))
    with pytest.raises(RuntimeError, match="MedixRewardSync"):
        MedixReward("http://x")
    MedixRewardSync("http://x")  # the sync form works there
    monkeypatch.setattr(trl, "_trl_version", lambda: (1, 14))
    MedixReward("http://x")


def test_trl_reward_pickles_after_use_and_scores_without_log_metric(url):
    # TRL's AsyncGRPOTrainer pickles its reward functions into a spawned process and calls them there without
    # log_metric: nothing live (client, lock, event loop) may be in the reward's state.
    reward, sync = MedixReward(url), MedixRewardSync(url)
    first = asyncio.run(reward(**TRL_CALL, log_metric=lambda k, v: None))
    assert sync(**TRL_CALL) == first
    call = {k: v for k, v in TRL_CALL.items() if k not in ("trainer_state", "log_extra")}
    for used in (reward, sync):
        copy = pickle.loads(pickle.dumps(used))
        assert type(copy) is type(used) and copy.url == url and copy.history == used.history
        again = copy(**call)
        assert (asyncio.run(again) if inspect.isawaitable(again) else again) == first  # a new event loop
    assert pickle.loads(pickle.dumps(trl.medix_reward)) is trl.medix_reward


def test_trl_refused_item_raises_when_asked(url):
    kwargs = {"prompts": ["q", "q"], "completions": [GOOD, REFUSED], "ground_truth": ["<X_RAY>Pneumonia"] * 2}
    with pytest.raises(ItemFailed):
        MedixRewardSync(url, on_refused="raise")(**kwargs)
    with pytest.raises(ItemFailed):
        asyncio.run(MedixReward(url, on_refused="raise")(**kwargs))
    with pytest.raises(ValueError, match="on_refused"):
        MedixReward(url, on_refused="zero")
    assert MedixRewardSync(url)(prompts=[], completions=[], ground_truth=[]) == []


def test_axolotl_imports_medix_reward_by_its_dotted_name(url, monkeypatch, tmp_path):
    # Axolotl >= 0.17 (to 0.21.0, the newest): the module is everything before the last dot.
    def axolotl(fqn, module_of):
        func = getattr(importlib.import_module(module_of(fqn)), fqn.split(".")[-1])
        assert len(inspect.signature(func).parameters) >= 2  # Axolotl's own check
        return func

    fqn = "clients.adapters.trl.medix_reward"
    func = axolotl(fqn, lambda f: ".".join(f.split(".")[:-1]))
    assert func is trl.medix_reward and inspect.iscoroutinefunction(func)  # TRL awaits it from 1.10 on
    # Older Axolotl imports only the second-to-last part as a top-level module: a one-line file of the user's.
    (tmp_path / "medix_axolotl.py").write_text("from clients.adapters.trl import medix_reward  # noqa: F401\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert axolotl("medix_axolotl.medix_reward", lambda f: f.split(".")[-2]) is trl.medix_reward
    monkeypatch.setenv("MEDIX_URL", url)
    monkeypatch.setattr(trl, "_default", None)
    out = asyncio.run(func(**TRL_CALL))  # TRL's call, with no log_metric
    assert out == asyncio.run(MedixReward(url)(**TRL_CALL))


# -- EasyR1 --------------------------------------------------------------------------------------------------
def _load_like_easyr1(path, name="main", **kwargs):
    spec = importlib.util.spec_from_file_location("custom_reward_fn", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert getattr(module, "REWARD_TYPE", "batch") == "batch" and module.REWARD_NAME == "medix"
    return functools.partial(getattr(module, name), **kwargs)


def test_easyr1_batch_function_loaded_as_easyr1_loads_it(url):
    fn = _load_like_easyr1(easyr1.__file__, "main", url=url)
    inputs = [{"response": GOOD, "response_length": 12, "ground_truth": "<X_RAY>Pneumonia"},
              {"response": "no", "response_length": 1, "ground_truth": "Liver"}]
    out = fn(inputs)
    same = [{"response": x["response"], "ground_truth": x["ground_truth"]} for x in inputs]
    assert [o["overall"] for o in out] == _reference(url, same)
    assert out[0]["overall"] == pytest.approx(1.0) and out[1]["overall"] == 0.0
    assert all(set(o) == set(SCORE_KEYS) and all(isinstance(v, float) for v in o.values()) for o in out)
    assert out[1]["modality"] == 0.0  # untagged label: null modality is 0 in EasyR1's averaged logs
    assert _load_like_easyr1(easyr1.__file__, "compute_score", url=url)(inputs) == out


def test_easyr1_outage_and_refused_item_raise(url, nobody):
    with pytest.raises(MedixUnavailable):
        easyr1.main([{"response": GOOD, "response_length": 1, "ground_truth": "x"}], url=nobody, retries=0)
    with pytest.raises(ItemFailed) as e:
        easyr1.main([{"response": GOOD, "response_length": 1, "ground_truth": "<X_RAY>Pneumonia"},
                     {"response": REFUSED, "response_length": 1, "ground_truth": "<X_RAY>Pneumonia"}], url=url)
    assert e.value.param == "reward_inputs[1]" and "context" in e.value.message
    with pytest.raises(ValueError, match="batch"):
        easyr1.main({"response": GOOD, "response_length": 1, "ground_truth": "x"}, url=url)


def test_easyr1_refused_item_skipped_when_asked(url, caplog):
    inputs = [{"response": GOOD, "response_length": 1, "ground_truth": "<X_RAY>Pneumonia"},
              {"response": REFUSED, "response_length": 1, "ground_truth": "<X_RAY>Pneumonia"}]
    fn = _load_like_easyr1(easyr1.__file__, "main", url=url, on_refused="skip", refused_reward=0.5)
    with caplog.at_level(logging.WARNING, logger="medix.adapters"):
        out = fn(inputs)
    assert [o["overall"] for o in out] == [pytest.approx(1.0), 0.5]
    assert [o[REFUSED_KEY] for o in out] == [0.0, 1.0]  # EasyR1 averages it: the share refused
    assert all(set(o) == {*SCORE_KEYS, REFUSED_KEY} and all(isinstance(v, float) for v in o.values()) for o in out)
    assert "refused 1 of 2" in caplog.text and "reward_inputs[1]" in caplog.text
    assert easyr1.main([], url=url) == []
    with pytest.raises(MedixUnavailable):  # an outage still raises
        easyr1.main(inputs[:1], url="http://127.0.0.1:9", retries=0, on_refused="skip")


# -- verl ----------------------------------------------------------------------------------------------------
def test_verl_per_sample_forms_async_and_sync(url):
    extra = {"question": "q", "index": 3, "num_turns": None, "rollout_reward_scores": {}}
    one = asyncio.run(verl.compute_score(data_source="slake", solution_str=GOOD, ground_truth="<X_RAY>Pneumonia",
                                         extra_info=extra, url=url))
    assert set(one) == VERL_KEYS and one["score"] == pytest.approx(1.0)
    assert verl.compute_score_sync(data_source="slake", solution_str=GOOD, ground_truth="<X_RAY>Pneumonia",
                                   extra_info=extra, url=url) == one
    untagged = verl.compute_score_sync("slake", "<thinking>t</thinking><answer>Liver</answer>", "Liver", None, url=url)
    assert set(untagged) == VERL_KEYS and untagged["modality"] == 0.0
    assert all(isinstance(v, float) for v in (*one.values(), *untagged.values()))


def test_verl_batch_form_with_numpy_object_arrays(url):
    # verl's BatchRewardManager passes data_sources and extra_infos as numpy object arrays (no truth value).
    extras = np.array([{"question": "q", "modality": "X_RAY"}, {}], dtype=object)
    many = verl.compute_score_batch(data_sources=np.array(["slake", "slake"], dtype=object),
                                    solution_strs=[GOOD, "x"], ground_truths=["Pneumonia", "Liver"],
                                    extra_infos=extras, url=url)
    assert [m["score"] for m in many] == [pytest.approx(1.0), 0.0]
    assert all(set(m) == VERL_KEYS for m in many)
    assert verl.compute_score_batch(["s"], [GOOD], ["<X_RAY>Pneumonia"], None, url=url)[0]["score"] == \
        pytest.approx(1.0)


def test_verl_outage_and_refused_item_raise(url, nobody):
    with pytest.raises(MedixUnavailable):
        asyncio.run(verl.compute_score("s", GOOD, "x", None, url=nobody, retries=0))
    with pytest.raises(MedixUnavailable):
        verl.compute_score_sync("s", GOOD, "x", None, url=nobody, retries="0")  # kwargs may arrive as strings
    with pytest.raises(ItemFailed):
        verl.compute_score_batch(["s", "s"], [GOOD, REFUSED], ["<X_RAY>Pneumonia"] * 2, None, url=url)


def test_verl_refused_item_skipped_when_asked(url):
    kw = {"url": url, "on_refused": "skip", "refused_reward": "0.25"}  # Hydra may hand values over as strings
    got = [asyncio.run(verl.compute_score("s", REFUSED, "<X_RAY>Pneumonia", None, **kw)),
           verl.compute_score_sync("s", REFUSED, "<X_RAY>Pneumonia", None, **kw),
           *verl.compute_score_batch(["s", "s"], [GOOD, REFUSED], ["<X_RAY>Pneumonia"] * 2, None, **kw)]
    assert all(set(g) == VERL_KEYS | {REFUSED_KEY} for g in got)  # the same keys for every sample
    assert [g["score"] for g in got] == [0.25, 0.25, pytest.approx(1.0), 0.25]
    assert [g[REFUSED_KEY] for g in got] == [1.0, 1.0, 0.0, 1.0]
    assert verl.compute_score_batch([], [], [], None, url=url) == []
    with pytest.raises(ValueError, match="on_refused"):
        verl.compute_score_sync("s", GOOD, "x", None, url=url, on_refused="zero")


# -- OpenRLHF ------------------------------------------------------------------------------------------------
PROMPT = "<|im_start|>user\nWhich disease?<|im_end|>\n<|im_start|>assistant\n"


def test_openrlhf_reward_func_matches_get_reward(url):
    query = PROMPT + GOOD + "<|im_end|>"
    out = openrlhf.reward_func([query], [PROMPT], ["<X_RAY>Pneumonia"], url=url)
    r = httpx.post(f"{url}/get_reward", json={"query": [query], "prompts": [PROMPT], "labels": ["<X_RAY>Pneumonia"]})
    assert r.status_code == 200
    assert out == r.json()
    assert out["rewards"] == out["scores"] == [pytest.approx(1.0)]
    assert set(out["extra_logs"]) == set(SCORE_KEYS[1:])


def test_openrlhf_untagged_label_logs_numbers_only(url):
    query = PROMPT + "<thinking>t</thinking><answer>Liver</answer>"
    body = httpx.post(f"{url}/get_reward", json={"query": [query], "prompts": [PROMPT], "labels": ["Liver"]}).json()
    assert body["extra_logs"]["modality"] == [0.0]
    assert openrlhf.reward_func([query], [PROMPT], ["Liver"], url=url) == body


def test_openrlhf_errors_name_the_query(url, nobody):
    r = httpx.post(f"{url}/get_reward", json={"query": ["just some text"], "prompts": [PROMPT], "labels": ["x"]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "query[0]"
    with pytest.raises(openrlhf.ResponseNotFound, match=r"queries\[0\]"):
        openrlhf.reward_func(["just some text"], [PROMPT], ["x"], url=url)
    r = httpx.post(f"{url}/get_reward", json={"query": [PROMPT + REFUSED], "prompts": [PROMPT],
                                              "labels": ["<X_RAY>Pneumonia"]})
    assert r.status_code == 422 and r.json()["error"]["param"] == "query[0]"
    with pytest.raises(ItemFailed):
        openrlhf.reward_func([PROMPT + REFUSED], [PROMPT], ["<X_RAY>Pneumonia"], url=url)
    with pytest.raises(MedixUnavailable):
        openrlhf.reward_func([PROMPT + GOOD], [PROMPT], ["x"], url=nobody, retries=0)


def test_openrlhf_empty_lists_get_empty_lists_without_a_request(nobody):
    assert openrlhf.reward_func([], [], [], url=nobody, retries=0) == {
        "rewards": [], "scores": [], "extra_logs": {name: [] for name in SCORE_KEYS[1:]}}
    assert set(openrlhf.reward_func([], None, [], url=nobody, on_refused="skip")["extra_logs"]) == {
        *SCORE_KEYS[1:], REFUSED_KEY}


def test_openrlhf_refused_item_skipped_when_asked_file_and_url_alike(url):
    queries, prompts, labels = [PROMPT + GOOD, PROMPT + REFUSED], [PROMPT] * 2, ["<X_RAY>Pneumonia"] * 2
    out = openrlhf.reward_func(queries, prompts, labels, url=url, on_refused="skip", refused_reward=0.5)
    assert out["rewards"] == out["scores"] == [pytest.approx(1.0), 0.5]
    assert out["extra_logs"][REFUSED_KEY] == [0.0, 1.0]
    r = httpx.post(f"{url}/get_reward?on_refused=skip&refused_reward=0.5",
                   json={"query": queries, "prompts": prompts, "labels": labels})
    assert r.status_code == 200 and r.json() == out


def test_openrlhf_reward_func_sends_the_key(monkeypatch):
    seen = []

    def handler(request):
        seen.append(request.headers.get("authorization"))
        return httpx.Response(401, json={"error": {"type": "unauthorized", "message": "bad key"}})

    monkeypatch.setenv("MEDIX_API_KEY", "k-123")
    transport = httpx.MockTransport(handler)
    client = MedixClient("http://medix")
    client._http = httpx.Client(base_url="http://medix", headers=client.headers, transport=transport)
    monkeypatch.setattr(openrlhf, "shared_client", lambda **kw: client)
    with pytest.raises(MedixError) as e:
        openrlhf.reward_func([PROMPT + GOOD], [PROMPT], ["x"])
    assert e.value.status == 401 and seen == ["Bearer k-123"]


# -- shared pieces -------------------------------------------------------------------------------------------
def test_trainer_timeouts_are_the_adapters_defaults_and_stay_settable(monkeypatch):
    for name in ("MEDIX_TIMEOUT", "MEDIX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    c = shared_client("http://medix-a")
    assert (c.timeout, c.retries) == (TRAINER_TIMEOUT, TRAINER_RETRIES) == (180.0, 3)
    assert c._http.timeout.read == 180.0
    with MedixClient("http://medix-a") as plain:
        assert (plain.timeout, plain.retries) == (600.0, 5)  # the plain client keeps its defaults
    assert shared_client("http://medix-a", timeout=30, retries=1).retries == 1
    monkeypatch.setenv("MEDIX_TIMEOUT", "45")
    monkeypatch.setenv("MEDIX_RETRIES", "0")
    c = shared_client("http://medix-a")
    assert (c.timeout, c.retries) == (45.0, 0)
    assert shared_client("http://medix-a", timeout=60).timeout == 60.0  # a value in code wins
    with MedixClient("http://medix-a") as plain:
        assert (plain.timeout, plain.retries) == (45.0, 0)

    async def in_loop():
        return shared_async_client("http://medix-a")

    a = asyncio.run(in_loop())
    assert (a.timeout, a.retries) == (45.0, 0)
    assert MedixReward("http://medix-a")._options()["timeout"] is None  # resolved when the client is built


def test_numeric_scores_refuse_an_unscored_result():
    from clients.client import RewardScore

    failed = RewardScore(id="0", overall=None, format=1.0, accuracy_llm=None, accuracy_embed=None, modality=None,
                         error={"type": "input_rejected", "message": "too long"})
    with pytest.raises(ItemFailed, match="too long"):
        checked([failed])
    with pytest.raises(ValueError):
        numeric_scores(failed)


def test_client_splits_batches_over_the_server_limit(url):
    items = [{"id": str(i), "response": GOOD, "ground_truth": "<X_RAY>Pneumonia"} for i in range(12)]
    with MedixClient(url, max_items=5) as c:
        assert [r.id for r in c.reward(items)] == [str(i) for i in range(12)]
    with MedixClient(url, max_items=50) as c, pytest.raises(MedixError) as e:
        c.reward(items)  # the server's limit is 5: a clear error, not a retry loop
    assert e.value.status == 422 and e.value.param == "items"

    async def go():
        async with AsyncMedixClient(url, max_items=4) as c:
            return await c.reward(items)

    assert len(asyncio.run(go())) == 12


def test_client_retries_503_honouring_retry_after_then_raises(down_url):
    with MedixClient(down_url, retries=2) as c:
        start = time.monotonic()
        with pytest.raises(MedixUnavailable) as e:
            c.reward([{"response": GOOD, "ground_truth": "<X_RAY>Edema"}])
    assert e.value.status == 503 and e.value.param == "judge"
    assert time.monotonic() - start >= 2.0  # two waits of Retry-After: 1


class GatheringJudge(FakeJudge):
    """Answers only once `at_once` calls are in flight together (or fails after 20 s): it shows how many
    requests reached the service at the same time."""

    def __init__(self, at_once: int) -> None:
        super().__init__()
        self.at_once, self.waiting = at_once, 0
        self.gathered: asyncio.Event | None = None

    async def complete(self, messages, **kw):
        self.gathered = self.gathered or asyncio.Event()
        self.waiting += 1
        if self.waiting >= self.at_once:
            self.gathered.set()
        await asyncio.wait_for(self.gathered.wait(), 20)
        return await super().complete(messages, **kw)


def test_async_client_sends_hundreds_of_requests_at_once_and_reports_each_reply(down_url, fake_app, served):
    # 120 one-item requests must be in the service together: more than httpx's default pool of 100 lets out.
    app = fake_app(GatheringJudge(at_once=120), verdict_prefix_warm_s=0)  # no call held back
    items = [{"response": f"<X_RAY><thinking>t</thinking><answer>pneumonia {i}</answer>",
              "ground_truth": "<X_RAY>Pneumonia"} for i in range(120)]
    statuses: list[int] = []

    async def seen(response):
        statuses.append(response.status_code)

    async def go(base, todo, **kw):
        async with AsyncMedixClient(base, on_response=seen, **kw) as c:
            return await asyncio.gather(*(c.reward([item]) for item in todo), return_exceptions=True)

    with served(app) as base:
        scored = asyncio.run(go(base, items))
    assert all(not isinstance(r, BaseException) and r[0].overall is not None for r in scored), scored[:3]
    assert statuses == [200] * 120
    statuses.clear()
    failed = asyncio.run(go(down_url, items[:50], retries=1))
    assert all(isinstance(r, MedixUnavailable) for r in failed)
    assert statuses == [503] * 100  # the retried replies are reported too
