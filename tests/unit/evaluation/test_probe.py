"""/judge's bias probe: the item asked again with prediction and reference swapped, after its verdict, through
the same cache and judge slots; whether the verdict flipped is reported, and the probe never becomes the score."""

import pytest
from pydantic import ValidationError

from service.backends.base import RetryPolicy
from service.evaluation import prompts
from service.evaluation.evaluator import flipped
from service.evaluation.wire import JudgeRequest
from service.runtime.exceptions import BackendUnavailable
from service.runtime.scheduling import FairSlots
from tests.unit.evaluation.test_evaluator import it, make, req
from tests.unit.fakes import FakeJudge


def probe_req(*items, rounds=1, explain=False, probe="swap"):
    return JudgeRequest.model_validate({"items": list(items), "rounds": rounds, "explain": explain, "probe": probe})


def test_the_probe_is_opt_in_and_only_swap_is_known():
    assert JudgeRequest.model_validate({"items": [it("a", "liver")]}).probe is None
    with pytest.raises(ValidationError):
        probe_req(it("a", "liver"), probe="reverse")


async def test_without_a_probe_the_result_is_unchanged():
    out = await make().evaluate(req(it("a", "liver"), rounds=1))
    dumped = out.results[0].model_dump()
    assert "probe" not in dumped and "probe" not in out.results[0].model_dump_json()


async def test_swap_asks_with_the_texts_exchanged_after_the_verdict_and_reports_a_flip():
    judge = FakeJudge()  # scores 1 when the reference's text is inside the prediction's
    out = await make(judge).evaluate(probe_req(it("a", "The liver"), it("b", "liver"), explain=True))
    a, b = out.results
    # "liver" is in "the liver", but "the liver" is not in "liver": the swapped verdict moves.
    assert a.score == 1.0 and a.probe.kind == "swap" and a.probe.score == 0.0 and a.probe.flipped is True
    assert b.score == 1.0 and b.probe.score == 1.0 and b.probe.flipped is False
    assert a.probe.replies and a.probe.votes == [0]
    # The main verdicts first, then the probes; the probe's prompt has the two texts in each other's place.
    firsts = [c[1]["content"] for c in judge.calls]
    assert "Reference answer:\nLiver\n\nPrediction:\nThe liver" in firsts[0]
    assert "Reference answer:\nThe liver\n\nPrediction:\nLiver" in firsts[2]
    assert out.summary.tasks["medqa"].score == 1.0  # the probe never enters a score


async def test_the_probe_shares_the_cache_with_the_same_question_asked_the_other_way():
    judge = FakeJudge()
    ev = make(judge)
    await ev.evaluate(probe_req(it("a", "The liver")))
    calls = len(judge.calls)
    # The swapped question of "a" is this item's own question: served from the cache, nothing asked.
    out = await ev.evaluate(req(it("c", "Liver", ref="The liver"), rounds=1))
    assert len(judge.calls) == calls and out.results[0].cached and out.results[0].score == 0.0
    again = await ev.evaluate(probe_req(it("a", "The liver")))
    assert len(judge.calls) == calls and again.results[0].probe.cached


async def test_a_failed_item_is_not_probed():
    judge = FakeJudge()
    out = await make(judge).evaluate(probe_req(it("a", "garbage"), it("b", "liver")))
    bad, ok = out.results
    assert bad.score is None and bad.error.type == "unparseable_reply" and bad.probe is None
    assert ok.probe is not None and ok.probe.flipped is False


async def test_a_probe_that_does_not_parse_fails_on_the_item_only():
    class SwapBreaks(FakeJudge):
        def grade(self, messages, json_schema):
            if "Reference answer:\nthe liver" in messages[1]["content"]:
                return "not json"
            return super().grade(messages, json_schema)

    out = await make(SwapBreaks()).evaluate(probe_req(it("a", "the liver"), it("b", "liver")))
    a, b = out.results
    assert a.score == 1.0 and a.error is None  # the verdict stands
    assert a.probe.score is None and a.probe.flipped is None and a.probe.votes == []
    assert a.probe.error.type == "unparseable_reply" and a.probe.error.param == "items[0].probe"
    assert b.probe.error is None and b.probe.flipped is False


async def test_a_judge_outage_during_the_probes_keeps_the_verdicts_and_fails_the_probes():
    class DownAfter(FakeJudge):
        async def complete(self, messages, **kw):
            if len(self.calls) >= 1:
                self.fail = True
            return await super().complete(messages, **kw)

    ev = make(DownAfter(), policy=RetryPolicy(0, 0, 5), slots=FairSlots(1))
    out = await ev.evaluate(probe_req(it("a", "liver")))
    r = out.results[0]
    assert r.score == 1.0 and r.probe.score is None and r.probe.error.type == "backend_unavailable"
    assert r.probe.error.param == "items[0].probe"
    with pytest.raises(BackendUnavailable):  # the main verdict's outage is still the request's
        await make(FakeJudge(fail=True)).evaluate(probe_req(it("a", "liver")))


def test_flipped_binary_is_a_changed_verdict_and_report_a_move_of_one_point():
    assert flipped("binary", (1.0, 1.0), (0.0, 0.0)) and not flipped("binary", (1.0, 1.0), (1.0, 1.0))
    assert flipped("report", (0.8, 4.0), (0.6, 3.0)) and not flipped("report", (0.8, 4.0), (0.7, 3.5))


def test_probe_texts_swap():
    assert prompts.probe_texts("swap", "ref", "pred") == ("pred", "ref")
    with pytest.raises(ValueError):
        prompts.probe_texts("other", "ref", "pred")  # type: ignore[arg-type]
