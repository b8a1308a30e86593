"""The verdict prompt: the YES/NO question /reward asks the judge backend (our wording), replaceable from a
file, and reading the verdict it answers."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path

from pydantic import BaseModel, field_validator, model_validator

from service.backends.base import finite_logprobs

CHOICES = ["YES", "NO"]
log = logging.getLogger("medix.prompt")


class VerdictPrompt(BaseModel, frozen=True):
    version: str
    system: str
    user: str

    @field_validator("user")
    @classmethod
    def _placeholders(cls, v: str) -> str:
        for name in ("{answer}", "{reference}"):
            if name not in v:
                raise ValueError(f"the user template must contain {name}")
        return v

    @model_validator(mode="after")
    def _renders(self) -> VerdictPrompt:
        # Checked when the prompt is loaded, so that a bad template stops start-up instead of failing requests.
        for part in ("system", "user"):
            try:
                getattr(self, part).format_map({"answer": "a", "reference": "r", "question": "q"})
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(f"the {part} template does not render ({exc!r}): only {{answer}}, {{reference}} "
                                 "and {question} may be used; write {{ and }} for literal braces") from exc
        return self

    @property
    def fingerprint(self) -> str:
        """Changes whenever the text does, even under the same version: part of every verdict's cache key."""
        return hashlib.sha256("\x1f".join((self.version, self.system, self.user)).encode()).hexdigest()[:16]

    @property
    def uses_question(self) -> bool:
        return "{question}" in self.user or "{question}" in self.system

    @property
    def candidate_last(self) -> bool:
        """Whether the candidate comes after everything a GRPO group shares (the reference, the question), so that
        an engine's prefix cache can reuse the prompt up to it across the group's answers."""
        text = self.system + "\x1e" + self.user
        return all(text.find(shared) < text.find("{answer}") for shared in ("{reference}", "{question}")
                   if shared in text)

    def shared_part(self, reference: str, question: str | None, max_chars: int) -> str:
        """The prompt's text up to the candidate answer: what every answer of a GRPO group sends alike, the key
        by which a judge with several replicas keeps such calls on one replica."""
        cut = "\x00"
        rendered = "\x1e".join(m["content"] for m in self.messages(cut, reference, question, max_chars))
        return rendered.partition(cut)[0]

    def messages(self, answer: str, reference: str, question: str | None, max_chars: int) -> list[dict[str, str]]:
        values = {"answer": answer[:max_chars], "reference": reference[:max_chars],
                  "question": (question or "(not given)")[:max_chars]}
        return [
            {"role": "system", "content": self.system.format_map(values)},
            {"role": "user", "content": self.user.format_map(values)},
        ]


DEFAULT_PROMPT = VerdictPrompt(
    version="medix-yesno-v1",
    system=(
        "You check answers to medical questions against a reference answer. Treat the candidate as correct "
        "when it states the same finding, diagnosis, structure or value as the reference, even in other "
        "words, with synonyms, abbreviations, or different case and word order. Treat it as wrong when it "
        "names something else, a different side, location or number, adds a contradicting claim, or "
        "disagrees on yes/no. Reply with one word only: YES if correct, NO if not."
    ),
    user="Reference answer: {reference}\nCandidate answer: {answer}\nIs the candidate answer correct? YES or NO.",
)


def load_prompt(path: Path | None) -> VerdictPrompt:
    if path is None:
        return DEFAULT_PROMPT
    prompt = VerdictPrompt.model_validate(json.loads(path.read_text()))
    if not prompt.candidate_last:
        log.warning("verdict prompt %s puts {answer} before {reference} or {question}: an engine's prefix cache "
                    "cannot reuse what a GRPO group's answers share (docs/judge-engine.md)", path)
    return prompt


def p_yes(first_token_logprobs: dict[str, float] | None, verdict: str) -> float:
    """Probability of YES from the first token's alternatives (tokens that begin YES vs NO), normalised over the
    two: from a constrained call, the first step's top tokens (`Y` vs `N`, `NO`); from a single-step verdict, each
    choice's logprob as the backend sums it over the choice's first tokens (`YES`, `NO`). Both are the same
    softmax over the tokens that can begin a choice.

    Falls back to the decoded verdict when the alternatives say nothing about either. A logprob that is missing,
    not a number, NaN or infinite is no evidence (left out); one below -50 is a masked token. The sums are taken
    relative to the largest logprob, so that no logprob overflows `exp`: the result is always in [0, 1].
    """
    yes: list[float] = []
    no: list[float] = []
    for token, lp in finite_logprobs((first_token_logprobs or {}).items()).items():
        if not isinstance(token, str) or lp < -50:
            continue
        t = token.strip().upper()
        if not t:
            continue
        if "YES".startswith(t):
            yes.append(lp)
        elif "NO".startswith(t):
            no.append(lp)
    if not yes and not no:
        return 1.0 if verdict == "YES" else 0.0
    top = max(yes + no)
    p_y = sum(math.exp(lp - top) for lp in yes)
    p_n = sum(math.exp(lp - top) for lp in no)
    return min(1.0, max(0.0, p_y / (p_y + p_n)))  # p_y + p_n >= 1: the largest term is exp(0)


def read_verdict(text: str) -> str | None:
    """YES or NO from the judge's reply; None for an empty reply (the scorer asks once more, then fails that item).

    Constrained decoding gives a bare YES or NO. A server that ignores structured outputs may reply with a
    sentence; it is read as the published method reads every reply: YES when the upper-cased reply contains
    `YES` anywhere (so `Yes, but...` and even `yesterday` read YES), NO otherwise (`maybe`, `NOT SURE`). An empty
    reply is no verdict at all: an error the caller sees, never a silent NO.
    """
    if not text.strip():
        return None
    return "YES" if "YES" in text.upper() else "NO"
