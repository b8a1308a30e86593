"""Scoring a /reward batch: rules -> dedup -> verdicts and embeddings at once, each cache-then-compute -> results."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from clients.contract import SCORE_KEYS
from service.backends.base import (
    Embedder,
    JudgeBackend,
    PermanentBackendError,
    RetryPolicy,
    call_backend,
)
from service.backends.breaker import CircuitBreaker
from service.reward import rules
from service.reward.profiles import PROFILES, Profile
from service.reward.prompt import CHOICES, VerdictPrompt, p_yes, read_verdict
from service.reward.wire import (
    CacheFlags,
    ProfileInfo,
    RewardDetails,
    RewardItem,
    RewardRequest,
    RewardResponse,
    RewardResult,
)
from service.runtime import tracing
from service.runtime.cache import Cache
from service.runtime.concurrency import gather_all, off_loop
from service.runtime.exceptions import InputRejected, InvalidRequest
from service.runtime.memo import Memo, look_up
from service.runtime.metrics import Metrics
from service.runtime.phases import PhaseTimer
from service.runtime.scheduling import ANONYMOUS, CALL_AFFINITY, FairSlots, PrefixWarmup
from service.runtime.wire import ErrorDetail


@dataclass(slots=True)
class Prepared:
    """An item after the pure rules: what is settled, and what still needs a backend."""

    id: str
    answer: str
    reference: str
    question: str | None
    format: float
    modality: float | None
    decided_by: Literal["exact", "invalid", "backends"]


@dataclass(slots=True)
class Plan:
    prepared: list[Prepared]
    keys: dict[int, tuple[str, str, str]]
    pairs: dict[str, Prepared]
    texts: dict[str, str]


@dataclass(frozen=True, slots=True)
class Rejected:
    """The judge refused this input; not cached (a bigger context or a shorter prompt may take it)."""

    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verdict and its p(YES), always a probability: one that is not (NaN, infinite, out of [0, 1]) is never made,
    so never cached or returned."""

    verdict: str
    p_yes: float

    def __post_init__(self) -> None:
        if self.verdict not in CHOICES or not 0.0 <= self.p_yes <= 1.0:  # NaN fails the comparison too
            raise ValueError(f"not a verdict: {self.verdict!r} with p(YES) = {self.p_yes!r}")

    def encode(self) -> bytes:
        return json.dumps({"v": self.verdict, "p": self.p_yes}, allow_nan=False).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Verdict:
        d = json.loads(raw)
        return cls(d["v"], float(d["p"]))


def prepare(index: int, item: RewardItem, profile: Profile) -> Prepared:
    """Rules 1-6 and 9 under the profile's rule set (rules.settle): everything that needs no backend."""
    settled = rules.settle(item.response, item.parsed_ground_truth(), profile)
    return Prepared(
        id=item.id if item.id is not None else str(index),
        answer=settled.answer,
        reference=settled.reference,
        question=item.question,
        format=settled.format,
        modality=settled.modality,
        decided_by=settled.decided_by,
    )


# Above this many characters of responses, the rules and key hashing of a batch run in a worker thread, so
# that /healthz and other tenants' requests keep being served meanwhile.
OFF_LOOP_CHARS = 200_000


class RewardScorer:
    def __init__(self, *, judge: JudgeBackend, embedder: Embedder, cache: Cache, metrics: Metrics,
                 prompt: VerdictPrompt, judge_policy: RetryPolicy, embed_policy: RetryPolicy,
                 judge_concurrency: int, verdict_max_tokens: int, verdict_top_logprobs: int,
                 retry_after_s: int, max_answer_chars: int,
                 profiles: dict[str, Profile] | None = None, default_profile: str = "medix-r1",
                 judge_slots: FairSlots | None = None, judge_breaker: CircuitBreaker | None = None,
                 embed_breaker: CircuitBreaker | None = None, warmup: PrefixWarmup | None = None) -> None:
        self.judge = judge
        self.embedder = embedder
        self.cache = cache
        self.metrics = metrics
        self.prompt = prompt
        self._judge_policy = judge_policy
        self._embed_policy = embed_policy
        # Shared with /judge so that the two routes together stay within the judge's concurrency.
        self._judge_slots = judge_slots or FairSlots(judge_concurrency)
        self._warmup = warmup or PrefixWarmup(0)
        self._verdicts: Memo[Verdict | Rejected] = Memo("judge", Verdict.encode, Verdict.decode,
                                                        keep=lambda v: isinstance(v, Verdict))
        self._vectors: Memo[np.ndarray] = Memo("embed", np.ndarray.tobytes,
                                               lambda raw: np.frombuffer(raw, dtype=np.float32))
        self._judge_breaker, self._embed_breaker = judge_breaker, embed_breaker
        self._max_tokens = verdict_max_tokens
        self._top_logprobs = verdict_top_logprobs
        self._retry_after = retry_after_s
        self._max_chars = max_answer_chars
        self.profiles = profiles or PROFILES
        self.default_profile = default_profile

    def profile(self, name: str | None) -> Profile:
        name = name or self.default_profile
        try:
            return self.profiles[name]
        except KeyError:
            raise InvalidRequest(f"unknown profile {name!r}; known: {', '.join(sorted(self.profiles))}",
                                 param="profile") from None

    def profile_info(self, profile: Profile) -> ProfileInfo:
        return ProfileInfo(name=profile.name, weights=profile.public(), judge_model=self.judge.model_id,
                           embed_model=self.embedder.model_id, prompt_version=self.prompt.version)

    # -- keys ---------------------------------------------------------------------------------
    def judge_key(self, p: Prepared) -> str:
        # What decides a verdict: the resolved model, the prompt's text (not only its version), the inputs.
        question = (p.question or "") if self.prompt.uses_question else ""
        return self.cache.key("judge", self.judge.model_id, self.prompt.fingerprint, p.answer, p.reference, question)

    def embed_key(self, text: str) -> str:
        return self.cache.key("embed", self.embedder.model_id, text)

    def _plan(self, request: RewardRequest, profile: Profile) -> Plan:
        """The pure rules for every item, and the keys of what still needs a backend (CPU work, no I/O)."""
        prepared = [prepare(i, item, profile) for i, item in enumerate(request.items)]
        # Keys once per item that needs the backends: (judge key, answer embed key, reference embed key).
        keys = {i: (self.judge_key(p), self.embed_key(p.answer), self.embed_key(p.reference))
                for i, p in enumerate(prepared) if p.decided_by == "backends"}
        pairs = {jk: prepared[i] for i, (jk, _, _) in keys.items()}
        texts = {k: t for i, (_, ak, rk) in keys.items() for k, t in ((ak, prepared[i].answer),
                                                                       (rk, prepared[i].reference))}
        return Plan(prepared, keys, pairs, texts)

    # -- the request path ---------------------------------------------------------------------
    async def score(self, request: RewardRequest, route: str = "/reward", tenant: str = ANONYMOUS) -> RewardResponse:
        timer = PhaseTimer(self.metrics)
        profile = self.profile(request.profile)
        size = sum(len(item.response) for item in request.items)
        # A model id not yet learned from the server is a placeholder: nothing is read or written under it.
        # Taken before the keys are built, so that keys and this decision see the same ids.
        judge_model, embed_model = self.judge.model_id, self.embedder.model_id
        with timer.phase("rules"):
            plan = await off_loop(lambda: self._plan(request, profile), heavy=size > OFF_LOOP_CHARS)
        prepared, keys, pairs, texts = plan.prepared, plan.keys, plan.pairs, plan.texts
        self.metrics.items.labels(route).inc(len(prepared))

        # The verdicts and the embeddings looked up together (one round trip, one phase), then both computed, each
        # to its end even when the other fails: what each finished is cached for the retry.
        found_verdicts, found_vectors = await look_up(
            self.cache, [(self._verdicts, pairs, judge_model), (self._vectors, texts, embed_model)], tenant, timer)
        judged, embedded = await gather_all(
            self._verdicts.resolve(self.cache, pairs, lambda p: self._judge_or_reject(p, tenant),
                                   model_id=judge_model, tenant=tenant, timer=timer, found=found_verdicts),
            self._vectors.resolve_batch(self.cache, texts, lambda missing: self._embed_all(missing, tenant),
                                        model_id=embed_model, tenant=tenant, timer=timer, found=found_vectors),
        )
        verdicts, vectors = judged.values, embedded.values

        with timer.phase("compose"):
            results = []
            for i, p in enumerate(prepared):
                if i not in keys:
                    results.append(self._compose(p, profile, None, None, CacheFlags()))
                    continue
                jk, ak, rk = keys[i]
                verdict = verdicts[jk]
                if isinstance(verdict, Rejected):
                    results.append(self._rejected(p, i, verdict))
                    continue
                results.append(self._compose(p, profile, verdict, float(np.dot(vectors[ak], vectors[rk])),
                                             CacheFlags(judge=jk in judged.hits,
                                                        embed=ak in embedded.hits and rk in embedded.hits)))
        timer.trace(route, tenant=tenant, items=len(prepared), pairs=len(pairs), judged=judged.computed,
                    texts=len(texts), embedded=embedded.computed)
        self._observe(results)
        return RewardResponse(results=results, profile=self.profile_info(profile))

    # -- backends -----------------------------------------------------------------------------
    async def _judge_one(self, p: Prepared) -> Verdict:
        messages = self.prompt.messages(p.answer, p.reference, p.question, self._max_chars)

        async def attempt() -> Verdict:
            # One decoding step where the backend learned the choices' first tokens, else the constrained call.
            for _ in range(2):  # an empty reply is asked once more; twice empty is this input's, not an outage
                out = await self.judge.verdict(messages, choices=CHOICES, max_tokens=self._max_tokens,
                                               top_logprobs=self._top_logprobs)
                verdict = read_verdict(out.text)
                if verdict is not None:
                    break
            else:
                raise InputRejected("it replied with an empty text twice, not YES or NO")
            # A sentence's first token is not the verdict's: its alternatives say nothing about YES against NO.
            bare = out.text.strip().upper() in CHOICES
            try:
                return Verdict(verdict, p_yes(out.first_token_logprobs if bare else None, verdict))
            except ValueError as exc:  # the judge's reply is at fault: its failure, counted by the breaker
                raise PermanentBackendError(f"judge reply unusable: {exc}") from exc

        return await call_backend("judge", attempt, self._judge_policy, self.metrics, self._retry_after,
                                  self._judge_breaker)

    async def _judge_or_reject(self, p: Prepared, tenant: str) -> Verdict | Rejected:
        """A verdict in the tenant's fair share of judge slots, or the judge's refusal of this one input (e.g.
        longer than its context): the item then fails alone, with an error, and the rest of the batch is scored.
        The slot is taken before the breaker check and outside the retry timeout (queueing is not a timeout)."""
        prefix = self.prompt.fingerprint
        async with self._warmup.gate(prefix, tenant), self._judge_slots.slot(tenant):
            start = time.perf_counter()
            # Calls of a GRPO group share the prompt up to the candidate: several replicas route them together.
            affinity = CALL_AFFINITY.set(self.prompt.shared_part(p.reference, p.question, self._max_chars))
            try:
                with tracing.span("judge_call"):
                    return await self._judge_one(p)
            except InputRejected as exc:
                return Rejected(exc.message)
            except Exception:
                self._warmup.forget(prefix)  # the engine may have restarted with an empty cache
                raise
            finally:
                CALL_AFFINITY.reset(affinity)
                self.metrics.phase_duration.labels("judge_call").observe(time.perf_counter() - start)

    async def _embed_all(self, texts: dict[str, str], tenant: str) -> dict[str, np.ndarray]:
        if not texts:
            return {}
        batch = list(texts.values())

        async def embed() -> np.ndarray:
            vecs = np.asarray(await self.embedder.embed(batch, tenant=tenant), dtype=np.float32)
            # Whatever the backend: one finite vector per text, or it is the embedder's failure, never a score.
            if vecs.ndim != 2 or len(vecs) != len(batch) or not np.isfinite(vecs).all():
                raise PermanentBackendError(f"embedder returned an unusable array of shape {vecs.shape} for "
                                            f"{len(batch)} texts (non-finite values or wrong shape)")
            return vecs

        vecs = await call_backend("embed", embed, self._embed_policy, self.metrics, self._retry_after,
                                  self._embed_breaker)
        return {k: np.ascontiguousarray(vecs[i]) for i, k in enumerate(texts)}

    # -- results ------------------------------------------------------------------------------
    @staticmethod
    def _compose(p: Prepared, profile: Profile, verdict: Verdict | None, similarity: float | None,
                 cache: CacheFlags) -> RewardResult:
        if p.decided_by == "exact":
            acc_llm = acc_embed = 1.0
        elif p.decided_by == "invalid":
            acc_llm = acc_embed = 0.0
        else:
            assert verdict is not None and similarity is not None
            acc_llm = verdict.p_yes if profile.judge_mode == "soft" else float(verdict.verdict == "YES")
            if profile.embed_mode == "soft":
                acc_embed = min(1.0, max(0.0, similarity))
            else:
                acc_embed = float(similarity >= profile.embed_threshold)
        overall = rules.compose(format_=p.format, accuracy_llm=acc_llm, accuracy_embed=acc_embed,
                                modality=p.modality, weights=profile.weights,
                                content_weight=profile.content_weight, format_weight=profile.format_weight)
        return RewardResult(
            id=p.id, overall=overall, format=p.format, accuracy_llm=acc_llm, accuracy_embed=acc_embed,
            modality=p.modality,
            details=RewardDetails(answer=p.answer, reference=p.reference, decided_by=p.decided_by,
                                  judge_p_yes=verdict.p_yes if verdict else None,
                                  judge_verdict=verdict.verdict if verdict else None,
                                  similarity=similarity, cache=cache),
        )

    @staticmethod
    def _rejected(p: Prepared, index: int, rejected: Rejected) -> RewardResult:
        return RewardResult(
            id=p.id, overall=None, format=p.format, accuracy_llm=None, accuracy_embed=None, modality=p.modality,
            details=RewardDetails(answer=p.answer, reference=p.reference, decided_by=p.decided_by),
            error=ErrorDetail(type="input_rejected", message=f"judge: {rejected.message}", param=f"items[{index}]"),
        )

    def _observe(self, results: list[RewardResult]) -> None:
        for name in SCORE_KEYS:
            values = [v for v in (getattr(r, name) for r in results) if v is not None]
            self.metrics.reward_component.observe_many(name, values)
