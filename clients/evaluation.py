"""Statistics of evaluation results: summaries with 95% intervals, and paired comparisons of two runs.

Pure functions of result records (`{"id", "task", "rubric", "score", ...}`, score in [0, 1] or None when the
item failed). Nothing here imports the service: `medix-judge` uses this module, and the service's /judge
evaluator imports `summarise` from here (the server may import the client package, never the reverse).

The intervals:
- a task of binary items (scores 0/1): the Wilson score interval (`scipy.stats.binomtest(...).proportion_ci`);
- a task with report items (mean vote / 5): a percentile bootstrap of the mean (`scipy.stats.bootstrap`);
- the overall score, the mean over tasks of each task's mean: a stratified percentile bootstrap, items
  resampled within each task (`scipy.stats.bootstrap` with one sample per task, resampled independently).

A comparison pairs two runs by id and works on the per-item differences d = candidate - baseline:
- the interval of a task's (and the overall) difference: a paired percentile bootstrap of the differences,
  pairs resampled within each task (`scipy.stats.bootstrap`, one sample per task, as for the overall score);
- the p-value: a two-sided paired sign-flip permutation test of H0 "in each pair the two scores are
  exchangeable" (`scipy.stats.permutation_test` on the differences with `permutation_type="samples"`: the
  sign of each d is flipped at random; exact when there are few pairs).
Failed items (score None) are left out of every mean and counted; they never count as 0.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0
_CELLS = 2_000_000  # elements per vectorised resampling chunk: bounds memory whatever the number of items

P_VALUE_METHOD = ("two-sided paired sign-flip permutation test (H0: baseline and candidate scores exchangeable "
                  "within each pair; scipy.stats.permutation_test, exact for few pairs)")
DIFF_INTERVAL_METHOD = "paired percentile bootstrap, pairs resampled within each task"


# -- intervals of one run's scores ------------------------------------------------------------------------------
def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion."""
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _seeded(func: Callable[..., Any], seed: int) -> dict[str, Any]:
    """scipy's keyword for a seeded Generator: `rng` from 1.15, `random_state` before."""
    gen = np.random.default_rng(seed)
    return {"rng": gen} if "rng" in inspect.signature(func).parameters else {"random_state": gen}


def bootstrap_interval(samples: Sequence[Sequence[float]], confidence: float = CONFIDENCE,
                       resamples: int = RESAMPLES, seed: int = SEED) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean over samples of each sample's mean (one sample: its mean).

    Each sample is resampled on its own (a stratified bootstrap). A sample of one value has nothing to
    resample and enters as a constant; None when no sample has two values or more.
    """
    from scipy.stats import bootstrap

    arrays = [np.asarray(s, dtype=float) for s in samples if len(s)]
    varying = [a for a in arrays if a.size >= 2]
    if not varying:
        return None
    constant = sum(float(a[0]) for a in arrays if a.size == 1)
    k = len(arrays)

    def mean_of_means(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        return (sum(np.mean(r, axis=axis) for r in resampled) + constant) / k

    if all(np.all(a == a[0]) for a in varying):  # nothing varies: every replicate is the point estimate
        point = float(mean_of_means(*varying))
        return point, point
    res = bootstrap(tuple(varying), mean_of_means, n_resamples=resamples, confidence_level=confidence,
                    method="percentile", vectorized=True, batch=max(1, _CELLS // sum(a.size for a in varying)),
                    **_seeded(bootstrap, seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _is_binary(records: list[dict[str, Any]]) -> bool:
    """Binary when no judged record says `report` and every score is 0 or 1."""
    return all(r.get("rubric", "binary") != "report" and float(r["score"]) in (0.0, 1.0) for r in records)


def summarise(results: Iterable[dict[str, Any]], *, intervals: bool = True, confidence: float = CONFIDENCE,
              resamples: int = RESAMPLES, seed: int = SEED) -> dict[str, Any]:
    """Per task n, mean score over judged items and failed count; overall = mean over tasks with a score.

    With `intervals`, each task also carries `ci_low`, `ci_high` and `ci_method` (`wilson` for binary tasks,
    `bootstrap` for the others, None when one report item leaves nothing to resample), and the summary
    `confidence` and `overall_ci_low`, `overall_ci_high`, `overall_ci_method` (`stratified-bootstrap`).
    Failed items (score None) are counted apart, never scored 0.
    """
    judged: dict[str, list[dict[str, Any]]] = defaultdict(list)
    failed: dict[str, int] = defaultdict(int)
    for r in results:
        if r.get("score") is None:
            failed[r["task"]] += 1
            judged.setdefault(r["task"], [])
        else:
            judged[r["task"]].append(r)
    tasks: dict[str, dict[str, Any]] = {}
    for t, recs in sorted(judged.items()):
        scores = [float(r["score"]) for r in recs]
        entry: dict[str, Any] = {"n": len(recs) + failed[t], "judged": len(recs), "failed": failed[t],
                                 "score": sum(scores) / len(scores) if scores else None}
        if intervals:
            ci: tuple[float, float] | None = None
            method = None
            if scores and _is_binary(recs):
                ci, method = wilson_interval(round(sum(scores)), len(scores), confidence), "wilson"
            elif scores:
                ci = bootstrap_interval([scores], confidence, resamples, seed)
                method = "bootstrap" if ci else None
            entry.update(ci_low=ci[0] if ci else None, ci_high=ci[1] if ci else None, ci_method=method)
        tasks[t] = entry
    scored = [t["score"] for t in tasks.values() if t["score"] is not None]
    summary: dict[str, Any] = {"tasks": tasks, "overall": sum(scored) / len(scored) if scored else None,
                               "failed": sum(failed.values())}
    if intervals:
        ci = bootstrap_interval([[float(r["score"]) for r in recs] for _, recs in sorted(judged.items())],
                                confidence, resamples, seed)
        summary.update(confidence=confidence, overall_ci_low=ci[0] if ci else None,
                       overall_ci_high=ci[1] if ci else None, overall_ci_method="stratified-bootstrap" if ci else None)
    return summary


# -- comparing two runs -----------------------------------------------------------------------------------------
def verdict(ci_low: float | None, ci_high: float | None, max_drop: float, p_value: float | None = None,
            confidence: float = CONFIDENCE) -> str:
    """`regression` when the whole interval of candidate - baseline lies below -max_drop; `improvement` when
    it lies above 0; `within tolerance` when below 0 but not below -max_drop; else `no significant change`.

    A direction is called only when the sign-flip test agrees (p < 1 - confidence): with very few discordant
    pairs (a task of one pair, or a few that all moved the same way) the bootstrap interval collapses onto
    the observed difference while the permutation test stays valid.
    """
    if ci_low is None or ci_high is None or not (math.isfinite(ci_low) and math.isfinite(ci_high)):
        return "not enough pairs"
    if p_value is not None and not p_value < 1.0 - confidence:
        return "no significant change"
    if ci_high < -max_drop:
        return "regression"
    if ci_low > 0:
        return "improvement"
    if ci_high < 0:
        return "within tolerance"
    return "no significant change"


def sign_flip_p_value(diffs: np.ndarray, weights: np.ndarray, resamples: int = RESAMPLES,
                      seed: int = SEED) -> float:
    """Two-sided p-value of `sum(weights * diffs)` under random sign flips of each difference (scipy's
    `permutation_test` on one sample with `permutation_type="samples"`; exact when 2^n <= resamples)."""
    from scipy.stats import permutation_test

    if diffs.size < 2 or not np.any(diffs):  # one pair, or none moved: every flip is as extreme as observed
        return 1.0

    def weighted(x: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum(x * weights, axis=axis)

    res = permutation_test((diffs,), weighted, permutation_type="samples", n_resamples=resamples,
                           alternative="two-sided", vectorized=True, batch=max(1, _CELLS // diffs.size),
                           **_seeded(permutation_test, seed))
    return float(res.pvalue)


def paired_statistics(diffs: Sequence[Sequence[float]], confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                      seed: int = SEED) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per task and overall: the mean difference, its paired bootstrap interval and sign-flip p-value.

    `diffs` holds one array of per-pair differences (candidate - baseline) per task. The overall difference
    is the mean of the tasks' mean differences (each task weighs the same, as in `summarise`); its bootstrap
    resamples pairs within each task (stratified, `bootstrap_interval`) and its sign flips are those of every
    pair, each weighted by its share of the overall. Deterministic for a given seed.
    """
    arrays = [np.asarray(d, dtype=float) for d in diffs]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("every task needs at least one pair")
    per_task = []
    for a in arrays:
        ci = bootstrap_interval([a], confidence, resamples, seed) if a.size >= 2 else None
        per_task.append({"pairs": int(a.size), "diff": float(a.mean()), "ci_low": ci[0] if ci else None,
                         "ci_high": ci[1] if ci else None,
                         "p_value": sign_flip_p_value(a, np.full(a.size, 1.0 / a.size), resamples, seed)})
    every = np.concatenate(arrays)
    weights = np.concatenate([np.full(a.size, 1.0 / (a.size * len(arrays))) for a in arrays])
    ci = bootstrap_interval(arrays, confidence, resamples, seed)
    whole = {"pairs": int(every.size), "diff": float(np.mean([a.mean() for a in arrays])),
             "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None,
             "p_value": sign_flip_p_value(every, weights, resamples, seed)}
    return per_task, whole


def compare(baseline: Mapping[str, dict[str, Any]], candidate: Mapping[str, dict[str, Any]], *,
            max_drop: float = 0.0, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
            seed: int = SEED) -> dict[str, Any]:
    """Pair two runs' results (id -> record) and compare them per task and overall.

    Ids in one run only, ids whose task (or rubric) differs between the runs, and ids that failed in either
    run are counted and listed, and left out of the paired difference. `pairable` is False when no id is
    scored in both runs (then there are no statistics).
    """
    only_baseline = sorted(set(baseline) - set(candidate))
    only_candidate = sorted(set(candidate) - set(baseline))
    mismatched: list[dict[str, Any]] = []
    failed_baseline: list[str] = []
    failed_candidate: list[str] = []
    pairs: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for i in sorted(set(baseline) & set(candidate)):
        b, c = baseline[i], candidate[i]
        rb, rc = b.get("rubric"), c.get("rubric")
        if b.get("task") != c.get("task") or (rb is not None and rc is not None and rb != rc):
            mismatched.append({"id": i, "baseline_task": b.get("task"), "candidate_task": c.get("task"),
                               "baseline_rubric": rb, "candidate_rubric": rc})
            continue
        if b.get("score") is None:
            failed_baseline.append(i)
        if c.get("score") is None:
            failed_candidate.append(i)
        if b.get("score") is not None and c.get("score") is not None:
            pairs[str(b["task"])].append((i, float(b["score"]), float(c["score"])))
    out: dict[str, Any] = {
        "confidence": confidence, "resamples": resamples, "seed": seed, "max_drop": max_drop,
        "interval_method": DIFF_INTERVAL_METHOD, "p_value_method": P_VALUE_METHOD,
        "baseline_items": len(baseline), "candidate_items": len(candidate),
        "only_in_baseline": only_baseline, "only_in_candidate": only_candidate, "mismatched": mismatched,
        "failed_in_baseline": failed_baseline, "failed_in_candidate": failed_candidate,
        "pairable": bool(pairs), "tasks": {}, "overall": None, "verdict": None,
    }
    if not pairs:
        return out
    names = sorted(pairs)
    per_task, whole = paired_statistics([[c - b for _, b, c in pairs[t]] for t in names], confidence, resamples, seed)
    for t, stats in zip(names, per_task, strict=True):
        base = [b for _, b, _ in pairs[t]]
        cand = [c for _, _, c in pairs[t]]
        out["tasks"][t] = {"baseline": sum(base) / len(base), "candidate": sum(cand) / len(cand), **stats,
                           "verdict": verdict(stats["ci_low"], stats["ci_high"], max_drop, stats["p_value"],
                                              confidence)}
    whole.update(baseline=sum(v["baseline"] for v in out["tasks"].values()) / len(names),
                 candidate=sum(v["candidate"] for v in out["tasks"].values()) / len(names),
                 verdict=verdict(whole["ci_low"], whole["ci_high"], max_drop, whole["p_value"], confidence))
    out["overall"] = whole
    out["verdict"] = whole["verdict"]
    return out


def fmt(x: float | None, digits: int = 4, signed: bool = False) -> str:
    """A number for a table; an em dash for None or NaN."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
