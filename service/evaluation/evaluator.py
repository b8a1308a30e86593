"""Evaluating a /judge batch: strip reasoning -> dedup -> cache-then-compute (rounds concurrently) -> summary.

With a request's `probe`, each judged item is then asked again with its prompt changed (`swap`: prediction and
reference exchanged) through the same cache and the same fair judge slots; the probe's verdict is reported on the
item with whether it flipped, and never becomes its score."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from clients.evaluation import summarise
from service.backends.base import JudgeBackend, RetryPolicy, call_backend
from service.backends.breaker import CircuitBreaker
from service.evaluation import prompts, rubric
from service.evaluation.prompts import Probe, Rubric
from service.evaluation.wire import JudgeItem, JudgeRequest, JudgeResponse, JudgeResult, JudgeSummary, ProbeResult
from service.runtime import tracing
from service.runtime.cache import Cache
from service.runtime.exceptions import BackendUnavailable, InputRejected
from service.runtime.memo import Memo
from service.runtime.metrics import Metrics
from service.runtime.scheduling import ANONYMOUS, FairSlots
from service.runtime.wire import ErrorDetail


@dataclass(frozen=True, slots=True)
class ItemFailed:
    """This item could not be judged (its failure is reported with it; the batch goes on). Not cached."""

    type: str
    message: str


@dataclass(frozen=True, slots=True)
class Case:
    """What is judged: the item with reasoning stripped and its rubric settled."""

    rubric: Rubric
    question: str
    reference: str
    prediction: str


@dataclass(frozen=True, slots=True)
class Judged:
    votes: list[int]
    replies: list[str]

    def encode(self) -> bytes:
        return json.dumps({"votes": self.votes, "replies": self.replies}).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Judged:
        d = json.loads(raw)
        return cls(list(d["votes"]), list(d["replies"]))


# A report probe "flips" when its mean moves by this much on the 0-5 scale (one scale step).
REPORT_FLIP_POINTS = 1.0


def flipped(rubric_: Rubric, main: tuple[float, float], probe: tuple[float, float]) -> bool:
    """Binary: the two verdicts differ. Report: the two means (0-5) differ by REPORT_FLIP_POINTS or more."""
    if rubric_ == "binary":
        return main[0] != probe[0]
    return abs(main[1] - probe[1]) >= REPORT_FLIP_POINTS - 1e-9


class Evaluator:
    def __init__(self, *, judge: JudgeBackend, cache: Cache, metrics: Metrics, policy: RetryPolicy,
                 judge_slots: FairSlots, retry_after_s: int, task_rubrics: dict[str, Rubric],
                 max_tokens: int, parse_retries: int, max_chars: int,
                 breaker: CircuitBreaker | None = None) -> None:
        self.judge = judge
        self.cache = cache
        self.metrics = metrics
        self._policy = policy
        self._slots = judge_slots
        self._retry_after = retry_after_s
        self._task_rubrics = task_rubrics
        self._max_tokens = max_tokens
        self._parse_retries = parse_retries
        self._max_chars = max_chars
        self._memo: Memo[Judged | ItemFailed] = Memo("judge", Judged.encode, Judged.decode,
                                                      keep=lambda v: isinstance(v, Judged))
        self._breaker = breaker

    def case(self, item: JudgeItem) -> Case:
        chosen: Rubric = item.rubric or self._task_rubrics.get(item.task, "binary")
        m = self._max_chars
        return Case(chosen, item.question[:m], item.reference[:m], rubric.strip_reasoning(item.prediction)[:m])

    @staticmethod
    def probe_case(case: Case, probe: Probe) -> Case:
        """What the probe judges: the case with the probe's texts in place (its key is that case's key)."""
        reference, prediction = prompts.probe_texts(probe, case.reference, case.prediction)
        return replace(case, reference=reference, prediction=prediction)

    def key(self, case: Case, rounds: int) -> str:
        return self.cache.key("eval", self.judge.model_id, prompts.fingerprint(case.rubric), case.rubric, str(rounds),
                              case.question, case.reference, case.prediction)

    async def evaluate(self, request: JudgeRequest, tenant: str = ANONYMOUS) -> JudgeResponse:
        self.metrics.items.labels("/judge").inc(len(request.items))
        cases = [self.case(it) for it in request.items]
        keys = [self.key(c, request.rounds) for c in cases]
        distinct = dict(zip(keys, cases, strict=True))

        done = await self._memo.resolve(self.cache, distinct, lambda c: self._judge_case(c, request.rounds, tenant),
                                        model_id=self.judge.model_id, tenant=tenant)

        judged = [i for i, k in enumerate(keys) if isinstance(done.values[k], Judged)]
        probes = await self._probes(request, cases, judged, tenant) if request.probe else {}

        results = []
        for i, (item, case, key) in enumerate(zip(request.items, cases, keys, strict=True)):
            out = done.values[key]
            if isinstance(out, ItemFailed):
                results.append(JudgeResult(id=item.id, task=item.task, rubric=case.rubric, score=None, votes=[],
                                           error=ErrorDetail(type=out.type, message=out.message,
                                                             param=f"items[{i}]")))
                continue
            score, raw = rubric.aggregate(out.votes, case.rubric)
            results.append(JudgeResult(
                id=item.id, task=item.task, rubric=case.rubric, score=score,
                raw_score=raw if case.rubric == "report" else None, votes=out.votes,
                replies=out.replies if request.explain else None, cached=key in done.hits,
                probe=self._probe_result(request, case, (score, raw), probes[i], i) if i in probes else None))
        summary = summarise((r.model_dump() for r in results), intervals=False)  # TaskSummary has no CI fields
        return JudgeResponse(results=results, summary=JudgeSummary.model_validate(summary),
                             judge_model=self.judge.model_id, prompt_version=prompts.PROMPT_VERSION)

    async def _probes(self, request: JudgeRequest, cases: list[Case], judged: list[int],
                      tenant: str) -> dict[int, tuple[Judged | ItemFailed, bool]]:
        """The probe of each judged item (index -> its outcome and whether it came from this tenant's cache),
        asked after every main verdict is in, through the same memo, cache and fair slots. A judge outage during
        the probes fails the probes only (reported on each item): the verdicts already judged stand."""
        assert request.probe is not None
        probe_cases = {i: self.probe_case(cases[i], request.probe) for i in judged}
        probe_keys = {i: self.key(c, request.rounds) for i, c in probe_cases.items()}
        try:
            done = await self._memo.resolve(self.cache, {probe_keys[i]: probe_cases[i] for i in probe_cases},
                                            lambda c: self._judge_case(c, request.rounds, tenant),
                                            model_id=self.judge.model_id, tenant=tenant)
        except BackendUnavailable as exc:
            failed = ItemFailed("backend_unavailable", f"probe: {exc.message}")
            return {i: (failed, False) for i in probe_cases}
        return {i: (done.values[k], k in done.hits) for i, k in probe_keys.items()}

    @staticmethod
    def _probe_result(request: JudgeRequest, case: Case, main: tuple[float, float],
                      probe: tuple[Judged | ItemFailed, bool], index: int) -> ProbeResult:
        out, cached = probe
        kind = str(request.probe)
        if isinstance(out, ItemFailed):
            return ProbeResult(kind=kind, score=None, votes=[], flipped=None,
                               error=ErrorDetail(type=out.type, message=out.message, param=f"items[{index}].probe"))
        score, raw = rubric.aggregate(out.votes, case.rubric)
        return ProbeResult(kind=kind, score=score, raw_score=raw if case.rubric == "report" else None,
                           votes=out.votes, replies=out.replies if request.explain else None,
                           flipped=flipped(case.rubric, main, (score, raw)), cached=cached)

    async def _judge_case(self, case: Case, rounds: int, tenant: str) -> Judged | ItemFailed:
        """All rounds of one conversation; a reply that never parses fails this item only."""
        messages = prompts.first_messages(case.rubric, case.question, case.reference, case.prediction)
        schema = prompts.schema(case.rubric)
        votes: list[int] = []
        replies: list[str] = []
        for r in range(rounds):
            text, score = "", None
            for attempt in range(self._parse_retries + 1):
                budget = self._max_tokens * (2 ** attempt)

                async def ask(msgs: list[dict[str, str]] = messages, budget: int = budget) -> str:
                    return (await self.judge.complete(msgs, max_tokens=budget, json_schema=schema)).text

                # The slot is taken before the breaker check and outside the retry timeout, as /reward does:
                # waiting behind a big batch is not a backend timeout, and a half-open probe holds its slot.
                try:
                    async with self._slots.slot(tenant):
                        with tracing.span("judge_call"):
                            text = await call_backend("judge", ask, self._policy, self.metrics, self._retry_after,
                                                      self._breaker)
                except InputRejected as exc:
                    return ItemFailed("input_rejected", f"round {r + 1}: judge: {exc.message}")
                score = rubric.parse_score(text, case.rubric)
                if score is not None:
                    break
            if score is None:
                return ItemFailed("unparseable_reply",
                                  f"round {r + 1}: the judge's reply did not parse after retries: {text[:120]!r}")
            votes.append(score)
            replies.append(text)
            messages = [*messages, {"role": "assistant", "content": text},
                        {"role": "user", "content": prompts.RECHECK}]
        return Judged(votes, replies)
