"""Scoring a /reward batch: rules -> dedup -> one cache round trip -> judge and embedder at once -> results."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Literal

import numpy as np

from clients.contract import SCORE_KEYS
from service.backends.base import (
    Embedder,
    JudgeBackend,
    RetryPolicy,
    TransientBackendError,
    call_backend,
)
from service.backends.breaker import CircuitBreaker
from service.cache import Cache
from service.concurrency import gather_or_cancel
from service.exceptions import InvalidRequest
from service.memo import Memo
from service.metrics import Metrics
from service.protocol import (
    CacheFlags,
    ProfileInfo,
    RewardDetails,
    RewardItem,
    RewardRequest,
    RewardResponse,
    RewardResult,
)
from service.reward import rules
from service.reward.profiles import PROFILES, Profile
from service.reward.prompt import CHOICES, JudgePrompt, p_yes, read_verdict


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


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: str
    p_yes: float

    def encode(self) -> bytes:
        return json.dumps({"v": self.verdict, "p": self.p_yes}).encode()

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
                 prompt: JudgePrompt, judge_policy: RetryPolicy, embed_policy: RetryPolicy,
                 judge_concurrency: int, judge_max_tokens: int, judge_top_logprobs: int,
                 retry_after_s: int, max_answer_chars: int = 4000,
                 profiles: dict[str, Profile] | None = None, default_profile: str = "medix-r1",
                 judge_slots: asyncio.Semaphore | None = None, judge_breaker: CircuitBreaker | None = None,
                 embed_breaker: CircuitBreaker | None = None) -> None:
        self.judge = judge
        self.embedder = embedder
        self.cache = cache
        self.metrics = metrics
        self.prompt = prompt
        self._judge_policy = judge_policy
        self._embed_policy = embed_policy
        # Shared with /judge so that the two routes together stay within the judge's concurrency.
        self._judge_slots = judge_slots or asyncio.Semaphore(judge_concurrency)
        self._verdicts: Memo[Verdict] = Memo(Verdict.encode, Verdict.decode)
        self._judge_breaker, self._embed_breaker = judge_breaker, embed_breaker
        self._max_tokens = judge_max_tokens
        self._top_logprobs = judge_top_logprobs
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
        question = (p.question or "") if self.prompt.uses_question else ""
        return self.cache.key("judge", self.judge.model_id, self.prompt.version, p.answer, p.reference, question)

    def embed_key(self, text: str) -> str:
        return self.cache.key("embed", self.embedder.model_id, text)

    # -- the request path ---------------------------------------------------------------------
    async def score(self, request: RewardRequest, route: str = "/reward") -> RewardResponse:
        profile = self.profile(request.profile)
        prepared = [prepare(i, item, profile) for i, item in enumerate(request.items)]
        self.metrics.items.labels(route).inc(len(prepared))

        # Keys once per item that needs the backends: (judge key, answer embed key, reference embed key).
        keys = {i: (self.judge_key(p), self.embed_key(p.answer), self.embed_key(p.reference))
                for i, p in enumerate(prepared) if p.decided_by == "backends"}
        pairs = {jk: prepared[i] for i, (jk, _, _) in keys.items()}
        texts = {k: t for i, (_, ak, rk) in keys.items() for k, t in ((ak, prepared[i].answer),
                                                                       (rk, prepared[i].reference))}

        cached = await self.cache.lookup({"judge": list(pairs), "embed": list(texts)})
        verdicts = self._verdicts.hits(pairs, cached["judge"])
        vectors = {k: np.frombuffer(v, dtype=np.float32) for k, v in zip(texts, cached["embed"], strict=True)
                   if v is not None}
        judge_hit, embed_hit = set(verdicts), set(vectors)

        new_verdicts, new_vectors = await gather_or_cancel(
            self._verdicts.compute({k: p for k, p in pairs.items() if k not in verdicts}, self._judge_one),
            self._embed_all({k: t for k, t in texts.items() if k not in vectors}),
        )
        verdicts.update(new_verdicts)
        vectors.update(new_vectors)
        await self.cache.store_many(self._verdicts.encoded(new_verdicts)
                                    | {k: v.tobytes() for k, v in new_vectors.items()})

        results = []
        for i, p in enumerate(prepared):
            if i in keys:
                jk, ak, rk = keys[i]
                results.append(self._compose(p, profile, verdicts[jk], float(np.dot(vectors[ak], vectors[rk])),
                                             CacheFlags(judge=jk in judge_hit,
                                                        embed=ak in embed_hit and rk in embed_hit)))
            else:
                results.append(self._compose(p, profile, None, None, CacheFlags()))
        self._observe(results)
        return RewardResponse(results=results, profile=self.profile_info(profile))

    # -- backends -----------------------------------------------------------------------------
    async def _judge_one(self, p: Prepared) -> Verdict:
        messages = self.prompt.messages(p.answer, p.reference, p.question, self._max_chars)

        async def attempt() -> Verdict:
            out = await self.judge.complete(messages, max_tokens=self._max_tokens, choice=CHOICES,
                                            top_logprobs=self._top_logprobs)
            verdict = read_verdict(out.text)
            if verdict is None:
                raise TransientBackendError(f"judge answered {out.text[:50]!r}, not YES or NO")
            return Verdict(verdict, p_yes(out.first_token_logprobs, verdict))

        async with self._judge_slots:
            return await call_backend("judge", attempt, self._judge_policy, self.metrics, self._retry_after,
                                      self._judge_breaker)

    async def _embed_all(self, texts: dict[str, str]) -> dict[str, np.ndarray]:
        if not texts:
            return {}
        batch = list(texts.values())
        vecs = await call_backend("embed", lambda: self.embedder.embed(batch), self._embed_policy,
                                  self.metrics, self._retry_after, self._embed_breaker)
        return {k: np.ascontiguousarray(vecs[i], dtype=np.float32) for i, k in enumerate(texts)}

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

    def _observe(self, results: list[RewardResult]) -> None:
        for name in SCORE_KEYS:
            values = [v for v in (getattr(r, name) for r in results) if v is not None]
            self.metrics.reward_component.observe_many(name, values)
