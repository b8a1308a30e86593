
import asyncio

import pytest

from service.backends.base import UNRESOLVED_MODEL, RetryPolicy
from service.evaluation import prompts
from service.evaluation.evaluator import Evaluator
from service.evaluation.wire import JudgeRequest
from service.runtime.cache import Cache, MemoryStore
from service.runtime.exceptions import BackendUnavailable
from service.runtime.metrics import Metrics
from service.runtime.scheduling import ANONYMOUS, FairSlots
from service.settings import Settings
from tests.unit.fakes import FakeJudge


def make(judge=None, rubrics=None, policy=None, slots=None):
    m, s = Metrics(), Settings()
    return Evaluator(judge=judge or FakeJudge(), cache=Cache(MemoryStore(100), namespace="t", ttl_s=60, metrics=m),
                     metrics=m, policy=policy or RetryPolicy(0, 0, 5), judge_slots=slots or FairSlots(4),
                     retry_after_s=2,
                     task_rubrics=rubrics or {}, max_tokens=s.eval_max_tokens,
                     parse_retries=s.eval_parse_retries, max_chars=s.eval_max_chars)


def req(*items, rounds=3, explain=False):
    return JudgeRequest.model_validate({"items": list(items), "rounds": rounds, "explain": explain})


def it(id, pred, task="medqa", ref="Liver", **kw):
    return {"id": id, "task": task, "question": "Which organ?", "reference": ref, "prediction": pred, **kw}


async def test_rounds_continue_one_conversation_and_vote():
    judge = FakeJudge()
    out = await make(judge).evaluate(req(it("a", "<think>kidney?</think>The liver"), explain=True))
    r = out.results[0]
    assert r.score == 1.0 and r.votes == [1, 1, 1] and len(r.replies) == 3
    assert [len(c) for c in judge.calls] == [2, 4, 6]  # each round adds the reply and a re-check
    assert "kidney" not in judge.calls[0][1]["content"]  # reasoning stripped


async def test_identical_items_are_judged_once_and_cached():
    judge = FakeJudge()
    ev = make(judge)
    first = await ev.evaluate(req(it("a", "liver"), it("b", "liver"), it("c", "spleen"), rounds=1))
    assert len(judge.calls) == 2 and [r.score for r in first.results] == [1.0, 1.0, 0.0]
    second = await ev.evaluate(req(it("d", "liver"), rounds=1))
    assert len(judge.calls) == 2 and second.results[0].cached
    await ev.evaluate(req(it("e", "liver"), rounds=3))  # rounds are part of the key
    assert len(judge.calls) == 5


async def test_report_rubric_from_task_map_gives_mean_over_five():
    out = await make(rubrics={"mimic": "report"}).evaluate(req(it("r", "The liver is normal", task="mimic")))
    r = out.results[0]
    assert r.rubric == "report" and r.raw_score == 5.0 and r.score == 1.0


async def test_unparseable_reply_fails_that_item_only_and_summary_counts_it():
    out = await make().evaluate(req(it("a", "garbage"), it("b", "liver"), it("c", "spleen", task="pubmedqa")))
    bad = out.results[0]
    assert bad.score is None and bad.error.type == "unparseable_reply" and bad.error.param == "items[0]"
    assert out.summary.tasks["medqa"].failed == 1 and out.summary.tasks["medqa"].score == 1.0
    assert out.summary.overall == pytest.approx(0.5) and out.summary.failed == 1


async def test_judge_outage_raises_for_the_whole_request():
    with pytest.raises(BackendUnavailable):
        await make(FakeJudge(fail=True)).evaluate(req(it("a", "liver")))


async def test_waiting_for_a_judge_slot_is_not_a_backend_timeout():
    """Review finding 5: the slot is taken outside the retry timeout. The tenant's one slot is busy for 0.3 s
    (e.g. behind a /reward batch) and the judge's timeout is 0.1 s: the item waits, then is judged."""
    slots = FairSlots(1)
    ev = make(policy=RetryPolicy(0, 0, 0.1), slots=slots)

    async def busy() -> None:
        async with slots.slot(ANONYMOUS):
            await asyncio.sleep(0.3)

    holder = asyncio.create_task(busy())
    await asyncio.sleep(0.01)
    out = await ev.evaluate(req(it("a", "liver"), rounds=1))
    await holder
    assert out.results[0].score == 1.0 and out.results[0].error is None


async def test_a_changed_prompt_text_under_the_same_version_misses_the_cache(monkeypatch):
    judge = FakeJudge()
    ev = make(judge)
    await ev.evaluate(req(it("a", "liver"), rounds=1))
    await ev.evaluate(req(it("b", "liver"), rounds=1))
    assert len(judge.calls) == 1  # the same item again: a cache hit
    monkeypatch.setitem(prompts.SYSTEM, "binary", prompts.SYSTEM["binary"] + " Be strict.")
    await ev.evaluate(req(it("c", "liver"), rounds=1))
    assert len(judge.calls) == 2  # same version, other wording: judged again


async def test_nothing_is_cached_under_an_unresolved_model_id():
    judge = FakeJudge()
    judge.model_id = UNRESOLVED_MODEL
    ev = make(judge)
    await ev.evaluate(req(it("a", "liver"), rounds=1))
    await ev.evaluate(req(it("b", "liver"), rounds=1))
    assert len(judge.calls) == 2
