import asyncio
import itertools

import pytest

from service.backends.base import RetryPolicy, TransientBackendError
from service.reward import rules
from service.reward.prompt import DEFAULT_PROMPT
from service.reward.scorer import RewardScorer
from service.reward.wire import RewardRequest
from service.runtime.cache import Cache, MemoryStore
from service.runtime.exceptions import BackendUnavailable, InvalidRequest
from service.runtime.metrics import Metrics
from service.runtime.scheduling import FairSlots, PrefixWarmup
from service.settings import Settings
from tests.unit.fakes import FakeEmbedder, FakeJudge

FAST = RetryPolicy(retries=1, backoff_s=0.0, timeout_s=2.0)


def make_scorer(judge=None, embedder=None, store=None):
    metrics = Metrics()
    return RewardScorer(
        judge=judge or FakeJudge(), embedder=embedder or FakeEmbedder(),
        cache=Cache(store or MemoryStore(1000), namespace="t", ttl_s=60, metrics=metrics),
        metrics=metrics, prompt=DEFAULT_PROMPT, judge_policy=FAST, embed_policy=FAST,
        judge_concurrency=4, verdict_max_tokens=4, verdict_top_logprobs=5, retry_after_s=3,
        max_answer_chars=Settings().verdict_max_answer_chars,
    )


def req(*items, profile=None):
    return RewardRequest.model_validate({"items": list(items), "profile": profile})


def item(answer, gt="<X_RAY>Pneumonia", prefix="<X_RAY>", id=None):
    d = {"response": f"{prefix}<thinking>look</thinking><answer>{answer}</answer>", "ground_truth": gt}
    if id:
        d["id"] = id
    return d


async def test_exact_and_invalid_answers_skip_the_backends():
    judge, emb = FakeJudge(), FakeEmbedder()
    out = await make_scorer(judge, emb).score(req(item("Pneumonia"), item("A"), item("is it?")))
    assert [r.details.decided_by for r in out.results] == ["exact", "invalid", "invalid"]
    assert [r.accuracy_llm for r in out.results] == [1.0, 0.0, 0.0]
    assert out.results[0].overall == pytest.approx(1.0)
    assert judge.calls == [] and emb.calls == []


async def test_results_in_request_order_with_ids_defaulting_to_index():
    out = await make_scorer().score(req(item("lung infection"), item("Pneumonia", id="x"), item("pneumonia")))
    assert [r.id for r in out.results] == ["0", "x", "2"]
    assert [r.details.answer for r in out.results] == ["lung infection", "Pneumonia", "pneumonia"]


async def test_each_distinct_pair_judged_once_and_each_text_embedded_once():
    judge, emb = FakeJudge(), FakeEmbedder()
    batch = [item("pneumonia")] * 5 + [item("edema")] * 3 + [item("Pneumonia")]
    out = await make_scorer(judge, emb).score(req(*batch))
    assert len(judge.calls) == 2
    assert sorted(emb.calls[0]) == ["Pneumonia", "edema", "pneumonia"]
    assert len(out.results) == 9


async def test_overall_matches_the_formula_of_the_returned_components():
    out = await make_scorer().score(req(
        item("pneumonia"), item("edema", prefix="<CT_SCAN>"), item("liver", gt={"answer": "Liver"}),
        {"response": "pneumonia", "ground_truth": "<X_RAY>Pneumonia"},
    ))
    for r in out.results:
        expected = rules.compose(format_=r.format, accuracy_llm=r.accuracy_llm, accuracy_embed=r.accuracy_embed,
                                 modality=r.modality, weights=out.profile.weights, content_weight=0.9,
                                 format_weight=0.1)
        assert r.overall == pytest.approx(expected)
    assert out.results[0].accuracy_llm == 1.0 and out.results[1].accuracy_llm == 0.0
    assert out.results[2].modality is None and out.results[3].format == 0.0


async def test_second_identical_batch_is_served_from_cache():
    judge, emb = FakeJudge(), FakeEmbedder()
    scorer = make_scorer(judge, emb)
    first = await scorer.score(req(item("pneumonia"), item("edema")))
    second = await scorer.score(req(item("pneumonia"), item("edema")))
    assert len(judge.calls) == 2 and len(emb.calls) == 1
    assert all(r.details.cache.judge and r.details.cache.embed for r in second.results)
    assert [r.overall for r in first.results] == [r.overall for r in second.results]


async def test_judge_outage_raises_and_never_scores():
    with pytest.raises(BackendUnavailable) as e:
        await make_scorer(judge=FakeJudge(fail=True)).score(req(item("pneumonia")))
    assert e.value.backend == "judge"


async def test_embedder_outage_raises_and_never_scores():
    with pytest.raises(BackendUnavailable) as e:
        await make_scorer(embedder=FakeEmbedder(fail=True)).score(req(item("pneumonia")))
    assert e.value.backend == "embed"


async def test_unknown_profile_names_the_field():
    with pytest.raises(InvalidRequest) as e:
        await make_scorer().score(req(item("x1"), profile="nope"))
    assert e.value.param == "profile"


async def test_soft_profile_uses_probability_and_cosine():
    out = await make_scorer().score(req(item("pneumonia"), profile="medix-r1-soft"))
    r = out.results[0]
    assert r.accuracy_llm == pytest.approx(r.details.judge_p_yes)
    assert r.accuracy_embed == pytest.approx(max(0.0, min(1.0, r.details.similarity)))
    assert 0.5 < r.accuracy_llm < 1.0


async def test_a_changed_prompt_text_under_the_same_version_misses_the_cache():
    store, judge = MemoryStore(1000), FakeJudge()
    await make_scorer(judge, store=store).score(req(item("edema")))
    edited = DEFAULT_PROMPT.model_copy(update={"system": DEFAULT_PROMPT.system + " Be strict."})
    assert edited.version == DEFAULT_PROMPT.version and edited.fingerprint != DEFAULT_PROMPT.fingerprint
    scorer = make_scorer(judge, store=store)
    scorer.prompt = edited
    out = await scorer.score(req(item("edema")))
    assert out.results[0].details.cache.judge is False and len(judge.calls) == 2


async def test_nothing_is_cached_under_an_unresolved_model_id():
    class Unresolved(FakeJudge):
        model_id = "unresolved"

    store, judge = MemoryStore(1000), Unresolved()
    for _ in range(2):
        out = await make_scorer(judge, store=store).score(req(item("edema")))
        assert out.results[0].details.cache.judge is False
    assert len(judge.calls) == 2 and not any(":judge:" in k for k in store._data)


async def test_no_vector_is_cached_under_an_unresolved_embedding_model():
    """An OpenAI-compatible embedder learns its model id from its first reply: until then, two models sharing a
    cache must not exchange vectors."""
    class Unresolved(FakeEmbedder):
        model_id = "unresolved"

    store, embedder = MemoryStore(1000), Unresolved()
    for _ in range(2):
        out = await make_scorer(embedder=embedder, store=store).score(req(item("edema")))
        assert out.results[0].details.cache.embed is False
    assert len(embedder.calls) == 2 and not any(":embed:" in k for k in store._data)


async def test_a_batch_of_long_texts_leaves_the_event_loop_free():
    import asyncio
    import time

    beats: list[float] = []

    async def heartbeat():
        while True:
            beats.append(time.perf_counter())
            await asyncio.sleep(0.005)

    long = " \n" * 10_000
    # Exact answers: only the rules run (no backend call), ~0.6 s of them if they ran inline.
    request = req(*[item(long + "Pneumonia" + long, id=str(i)) for i in range(1024)])
    hb = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.02)
    await make_scorer().score(request)
    hb.cancel()
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert max(gaps) < 0.25, f"the event loop stalled {max(gaps):.3f} s"


async def test_a_pair_in_flight_is_shared_within_a_tenant_but_not_across_tenants():
    import asyncio

    class SlowJudge(FakeJudge):
        async def complete(self, messages, **kw):
            await asyncio.sleep(0.05)
            return await super().complete(messages, **kw)

    judge = SlowJudge()
    scorer = make_scorer(judge=judge)
    batch = req(item("lung infection"))
    # Two requests of one tenant at once: one judge call. Another tenant's identical request, at the same time,
    # makes its own call rather than wait in the first tenant's queue of judge slots.
    await asyncio.gather(scorer.score(batch, tenant="a"), scorer.score(batch, tenant="a"))
    assert len(judge.calls) == 1
    scorer.cache.store.clear()
    await asyncio.gather(scorer.score(batch, tenant="a"), scorer.score(batch, tenant="b"))
    assert len(judge.calls) == 3


async def test_a_failing_call_keeps_the_batchs_finished_work_for_the_retry():
    # Before: 200 items with one judge call that always fails gave a 503 with nothing cached, so every retry of
    # the batch (client, balancer) judged all 200 again.
    class OneBadPair(FakeJudge):
        async def complete(self, messages, **kw):
            if "answer 7\n" in messages[-1]["content"] + "\n":
                self.calls.append(messages)
                raise TransientBackendError("this pair always fails")
            return await super().complete(messages, **kw)

    judge = OneBadPair()
    scorer = make_scorer(judge=judge)
    batch = req(*(item(f"answer {i}") for i in range(200)))
    with pytest.raises(BackendUnavailable):
        await scorer.score(batch)
    first = len(judge.calls)
    assert first >= 200  # every good pair was judged although one failed
    with pytest.raises(BackendUnavailable):
        await scorer.score(batch)
    assert len(judge.calls) - first == FAST.retries + 1  # the retry judged only the failing pair


async def test_a_tenant_does_not_wait_on_another_tenants_backlog_for_its_first_call():
    # Before: judge concurrency 2, 0.2 s a call; tenant a's 40 calls queued, then a's /reward pilot queued behind
    # them, and tenant b's one-item request waited on a's pilot: 4.34 s instead of 0.21 s.
    class SlowJudge(FakeJudge):
        async def complete(self, messages, **kw):
            await asyncio.sleep(0.2)
            return await super().complete(messages, **kw)

    metrics = Metrics()
    scorer = RewardScorer(
        judge=SlowJudge(), embedder=FakeEmbedder(),
        cache=Cache(MemoryStore(1000), namespace="t", ttl_s=60, metrics=metrics), metrics=metrics,
        prompt=DEFAULT_PROMPT, judge_policy=RetryPolicy(0, 0.0, 5.0), embed_policy=FAST, judge_concurrency=2,
        verdict_max_tokens=4, verdict_top_logprobs=5, retry_after_s=3,
        max_answer_chars=Settings().verdict_max_answer_chars, judge_slots=FairSlots(2),
        warmup=PrefixWarmup(60, max_wait_s=5.0))
    backlog = asyncio.create_task(scorer.score(req(*(item(f"a{i}") for i in range(40))), tenant="a"))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(scorer.score(req(item("a-late")), tenant="a"))
    await asyncio.sleep(0.05)
    start = asyncio.get_running_loop().time()
    await scorer.score(req(item("b-only")), tenant="b")
    assert asyncio.get_running_loop().time() - start < 1.0
    backlog.cancel()
    second.cancel()
    await asyncio.gather(backlog, second, return_exceptions=True)


async def test_a_tenant_is_told_cached_only_for_what_its_own_requests_stored():
    # Before: tenant b's reply said cache {judge: true} for a pair only tenant a had sent.
    judge = FakeJudge()
    scorer = make_scorer(judge=judge)
    batch = req(item("lung infection"))
    await scorer.score(batch, tenant="a")
    again_a = (await scorer.score(batch, tenant="a")).results[0]
    first_b = (await scorer.score(batch, tenant="b")).results[0]
    assert again_a.details.cache.judge is True and again_a.details.cache.embed is True
    assert first_b.details.cache.judge is False and first_b.details.cache.embed is False
    assert len(judge.calls) == 1  # b was still served from the shared cache


async def test_non_finite_judge_logprobs_never_reach_a_score_or_the_cache():
    # Before: logprobs of NaN gave p(YES) = NaN, cached for the TTL; under medix-r1-soft every later reply had
    # overall null with no error.
    class NaNJudge(FakeJudge):
        async def complete(self, messages, **kw):
            out = await super().complete(messages, **kw)
            return type(out)(out.text, {k: float("nan") for k in out.first_token_logprobs or {}})

    store = MemoryStore(1000)
    scorer = make_scorer(judge=NaNJudge(), store=store)
    for _ in range(2):
        try:
            out = await scorer.score(req(item("lung infection"), profile="medix-r1-soft"))
        except BackendUnavailable:
            continue
        r = out.results[0]
        assert r.overall is not None and r.error is None and 0.0 <= r.details.judge_p_yes <= 1.0
    for _, value in store._data.values():
        assert b"NaN" not in value and b"Infinity" not in value


async def test_a_corrupt_or_non_finite_cache_entry_is_recomputed_not_served():
    judge = FakeJudge()
    store = MemoryStore(1000)
    scorer = make_scorer(judge=judge, store=store)
    batch = req(item("lung infection"))
    await scorer.score(batch)
    verdict_keys = [k for k in store._data if ":judge:" in k]
    assert verdict_keys
    for k in verdict_keys:
        expires, value = store._data[k]
        store._data[k] = (expires, value.replace(value[value.index(b"{"):], b'{"v": "YES", "p": NaN}'))
    out = (await scorer.score(req(item("lung infection"), profile="medix-r1-soft"))).results[0]
    assert len(judge.calls) == 2 and 0.0 <= out.accuracy_llm <= 1.0 and out.details.cache.judge is False


async def test_an_embedder_returning_non_finite_vectors_is_an_outage_not_a_score():
    class NaNEmbedder(FakeEmbedder):
        async def embed(self, texts, tenant=""):
            vecs = await super().embed(texts, tenant)
            vecs[0, 0] = float("nan")
            return vecs

    with pytest.raises(BackendUnavailable):
        await make_scorer(embedder=NaNEmbedder()).score(req(item("lung infection")))
