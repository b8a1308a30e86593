"""Auditing the judge against people: `medix-judge agree` and `medix-judge calibrate` (registered in judge_cli.py).

agree: a `run` input with a `human` field per line (a label, a list of labels one per annotator, or an object
annotator -> label) is judged through `/judge` as `run` does (resumable, the same JSONL helpers), or its results
are read from `--output` when every id is there already; then, per task and overall:
- binary rubric: Cohen's kappa of the judge's verdict against the people's majority label
  (`sklearn.metrics.cohen_kappa_score`), raw agreement, the confusion matrix (`sklearn.metrics.confusion_matrix`);
- report rubric (0-5): the quadratic-weighted kappa of the judge's mean (rounded) against the people's median,
  and Spearman's rho of the judge's mean against the people's mean (`scipy.stats.spearmanr`);
- every interval: a percentile bootstrap of items resampled within each task (`scipy.stats.bootstrap`, seeded);
- with several annotators: the mean pairwise Cohen kappa between annotators (an annotator = a list position or
  an object key) beside the mean kappa of the judge with each annotator, on the same items;
- the items where judge and people disagree most, and with `--probe swap` the rate at which the judge's verdict
  flips when prediction and reference are swapped in its prompt (Wilson interval).

calibrate: labelled (answer, reference[, modality]) pairs are scored by `/reward` under each profile; p(YES)
(the judge's probability of YES, 1 or 0 where the rules decide without the judge) is rated against the labels:
Brier score (`sklearn.metrics.brier_score_loss`), expected calibration error over uniform bins
(`scipy.stats.binned_statistic`), ROC AUC, a reliability diagram (matplotlib), and the profile and p(YES)
threshold whose verdicts agree best with the labels (Cohen's kappa).

scikit-learn and matplotlib come with the client's `audit` extra (`pip install './clients[audit]'`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import typer
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from clients.client import AsyncMedixClient, JudgeScore, _chunks
from clients.contract import ground_truth
from clients.datasets import modality_tag
from clients.evaluation import CONFIDENCE, SEED, _seeded, fmt, wilson_interval
from clients.judge_cli import (
    EXIT_BELOW_MIN,
    EXIT_UNJUDGED,
    PredictionLine,
    _judge_all,
    _resume,
    interval_text,
    read_done,
    read_predictions,
    warn,
)

RESAMPLES = 1_000  # each resample calls scikit-learn once (~1-2 ms): an interval takes a second or two
SHOW_ITEMS = 10
BINARY_LABELS = [0, 1]
REPORT_LABELS = [0, 1, 2, 3, 4, 5]
PROFILES = ("medix-r1", "medix-r1-soft", "medix-r1-strict")
BINS = 10
EXTRA_HINT = "pip install './clients[audit]' (or: pip install scikit-learn matplotlib)"
INTERVAL_METHOD = "percentile bootstrap, items resampled within each task (scipy.stats.bootstrap)"

Label = int
Labels = int | list[int | None] | dict[str, int | None]


def require(module: str, package: str) -> None:
    """Exit 2 with how to install `package` when `module` cannot be imported (an optional dependency)."""
    if importlib.util.find_spec(module) is None:
        warn(f"this command needs {package}: {EXTRA_HINT}")
        raise typer.Exit(EXIT_UNJUDGED)


# -- labels ------------------------------------------------------------------------------------------------------
def _label(v: Any) -> int | None:
    """A label as an int (a bool is 0/1); None stays None (an annotator who did not label the item)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int) and 0 <= v <= 5:
        return v
    if isinstance(v, float) and v.is_integer() and 0 <= v <= 5:
        return int(v)
    raise ValueError(f"a label is an integer 0-5 (0/1 or false/true for binary items), not {v!r}")


def annotations(human: Any) -> dict[str, int]:
    """The labels of one item by annotator: a list's i-th label is annotator `i+1`'s (the same position is the
    same person on every line), an object's keys name them, a single label is annotator `1`'s. Unlabelled
    (null) entries are left out; at least one label is required."""
    if isinstance(human, dict):
        found = {str(k): _label(v) for k, v in human.items()}
    elif isinstance(human, list):
        found = {str(i + 1): _label(v) for i, v in enumerate(human)}
    else:
        found = {"1": _label(human)}
    labels = {k: v for k, v in found.items() if v is not None}
    if not labels:
        raise ValueError("no label: give a label, a list of labels or an object annotator -> label")
    return labels


class AgreeLine(PredictionLine):
    """`run`'s input line with the people's labels."""

    human: Labels

    @field_validator("human", mode="before")
    @classmethod
    def _check_human(cls, v: Any) -> Any:
        annotations(v)
        return v

    def labels(self) -> dict[str, int]:
        return annotations(self.human)


def consensus(labels: Sequence[int], rubric: str) -> int | None:
    """The people's label of an item: binary, the majority (None on a tie); report, the median rounded half up."""
    if rubric == "binary":
        ones = sum(labels)
        return 1 if 2 * ones > len(labels) else 0 if 2 * ones < len(labels) else None
    return math.floor(float(np.median(labels)) + 0.5)


# -- statistics ----------------------------------------------------------------------------------------------------
def kappa(a: Sequence[int], b: Sequence[int], *, weights: str | None = None,
          labels: Sequence[int] | None = None) -> float | None:
    """Cohen's kappa (scikit-learn), quadratic-weighted with `weights="quadratic"`; None when undefined (no items,
    or both raters give one same label throughout)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) == 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = float(cohen_kappa_score(a, b, weights=weights, labels=list(labels) if labels is not None else None))
    return k if math.isfinite(k) else None


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman's rho (scipy); None when undefined (fewer than 2 items, or one side constant)."""
    from scipy.stats import spearmanr

    if len(a) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = float(spearmanr(a, b).statistic)
    return rho if math.isfinite(rho) else None


def stratified_interval(statistic: Callable[[np.ndarray], float], strata: Sequence[Sequence[int]],
                        confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                        seed: int = SEED) -> tuple[float, float] | None:
    """Percentile bootstrap interval of `statistic(indices)`: the item indices of each stratum (task) are resampled
    on their own (scipy.stats.bootstrap, one sample per stratum); a stratum of one item enters every resample as
    it is. None when nothing can be resampled or the interval is not finite."""
    from scipy.stats import bootstrap

    arrays = [np.asarray(s, dtype=int) for s in strata if len(s)]
    varying = tuple(a for a in arrays if a.size >= 2)
    fixed = [a for a in arrays if a.size < 2]
    if not varying:
        return None
    constant = np.concatenate(fixed) if fixed else np.empty(0, dtype=int)

    def stat(*samples: np.ndarray) -> float:
        return statistic(np.concatenate([*samples, constant]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(varying, stat, n_resamples=resamples, confidence_level=confidence, method="percentile",
                        vectorized=False, **_seeded(bootstrap, seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (low, high) if math.isfinite(low) and math.isfinite(high) else None


def kappa_interval(people: Sequence[int], judge: Sequence[int], strata: Sequence[Sequence[int]], *,
                   weights: str | None = None, labels: Sequence[int] | None = None, confidence: float = CONFIDENCE,
                   resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float] | None:
    """The bootstrap interval of kappa(people, judge). A resample in which both give one same label throughout
    (kappa undefined: perfect agreement on one class) counts as kappa 1. Memoised: the overall row of a file
    with one task of a rubric is that task's."""
    return _kappa_interval(tuple(people), tuple(judge), tuple(tuple(s) for s in strata), weights,
                           tuple(labels) if labels is not None else None, confidence, resamples, seed)


@functools.lru_cache(maxsize=64)
def _kappa_interval(people: tuple[int, ...], judge: tuple[int, ...], strata: tuple[tuple[int, ...], ...],
                    weights: str | None, labels: tuple[int, ...] | None, confidence: float, resamples: int,
                    seed: int) -> tuple[float, float] | None:
    p, j = np.asarray(people), np.asarray(judge)

    def stat(idx: np.ndarray) -> float:
        k = kappa(p[idx], j[idx], weights=weights, labels=labels)
        return 1.0 if k is None else k

    if kappa(p, j, weights=weights, labels=labels) is None:
        return None
    return stratified_interval(stat, strata, confidence, resamples, seed)


def spearman_interval(people: Sequence[float], judge: Sequence[float], strata: Sequence[Sequence[int]], *,
                      confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                      seed: int = SEED) -> tuple[float, float] | None:
    """The bootstrap interval of Spearman's rho; None when a resample leaves it undefined (a constant side)."""
    return _spearman_interval(tuple(people), tuple(judge), tuple(tuple(s) for s in strata), confidence, resamples,
                              seed)


@functools.lru_cache(maxsize=64)
def _spearman_interval(people: tuple[float, ...], judge: tuple[float, ...], strata: tuple[tuple[int, ...], ...],
                       confidence: float, resamples: int, seed: int) -> tuple[float, float] | None:
    p, j = np.asarray(people, dtype=float), np.asarray(judge, dtype=float)

    def stat(idx: np.ndarray) -> float:
        rho = spearman(p[idx], j[idx])
        return math.nan if rho is None else rho

    if spearman(p, j) is None:
        return None
    return stratified_interval(stat, strata, confidence, resamples, seed)


def confusion(people: Sequence[int], judge: Sequence[int], labels: Sequence[int]) -> dict[str, Any]:
    """The confusion matrix, rows the people's label, columns the judge's (scikit-learn)."""
    from sklearn.metrics import confusion_matrix

    m = confusion_matrix(people, judge, labels=list(labels)) if len(people) else np.zeros((len(labels),) * 2, int)
    return {"labels": list(labels), "rows": "people", "columns": "judge", "matrix": m.tolist()}


def pairwise_kappa(ratings: dict[str, dict[str, int]], *, weights: str | None = None,
                   labels: Sequence[int] | None = None) -> tuple[float | None, int]:
    """The mean Cohen's kappa over pairs of raters (rater -> item -> label), each pair on the items both rated
    (pairs with fewer than 2 such items, or an undefined kappa, are left out), and how many pairs it averages."""
    ks = []
    for a, b in combinations(sorted(ratings), 2):
        common = sorted(set(ratings[a]) & set(ratings[b]))
        if len(common) >= 2:
            k = kappa([ratings[a][i] for i in common], [ratings[b][i] for i in common], weights=weights,
                      labels=labels)
            if k is not None:
                ks.append(k)
    return (float(np.mean(ks)) if ks else None), len(ks)


def rater_kappa(rater: dict[str, int], others: dict[str, dict[str, int]], *, weights: str | None = None,
                labels: Sequence[int] | None = None) -> tuple[float | None, int]:
    """The mean Cohen's kappa of one rater (the judge) with each of the others, on the items both rated."""
    ks = []
    for other in sorted(others):
        common = sorted(set(rater) & set(others[other]))
        if len(common) >= 2:
            k = kappa([others[other][i] for i in common], [rater[i] for i in common], weights=weights, labels=labels)
            if k is not None:
                ks.append(k)
    return (float(np.mean(ks)) if ks else None), len(ks)


# -- agree: items and their statistics ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One labelled item with the judge's result. `judge`: binary 0/1, report the mean of the rounds (0-5)."""

    id: str
    task: str
    rubric: str
    judge: float
    people: dict[str, int]
    prediction: str = ""
    reference: str = ""
    probe: dict[str, Any] | None = None

    @property
    def judge_label(self) -> int:
        return math.floor(self.judge + 0.5)

    @property
    def consensus(self) -> int | None:
        return consensus(list(self.people.values()), self.rubric)

    @property
    def people_mean(self) -> float:
        return float(np.mean(list(self.people.values())))

    @property
    def gap(self) -> float:
        """How far the judge is from the people, on a 0-1 scale: |judge - mean label| (report: both / 5)."""
        top = 1.0 if self.rubric == "binary" else 5.0
        return abs(self.judge - self.people_mean) / top


@dataclass
class Collected:
    """The items ready for statistics and what kept the others out."""

    items: list[Item] = field(default_factory=list)
    unjudged: int = 0  # rows without a result in --output
    failed: int = 0  # results with a null score
    bad_labels: list[str] = field(default_factory=list)  # ids whose labels do not fit the result's rubric


def collect(rows: Iterable[AgreeLine], results: dict[str, dict[str, Any]]) -> Collected:
    """Pair each labelled row with its result by id. A binary result needs labels 0/1; a report result 0-5."""
    out = Collected()
    for row in rows:
        rec = results.get(row.id)
        if rec is None:
            out.unjudged += 1
            continue
        if rec.get("score") is None:
            out.failed += 1
            continue
        rubric = str(rec.get("rubric") or row.rubric or "binary")
        people = row.labels()
        if rubric == "binary" and not set(people.values()) <= {0, 1}:
            out.bad_labels.append(row.id)
            continue
        raw = rec.get("raw_score")
        judge = float(rec["score"]) if rubric == "binary" else float(raw if raw is not None else rec["score"] * 5)
        probe = rec.get("probe") if isinstance(rec.get("probe"), dict) else None
        out.items.append(Item(row.id, str(rec.get("task", row.task)), rubric, judge, people, row.prediction,
                              row.reference, probe))
    return out


def _strata(items: Sequence[Item]) -> list[list[int]]:
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_task[it.task].append(i)
    return [by_task[t] for t in sorted(by_task)]


def _annotator_stats(items: Sequence[Item], weights: str | None, labels: Sequence[int]) -> dict[str, Any]:
    """Inter-annotator agreement beside the judge's, on the items of `items` that several annotators labelled."""
    multi = [it for it in items if len(it.people) >= 2]
    ratings: dict[str, dict[str, int]] = defaultdict(dict)
    for it in multi:
        for who, lab in it.people.items():
            ratings[who][it.id] = lab
    between, pairs = pairwise_kappa(ratings, weights=weights, labels=labels)
    judge, _ = rater_kappa({it.id: it.judge_label for it in multi}, ratings, weights=weights, labels=labels)
    return {"annotators": len(ratings), "multi_labelled": len(multi),
            "contested": sum(len(set(it.people.values())) > 1 for it in multi),
            "annotator_kappa": between, "annotator_pairs": pairs, "judge_annotator_kappa": judge}


def _probe_stats(items: Sequence[Item], confidence: float) -> dict[str, Any] | None:
    probed = [it for it in items if it.probe is not None]
    if not probed:
        return None
    done = [it for it in probed if it.probe and it.probe.get("flipped") is not None]
    flips = sum(bool(it.probe and it.probe["flipped"]) for it in done)
    ci = wilson_interval(flips, len(done), confidence) if done else None
    return {"kind": probed[0].probe.get("kind") if probed[0].probe else None, "probed": len(done),
            "failed": len(probed) - len(done), "flipped": flips,
            "flip_rate": flips / len(done) if done else None,
            "flip_low": ci[0] if ci else None, "flip_high": ci[1] if ci else None,
            "flipped_ids": [it.id for it in done if it.probe and it.probe["flipped"]]}


def group_stats(items: Sequence[Item], *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                seed: int = SEED) -> dict[str, Any]:
    """The agreement of judge and people on a group of items (a task, or all of them), as `S.json` holds it."""
    binary = [it for it in items if it.rubric == "binary" and it.consensus is not None]
    report = [it for it in items if it.rubric != "binary"]
    compared = [*binary, *report]
    kinds = {it.rubric == "binary" for it in items}
    entry: dict[str, Any] = {
        "rubric": "mixed" if len(kinds) > 1 else "binary" if kinds == {True} else "report",
        "n": len(compared),
        "agreement": (sum(it.judge_label == it.consensus for it in compared) / len(compared)) if compared else None,
        "ties": sum(1 for it in items if it.rubric == "binary" and it.consensus is None),
    }
    kw = {"confidence": confidence, "resamples": resamples, "seed": seed}
    if any(it.rubric == "binary" for it in items):
        people, judge = [it.consensus for it in binary], [it.judge_label for it in binary]
        k = kappa(people, judge, labels=BINARY_LABELS)
        ci = kappa_interval(people, judge, _strata(binary), labels=BINARY_LABELS, **kw) if binary else None
        entry.update(kappa=k, kappa_low=ci[0] if ci else None, kappa_high=ci[1] if ci else None,
                     confusion=confusion(people, judge, BINARY_LABELS),
                     inter_annotator=_annotator_stats([it for it in items if it.rubric == "binary"], None,
                                                      BINARY_LABELS))
    if report:
        people_r, judge_r = [int(it.consensus or 0) for it in report], [it.judge_label for it in report]
        wk = kappa(people_r, judge_r, weights="quadratic", labels=REPORT_LABELS)
        wci = kappa_interval(people_r, judge_r, _strata(report), weights="quadratic", labels=REPORT_LABELS, **kw)
        means, raws = [it.people_mean for it in report], [it.judge for it in report]
        rho = spearman(means, raws)
        rci = spearman_interval(means, raws, _strata(report), **kw)
        entry.update(n_report=len(report), weighted_kappa=wk, weighted_kappa_low=wci[0] if wci else None,
                     weighted_kappa_high=wci[1] if wci else None, spearman=rho,
                     spearman_low=rci[0] if rci else None, spearman_high=rci[1] if rci else None,
                     within_one=sum(abs(a - b) <= 1 for a, b in zip(people_r, judge_r, strict=True)) / len(report),
                     confusion_report=confusion(people_r, judge_r, REPORT_LABELS),
                     inter_annotator_report=_annotator_stats(report, "quadratic", REPORT_LABELS))
    probe = _probe_stats(items, confidence)
    if probe is not None:
        entry["probe"] = probe
    for name, group in (("binary", binary), ("report", report)):
        if entry["rubric"] == "mixed" and group:  # each table of the Markdown shows its own items
            entry[f"agreement_{name}"] = sum(it.judge_label == it.consensus for it in group) / len(group)
            entry[f"probe_{name}"] = _probe_stats([it for it in items if (it.rubric == "binary") == (name == "binary")],
                                                  confidence)
    return entry


def disagreements(items: Sequence[Item], limit: int) -> list[dict[str, Any]]:
    """The items where judge and people are furthest apart (gap > 0), the largest first, at most `limit`."""
    ranked = sorted((it for it in items if it.gap > 0), key=lambda it: (-it.gap, it.task, it.id))
    return [{"id": it.id, "task": it.task, "rubric": it.rubric, "judge": it.judge, "people": it.people,
             "gap": round(it.gap, 4), "prediction": it.prediction, "reference": it.reference}
            for it in ranked[:limit]]


def gate(overall: dict[str, Any], min_kappa: float | None) -> dict[str, Any]:
    """Passed when the lower end of the overall kappa interval (binary items) and of the overall weighted kappa
    interval (report items), each where there are such items, is at least `min_kappa`."""
    if min_kappa is None:
        return {"min_kappa": None, "passed": None, "checked": []}
    checked = []
    for key in ("kappa_low", "weighted_kappa_low"):
        if key in overall:
            low = overall[key]
            checked.append({"statistic": key, "value": low, "passed": low is not None and low >= min_kappa})
    return {"min_kappa": min_kappa, "passed": bool(checked) and all(c["passed"] for c in checked),
            "checked": checked}


def agree_summary(c: Collected, *, invalid: int, min_kappa: float | None, confidence: float = CONFIDENCE,
                  resamples: int = RESAMPLES, seed: int = SEED, show_items: int = SHOW_ITEMS) -> dict[str, Any]:
    by_task: dict[str, list[Item]] = defaultdict(list)
    for it in c.items:
        by_task[it.task].append(it)
    kw = {"confidence": confidence, "resamples": resamples, "seed": seed}
    overall = group_stats(c.items, **kw)
    return {
        "confidence": confidence, "resamples": resamples, "seed": seed, "interval_method": INTERVAL_METHOD,
        "overall": overall, "tasks": {t: group_stats(by_task[t], **kw) for t in sorted(by_task)},
        "gate": gate(overall, min_kappa), "invalid_lines": invalid, "unjudged": c.unjudged, "failed": c.failed,
        "bad_labels": c.bad_labels, "disagreements": disagreements(c.items, show_items),
    }


def incomplete(s: dict[str, Any]) -> bool:
    return bool(s["invalid_lines"] or s["unjudged"] or s["failed"] or s["bad_labels"])


# -- agree: Markdown ---------------------------------------------------------------------------------------------
def _cut(text: str, n: int = 60) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def _ci(e: dict[str, Any], key: str) -> str:
    return interval_text(e.get(f"{key}_low"), e.get(f"{key}_high"))


def _annot(a: dict[str, Any] | None) -> tuple[str, str]:
    if not a or a["multi_labelled"] == 0:
        return "—", "—"
    return (f"{fmt(a['annotator_kappa'])} ({a['annotators']} annotators, {a['contested']} contested)",
            fmt(a["judge_annotator_kappa"]))


def _flips(e: dict[str, Any], rubric: str) -> str:
    p = e.get(f"probe_{rubric}", e.get("probe"))
    if not p or not p["probed"]:
        return "—"
    return f"{fmt(p['flip_rate'])} ({p['flipped']}/{p['probed']})"


def _gate_line(s: dict[str, Any]) -> str:
    g = s["gate"]
    if incomplete(s):
        return ("**Incomplete** (exit 2): " + ", ".join(
            f"{v} {k}" for k, v in (("invalid lines", s["invalid_lines"]), ("unjudged", s["unjudged"]),
                                    ("failed", s["failed"]), ("with labels outside the rubric",
                                                              len(s["bad_labels"]))) if v) + ".")
    if g["min_kappa"] is None:
        return "No gate (report only: no --min-kappa)."
    parts = ", ".join(f"{c['statistic'].removesuffix('_low').replace('_', ' ')} lower bound {fmt(c['value'])}"
                      for c in g["checked"]) or "no statistic to check"
    return f"**Gate: {'passed' if g['passed'] else 'failed'}** (--min-kappa {g['min_kappa']:g}): {parts}."


def agree_markdown(s: dict[str, Any], name: str) -> str:
    level = f"{s['confidence']:.0%}"
    rows = [*s["tasks"].items(), ("**overall**", s["overall"])]
    lines = [f"### MediX judge against people: `{name}`", "", _gate_line(s), ""]
    binary = [(t, e) for t, e in rows if "kappa" in e]
    report = [(t, e) for t, e in rows if "weighted_kappa" in e]
    if binary:
        lines += ["Binary items: the judge's verdict against the people's majority label.", "",
                  f"| task | n | agreement | κ | {level} CI | annotators κ | judge–annotator κ | flip rate |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for t, e in binary:
            between, judge = _annot(e.get("inter_annotator"))
            n = e["n"] - e.get("n_report", 0)
            agreement = e.get("agreement_binary", e["agreement"])
            lines.append(f"| {t} | {n} | {fmt(agreement)} | {fmt(e['kappa'])} | {_ci(e, 'kappa')} | {between} | "
                         f"{judge} | {_flips(e, 'binary')} |")
        lines.append("")
    if report:
        lines += ["Report items (0–5): the judge's mean against the people's median (weighted κ) and mean (ρ).", "",
                  f"| task | n | agreement | weighted κ | {level} CI | Spearman ρ | {level} CI | annotators "
                  "weighted κ | judge–annotator weighted κ | flip rate |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for t, e in report:
            between, judge = _annot(e.get("inter_annotator_report"))
            lines.append(f"| {t} | {e['n_report']} | {fmt(e.get('agreement_report', e['agreement']))} | "
                         f"{fmt(e['weighted_kappa'])} | {_ci(e, 'weighted_kappa')} | {fmt(e['spearman'])} | "
                         f"{_ci(e, 'spearman')} | {between} | {judge} | {_flips(e, 'report')} |")
        lines.append("")
    lines += ["Confusion matrices (rows: people, columns: judge):", ""]
    for t, e in s["tasks"].items():
        for key in ("confusion", "confusion_report"):
            if key in e:
                labels, matrix = e[key]["labels"], e[key]["matrix"]
                lines += [f"| {t} | " + " | ".join(f"judge {x}" for x in labels) + " |",
                          "| --- | " + " | ".join("---:" for _ in labels) + " |"]
                lines += [f"| people {x} | " + " | ".join(str(v) for v in row) + " |"
                          for x, row in zip(labels, matrix, strict=True)]
                lines.append("")
    if s["disagreements"]:
        lines += ["Items where judge and people disagree most:", "",
                  "| id | task | judge | people | prediction | reference |", "| --- | --- | ---: | --- | --- | --- |"]
        for d in s["disagreements"]:
            people = ", ".join(f"{v}" for v in d["people"].values())
            lines.append(f"| {d['id']} | {d['task']} | {d['judge']:g} | {people} | {_cut(d['prediction'])} | "
                         f"{_cut(d['reference'])} |")
        lines.append("")
    lines.append(f"κ: Cohen's kappa (scikit-learn), quadratic-weighted for reports; intervals: {s['interval_method']}"
                 f", {s['resamples']} resamples, seed {s['seed']}; annotators κ: mean pairwise κ between annotators "
                 "on the items both labelled, beside the mean κ of the judge with each of them on the same items; "
                 "flip rate: the verdict moved when prediction and reference were swapped in the judge's prompt.")
    ties = s["overall"].get("ties", 0)
    if ties:
        lines += ["", f"- {ties} binary items left out of κ: their annotators split evenly."]
    return "\n".join(lines) + "\n"


# -- agree: the command --------------------------------------------------------------------------------------------
class ProbingClient(AsyncMedixClient):
    """The client, with every /judge request asking the bias probe `probe` (the result then carries `probe`)."""

    def __init__(self, *args: Any, probe: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe = probe

    async def judge(self, items: Sequence[dict[str, Any]], rounds: int = 3,
                    explain: bool = False) -> list[JudgeScore]:
        parts = await asyncio.gather(*(self._post("/judge", {"items": list(c), "rounds": rounds, "explain": explain,
                                                             "probe": self.probe})
                                       for c in _chunks(items, self.max_items)))
        return [JudgeScore.model_validate(r) for p in parts for r in p["results"]]


def agree_command(*, input: Path, output: Path, url: str | None, api_key: str | None, batch_size: int,
                  concurrency: int, rounds: int, min_kappa: float | None, summary: Path | None,
                  markdown: Path | None, probe: str | None, retry_failed: bool, show_items: int, seed: int,
                  resamples: int, confidence: float) -> None:
    require("sklearn", "scikit-learn")
    rows, invalid = read_predictions(input, warn, AgreeLine)
    # With --probe, an id judged earlier without its probe is asked again (its verdict comes from the cache).
    redo = (lambda rec: rec.get("score") is not None and "probe" not in rec) if probe else None
    todo = _resume(rows, lambda r: r.id, output, retry_failed, redo)
    factory = functools.partial(ProbingClient, probe=probe) if probe else AsyncMedixClient
    _judge_all(todo, url=url, api_key=api_key, batch_size=batch_size, concurrency=concurrency, rounds=rounds,
               output=output, client_factory=factory)
    c = collect(rows, read_done(output))
    for i in c.bad_labels:
        warn(f"id {i!r}: a binary result, but labels other than 0/1; left out")
    s = agree_summary(c, invalid=invalid, min_kappa=min_kappa, confidence=confidence, resamples=resamples,
                      seed=seed, show_items=show_items)
    text = agree_markdown(s, input.name)
    print(text, flush=True)
    if summary:
        summary.write_text(json.dumps(s, indent=2))
    if markdown:
        markdown.write_text(text)
    if incomplete(s):
        warn(f"{invalid} invalid lines skipped; {c.unjudged} items left unjudged; {c.failed} failed; "
             f"{len(c.bad_labels)} with labels outside their rubric")
        raise typer.Exit(EXIT_UNJUDGED)
    if s["gate"]["passed"] is False:
        warn(f"the judge's agreement with people is under --min-kappa {min_kappa}: {_gate_line(s)}")
        raise typer.Exit(EXIT_BELOW_MIN)


# -- calibrate ---------------------------------------------------------------------------------------------------
class CalibrationLine(BaseModel):
    """A labelled pair: the answer (or `prediction`), the reference, an optional modality and question, and the
    label (or `human`: labels of several annotators, their majority; 1 = the answer is correct)."""

    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    answer: str = Field(validation_alias=AliasChoices("answer", "prediction"))
    reference: str = Field(min_length=1)
    modality: str | None = None
    question: str | None = None
    rubric: str | None = None  # an `agree` file's report lines (0-5) are left out: p(YES) rates yes/no verdicts
    label: Labels = Field(validation_alias=AliasChoices("label", "human"))

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v

    @field_validator("label", mode="before")
    @classmethod
    def _check_label(cls, v: Any, info: Any) -> Any:
        if info.data.get("rubric") != "report" and not set(annotations(v).values()) <= {0, 1}:
            raise ValueError("calibration labels are 0/1 (or false/true)")
        return v

    def verdict(self) -> int | None:
        return consensus(list(annotations(self.label).values()), "binary")


def reward_item(line: CalibrationLine) -> dict[str, Any]:
    """A /reward item whose answer is the pair's answer in a well-formed response (the modality tag first when
    the pair has one), so that the format and modality terms are met and the verdict is the judge's."""
    tag = modality_tag({"modality": line.modality})
    head = f"<{tag}>" if tag else ""
    response = f"{head}<thinking>The answer, checked against the question.</thinking>\n<answer>{line.answer}</answer>"
    item: dict[str, Any] = {"id": line.id, "response": response, "ground_truth": ground_truth(line.reference, tag)}
    if line.question:
        item["question"] = line.question
    return item


def p_yes_of(result: dict[str, Any]) -> float | None:
    """The reward's p(YES): the judge's where it was asked, 1 for an exact match and 0 for an invalid answer
    (the rules decide those without the judge); None when the item failed."""
    if result.get("overall") is None:
        return None
    d = result.get("details") or {}
    decided = d.get("decided_by")
    if decided == "exact":
        return 1.0
    if decided == "invalid":
        return 0.0
    p = d.get("judge_p_yes")
    return float(p) if p is not None else None


def reliability(labels: Sequence[int], p: Sequence[float], bins: int = BINS) -> dict[str, Any]:
    """Per uniform bin of p on [0, 1] (the last bin closed): items, mean p and share of positives
    (scipy.stats.binned_statistic); the expected calibration error is the items-weighted mean gap between them."""
    from scipy.stats import binned_statistic

    y, q = np.asarray(labels, dtype=float), np.asarray(p, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    count = binned_statistic(q, q, statistic="count", bins=edges).statistic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty bins: NaN means
        mean_p = binned_statistic(q, q, statistic="mean", bins=edges).statistic
        share = binned_statistic(q, y, statistic="mean", bins=edges).statistic
    used = count > 0
    ece = float(np.sum(count[used] / count.sum() * np.abs(share[used] - mean_p[used]))) if count.sum() else None
    return {"edges": edges.tolist(), "count": count.astype(int).tolist(),
            "mean_p": [float(x) if u else None for x, u in zip(mean_p, used, strict=True)],
            "positive_share": [float(x) if u else None for x, u in zip(share, used, strict=True)], "ece": ece}


def best_threshold(labels: Sequence[int], scores: Sequence[float]) -> dict[str, Any]:
    """The cut `score >= t` whose verdicts agree best with the labels: highest Cohen's kappa, then raw
    agreement, then the cut nearest 0.5. Candidate cuts: every distinct score, and 0.5."""
    from sklearn.metrics import accuracy_score

    y, s = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    best: tuple[float, float, float, float] | None = None
    for t in sorted({*s.tolist(), 0.5}):
        pred = (s >= t).astype(int)
        k = kappa(y, pred, labels=BINARY_LABELS)
        k = -1.0 if k is None else k
        acc = float(accuracy_score(y, pred))
        cand = (k, acc, -abs(t - 0.5), t)
        if best is None or cand[:3] > best[:3]:
            best = cand
    assert best is not None
    return {"threshold": best[3], "kappa": best[0], "agreement": best[1]}


def at_threshold(labels: Sequence[int], scores: Sequence[float], t: float) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score

    pred = (np.asarray(scores) >= t).astype(int)
    return {"threshold": t, "kappa": kappa(labels, pred, labels=BINARY_LABELS),
            "agreement": float(accuracy_score(labels, pred))}


def calibration_stats(labels: Sequence[int], p: Sequence[float], reward: Sequence[float],
                      bins: int = BINS) -> dict[str, Any]:
    """How well p(YES) is calibrated and which cut of it (and of the reward) agrees best with the labels."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y = np.asarray(labels, dtype=int)
    both = len(set(y.tolist())) == 2
    rel = reliability(y, p, bins)
    return {"n": len(y), "positives": int(y.sum()), "brier": float(brier_score_loss(y, p)), "ece": rel["ece"],
            "auc": float(roc_auc_score(y, p)) if both else None, "at_half": at_threshold(y, p, 0.5),
            "best": best_threshold(y, p), "reward_auc": float(roc_auc_score(y, reward)) if both else None,
            "reward_best": best_threshold(y, reward), "reliability": rel}


def recommend(profiles: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The profile whose best p(YES) cut agrees best with the labels (kappa, then the kappa of its reward's best
    cut, then the lower Brier score); ties keep the order given."""
    scored = [(name, s) for name, s in profiles.items() if s.get("n")]
    if not scored:
        return None
    name, s = max(scored, key=lambda x: (x[1]["best"]["kappa"], x[1]["reward_best"]["kappa"], -x[1]["brier"]))
    return {"profile": name, **s["best"]}


def reliability_diagram(profiles: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    """The reliability diagram as a PNG: per profile, each bin's share of correct answers against its mean
    p(YES) (the diagonal is perfect calibration), and below, how many pairs fall in each bin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.4, 7.2), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    width = 1.0 / max(len(p["reliability"]["count"]) for p in profiles.values()) / (len(profiles) + 1)
    for k, (name, s) in enumerate(profiles.items()):
        rel = s["reliability"]
        xs = [x for x in rel["mean_p"] if x is not None]
        ys = [y for y in rel["positive_share"] if y is not None]
        top.plot(xs, ys, marker="o", label=f"{name} (Brier {s['brier']:.3f}, ECE {s['ece']:.3f})")
        lefts = np.asarray(rel["edges"][:-1]) + (k + 0.5) * width
        bottom.bar(lefts, rel["count"], width=width, align="edge", label=name)
    top.set_ylabel("share of answers labelled correct")
    top.set_xlim(0, 1)
    top.set_ylim(-0.02, 1.02)
    top.set_title(title)
    top.legend(loc="upper left", fontsize=8)
    bottom.set_xlabel("p(YES) of the reward's judge (bin mean)")
    bottom.set_ylabel("pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def calibrate_markdown(s: dict[str, Any], name: str) -> str:
    best = s["best"]
    lines = [f"### MediX reward calibration: `{name}`", ""]
    if best:
        b = s["profiles"][best["profile"]]
        lines.append(f"**Best: `{best['profile']}` with p(YES) ≥ {fmt(best['threshold'])}** (κ {fmt(best['kappa'])}, "
                     f"agreement {fmt(best['agreement'])}) on {b['n']} labelled pairs ({b['positives']} correct).")
    else:
        lines.append("**No profile scored any pair.**")
    lines += ["", "| profile | n | Brier | ECE | AUC | κ at p ≥ 0.5 | best p(YES) cut | κ | agreement | reward AUC | "
              "best reward cut | κ | failed |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p, e in s["profiles"].items():
        if not e.get("n"):
            lines.append(f"| {p} | 0 | — | — | — | — | — | — | — | — | — | — | {e['failed']} |")
            continue
        lines.append(f"| {p} | {e['n']} | {fmt(e['brier'])} | {fmt(e['ece'])} | {fmt(e['auc'])} | "
                     f"{fmt(e['at_half']['kappa'])} | {fmt(e['best']['threshold'])} | {fmt(e['best']['kappa'])} | "
                     f"{fmt(e['best']['agreement'])} | {fmt(e['reward_auc'])} | {fmt(e['reward_best']['threshold'])} | "
                     f"{fmt(e['reward_best']['kappa'])} | {e['failed']} |")
    lines += ["", f"Brier: mean (p − label)², 0 is perfect and 0.25 is a constant 0.5. ECE: the pairs-weighted mean "
              f"gap between mean p(YES) and the share labelled correct over {s['bins']} uniform bins. p(YES) is 1 "
              "for an exact match and 0 for an invalid answer (the reward's rules decide those). A cut: the verdict "
              "is YES when the score is at or above it; κ: Cohen's kappa of those verdicts with the labels."]
    notes = []
    if s["invalid_lines"]:
        notes.append(f"{s['invalid_lines']} invalid input lines skipped")
    if s["ties"]:
        notes.append(f"{s['ties']} pairs left out: their annotators split evenly")
    if s.get("report_lines"):
        notes.append(f"{s['report_lines']} report lines (0–5 labels) left out: p(YES) rates yes/no verdicts")
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


async def _rewards(lines: list[CalibrationLine], profiles: Sequence[str], *, url: str | None,
                   api_key: str | None, batch_size: int) -> dict[str, list[dict[str, Any]]]:
    """Each profile's /reward results of the pairs, in order (verdicts are shared across profiles by the
    service's cache: the judge is asked once per pair)."""
    items = [reward_item(line) for line in lines]
    out: dict[str, list[dict[str, Any]]] = {}
    async with AsyncMedixClient(url, api_key, max_items=batch_size) as client:
        for name in profiles:
            out[name] = [r.model_dump() for r in await client.reward(items, profile=name)]
    return out


def calibrate_command(*, input: Path, url: str | None, api_key: str | None, profiles: str, bins: int,
                      batch_size: int, output: Path | None, summary: Path | None, markdown: Path | None,
                      plot: Path | None) -> None:
    require("sklearn", "scikit-learn")
    if plot:
        require("matplotlib", "matplotlib (for --plot)")
    names = [p.strip() for p in profiles.split(",") if p.strip()]
    rows, invalid = read_predictions(input, warn, CalibrationLine)
    binary = [r for r in rows if r.rubric != "report"]
    lines = [r for r in binary if r.verdict() is not None]
    ties = len(binary) - len(lines)
    results = asyncio.run(_rewards(lines, names, url=url, api_key=api_key, batch_size=batch_size)) if lines else {
        n: [] for n in names}
    labels = [int(r.verdict() or 0) for r in lines]
    per_profile: dict[str, dict[str, Any]] = {}
    failed_total = 0
    for name in names:
        ps = [p_yes_of(r) for r in results[name]]
        ok = [i for i, p in enumerate(ps) if p is not None]
        failed = len(ps) - len(ok)
        failed_total += failed
        stats = (calibration_stats([labels[i] for i in ok], [float(ps[i] or 0) for i in ok],
                                   [float(results[name][i]["overall"]) for i in ok], bins) if ok else {"n": 0})
        per_profile[name] = {**stats, "failed": failed}
    s = {"input": str(input), "bins": bins, "profiles": per_profile, "best": recommend(per_profile),
         "invalid_lines": invalid, "ties": ties, "report_lines": len(rows) - len(binary), "failed": failed_total}
    text = calibrate_markdown(s, input.name)
    print(text, flush=True)
    if output:
        output.write_text("".join(json.dumps({"id": line.id, "label": labels[i], "profiles": {
            n: {"p_yes": p_yes_of(results[n][i]), "overall": results[n][i].get("overall"),
                "decided_by": (results[n][i].get("details") or {}).get("decided_by"),
                "error": results[n][i].get("error")} for n in names}}) + "\n" for i, line in enumerate(lines)))
    if summary:
        summary.write_text(json.dumps(s, indent=2))
    if markdown:
        markdown.write_text(text)
    scored = {n: e for n, e in per_profile.items() if e.get("n")}
    if plot and scored:
        reliability_diagram(scored, plot, f"Reliability of p(YES): {input.name}")
    if invalid or failed_total or not scored:
        warn(f"{invalid} invalid lines skipped; {failed_total} pair results failed")
        raise typer.Exit(EXIT_UNJUDGED)


# -- planning: how many items for a given interval -----------------------------------------------------------------
def planned_items(n: int, target: float, prevalence: float) -> tuple[list[int], list[int]]:
    """n items of two raters who both call `prevalence` of them positive and whose Cohen's kappa is about `target`
    (the 2x2 table with those margins, rounded to whole items)."""
    pe = prevalence ** 2 + (1 - prevalence) ** 2
    po = pe + target * (1 - pe)
    off = round(n * (1 - po) / 2)
    both = round(n * prevalence) - off
    none = n - both - 2 * off
    a = [1] * both + [1] * off + [0] * off + [0] * none
    b = [1] * both + [0] * off + [1] * off + [0] * none
    return a, b


def interval_width(n: int, target: float, prevalence: float = 0.5, confidence: float = CONFIDENCE,
                   resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float | None, float | None]:
    """The kappa of `planned_items(n, target, prevalence)` and the width of its bootstrap interval, as `agree`
    computes it (one task)."""
    a, b = planned_items(n, target, prevalence)
    ci = kappa_interval(a, b, [list(range(n))], labels=BINARY_LABELS, confidence=confidence, resamples=resamples,
                        seed=seed)
    return kappa(a, b, labels=BINARY_LABELS), (ci[1] - ci[0]) if ci else None
