"""`medix-judge`: CI evaluation with the service's /judge. From a dataset file to a score table in two commands.

    medix-judge generate --dataset data.jsonl --model-url http://host:8000/v1 --model NAME --output preds.jsonl
    medix-judge run --input preds.jsonl --output results.jsonl --min-score 0.5 --markdown summary.md
    medix-judge compare --baseline baseline/results.jsonl --candidate results.jsonl --max-drop 0.02
    medix-judge agree --input labelled.jsonl --output results.jsonl --min-kappa 0.4 --markdown agree.md
    medix-judge calibrate --input labelled.jsonl --plot reliability.png --markdown calibration.md

generate and run are resumable: ids already in --output are skipped, and results are appended, flushed and
synced (os.fsync) as they come; a last line cut off by a crash is repaired before anything is appended. Every
score carries a 95% interval; compare pairs two runs by id and gates on a paired interval (the statistics are in
clients/evaluation.py). agree and calibrate audit the judge itself against people's labels (clients/audit.py).
"""

from __future__ import annotations

import ast
import asyncio
import json
import math
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import httpx
import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clients.client import AsyncMedixClient, MedixError
from clients.datasets import append_jsonl, numbered_lines, open_jsonl_append, repair_tail
from clients.evaluation import CONFIDENCE, RESAMPLES, SEED, fmt, summarise
from clients.evaluation import compare as compare_runs
from clients.http import auth_headers

app = typer.Typer(help="CI evaluation with the MediX judge service.", no_args_is_help=True, add_completion=False)

EXIT_BELOW_MIN = 1
EXIT_UNJUDGED = 2
EXIT_REGRESSION = 1  # compare: the candidate is worse by more than --max-drop with 95% confidence
EXIT_UNPAIRED = 2  # compare: no id is scored in both runs

Row = TypeVar("Row")
Line = TypeVar("Line", bound=BaseModel)


def warn(msg: str) -> None:
    """A line on stderr, flushed at once (stdout carries the tables)."""
    print(msg, file=sys.stderr, flush=True)


class PredictionLine(BaseModel):
    model_config = ConfigDict(extra="ignore")
    id: str = Field(min_length=1)
    task: str = Field(min_length=1)
    question: str = ""
    reference: str = Field(min_length=1)
    prediction: str
    rubric: Literal["binary", "report"] | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) else v


def read_predictions(path: Path, warn: Callable[[str], None],
                     model: type[Line] = PredictionLine) -> tuple[list[Line], int]:  # type: ignore[assignment]
    """Valid lines in order (each read as `model`: `run`'s lines, or another model with an `id`, e.g. `agree`'s
    and `calibrate`'s), and how many lines were invalid (each reported with its number)."""
    valid: list[Line] = []
    seen: set[str] = set()
    invalid = 0
    for n, line in numbered_lines(path):
        try:
            row = model.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "line"
            torn = "" if line.endswith("\n") else (" (the last line, without its newline: a write cut off; rerun "
                                                    "`medix-judge generate` to complete it)")
            warn(f"{path}:{n}: invalid line, skipped: {where}: {first['msg']}{torn}")
            invalid += 1
            continue
        rid = row.id  # type: ignore[attr-defined]
        if rid in seen:
            warn(f"{path}:{n}: duplicate id {rid!r}, skipped")
            invalid += 1
            continue
        seen.add(rid)
        valid.append(row)
    return valid, invalid


def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """Records already in an output file, the last one per id (a line that is not JSON is ignored: its id is not
    done)."""
    done: dict[str, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "id" in rec:
                done[str(rec["id"])] = rec
    return done


def _resume(rows: list[Row], id_of: Callable[[Row], str], output: Path, retry_failed: bool = False,
            redo: Callable[[dict[str, Any]], bool] | None = None) -> list[Row]:
    """The rows still to do: ids not in `output` yet, with `retry_failed` those whose result there failed, and
    those whose result `redo` says to do again. A last line that a crash cut off is repaired first
    (`repair_tail`), so nothing is appended to it."""
    repaired = repair_tail(output)
    if repaired == "cut":
        warn(f"{output}: its last line was cut off by an interrupted write; removed (its id is done again)")
    elif repaired == "closed":
        warn(f"{output}: its last line had no newline; added")
    done = read_done(output)
    todo = [r for r in rows if id_of(r) not in done or (retry_failed and done[id_of(r)].get("score") is None)
            or (redo is not None and redo(done[id_of(r)]))]
    skipped = len(rows) - len(todo)
    if skipped:
        warn(f"resuming: {skipped} ids already in {output}")
    return todo


class Progress:
    """A rich progress bar on a terminal; plain lines (CI logs) otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done, self.start = total, label, 0, time.monotonic()
        self.tty = sys.stderr.isatty()
        self._bar: Any = None
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]} items/s"), TimeRemainingColumn(), transient=False)
            self._task = self._bar.add_task(label, total=total, rate="0.0")
            self._bar.start()

    def advance(self, n: int) -> None:
        self.done += n
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{rate:.1f}")
        else:
            eta = (self.total - self.done) / rate if rate else float("inf")
            print(f"{self.label}: {self.done}/{self.total} ({rate:.1f} items/s, ETA {eta:.0f} s)", file=sys.stderr,
                  flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def interval_text(low: float | None, high: float | None, method: str | None = None, signed: bool = False) -> str:
    """`[0.4231, 0.6912] (wilson)`, or an em dash when there is no interval."""
    if low is None or high is None:
        return "—"
    return f"[{fmt(low, signed=signed)}, {fmt(high, signed=signed)}]" + (f" ({method})" if method else "")


def markdown_table(summary: dict[str, Any], invalid: int, unjudged: int) -> str:
    level = f"{summary.get('confidence', CONFIDENCE):.0%}"
    lines = [f"| task | n | score | {level} CI | failed |", "| --- | ---: | ---: | ---: | ---: |"]
    for task, t in summary["tasks"].items():
        ci = interval_text(t.get("ci_low"), t.get("ci_high"), t.get("ci_method"))
        lines.append(f"| {task} | {t['n']} | {fmt(t['score'])} | {ci} | {t['failed']} |")
    ci = interval_text(summary.get("overall_ci_low"), summary.get("overall_ci_high"), summary.get("overall_ci_method"))
    lines.append(f"| **overall** | {sum(t['n'] for t in summary['tasks'].values())} | **{fmt(summary['overall'])}** | "
                 f"{ci} | {summary['failed']} |")
    lines.append("")
    lines.append("Overall = mean over tasks of each task's mean; failed items are left out of the means, not scored 0.")
    if invalid or unjudged:
        lines.append("")
        lines.append(f"{invalid} invalid input lines skipped; {unjudged} items left unjudged by errors.")
    return "\n".join(lines) + "\n"


async def _judge_batches(client: AsyncMedixClient, batches: list[list[PredictionLine]], rounds: int,
                         concurrency: int, output: Path, progress: Progress, warn: Callable[[str], None]) -> None:
    """Judge batches concurrently; append each batch's results as it lands. A failed batch writes nothing."""
    slots = asyncio.Semaphore(concurrency)
    with open_jsonl_append(output) as out:
        async def one(batch: list[PredictionLine]) -> None:
            async with slots:
                try:
                    results = await client.judge([b.model_dump(exclude_none=True) for b in batch], rounds=rounds)
                except MedixError as exc:
                    warn(f"batch of {len(batch)} starting at id {batch[0].id!r} failed: {exc}")
                    return
            append_jsonl(out, (r.model_dump(exclude_none=True) for r in results))
            progress.advance(len(batch))

        async with asyncio.TaskGroup() as group:  # an unexpected error stops every batch, as a kill would
            for b in batches:
                group.create_task(one(b))


@app.command()
def run(
    input: Annotated[Path, typer.Option("--input", exists=True, dir_okay=False, help="Predictions JSONL.")],
    output: Annotated[Path, typer.Option(help="Results JSONL; appended to, and ids in it are skipped.")],
    url: Annotated[str | None, typer.Option(help="Service URL (default MEDIX_URL or http://127.0.0.1:8000).")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key (default MEDIX_API_KEY).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Items per /judge request.")] = 32,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 4,
    rounds: Annotated[int, typer.Option(min=1, max=7, help="Judge rounds per item.")] = 3,
    min_score: Annotated[float | None, typer.Option(help="Exit 1 when the overall score is under this.")] = None,
    summary: Annotated[Path | None, typer.Option(help="Write the summary JSON here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the summary table as Markdown here.")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Judge again ids whose earlier result failed.")] = False,
) -> None:
    """Judge predictions; print a per-task table. Exit 2 when items were left unjudged, 1 under --min-score."""
    rows, invalid = read_predictions(input, warn)
    todo = _resume(rows, lambda r: r.id, output, retry_failed)
    _judge_all(todo, url=url, api_key=api_key, batch_size=batch_size, concurrency=concurrency, rounds=rounds,
               output=output)
    s, judged = _summarise_output(rows, output, invalid)
    _print_run_table(s, judged, input.name)
    unjudged = s["unjudged"]  # batch errors of this run and of earlier ones
    if invalid or unjudged:
        warn(f"{invalid} invalid lines skipped; {unjudged} items left unjudged")
    if summary:
        summary.write_text(json.dumps(s, indent=2))
    if markdown:
        markdown.write_text(markdown_table(s, invalid, unjudged))
    _run_gate(s, invalid, unjudged, min_score)


def _judge_all(todo: list[PredictionLine], *, url: str | None, api_key: str | None, batch_size: int,
               concurrency: int, rounds: int, output: Path,
               client_factory: Callable[..., AsyncMedixClient] = AsyncMedixClient) -> None:
    """Judge `todo` in batches of `batch_size`, appending the results to `output`, with a progress bar.
    `client_factory(url, api_key, max_items=...)` makes the client (`agree --probe`: one that asks probes)."""
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    progress = Progress(len(todo), "judging")

    async def go() -> None:
        async with client_factory(url, api_key, max_items=batch_size) as client:
            await _judge_batches(client, batches, rounds, concurrency, output, progress, warn)

    try:
        if batches:
            asyncio.run(go())
    finally:
        progress.close()


def _summarise_output(rows: list[PredictionLine], output: Path, invalid: int) -> tuple[dict[str, Any], int]:
    """The summary of the input's results now in `output` (this run's and earlier runs'), with `invalid_lines`
    and `unjudged` (input rows without a result), and how many rows have a result."""
    final = read_done(output)
    records = [final[r.id] for r in rows if r.id in final]
    s = summarise(records)
    s.update(invalid_lines=invalid, unjudged=len(rows) - len(records))
    return s, len(records)


def _print_run_table(s: dict[str, Any], judged: int, name: str) -> None:
    """The per-task table: n, score, interval and failed items, and the overall row in bold."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MediX judge: {name}")
    for col, just in (("task", "left"), ("n", "right"), ("score", "right"), (f"{s['confidence']:.0%} CI", "right"),
                      ("failed", "right")):
        table.add_column(col, justify=just)
    for task, t in s["tasks"].items():
        table.add_row(task, str(t["n"]), fmt(t["score"]), interval_text(t["ci_low"], t["ci_high"], t["ci_method"]),
                      str(t["failed"]))
    table.add_row("overall", str(judged), fmt(s["overall"]),
                  interval_text(s["overall_ci_low"], s["overall_ci_high"], s["overall_ci_method"]),
                  str(s["failed"]), style="bold")
    Console(width=100).print(table)


def _run_gate(s: dict[str, Any], invalid: int, unjudged: int, min_score: float | None) -> None:
    """Exit 2 when lines were invalid or items unjudged or failed; 1 when the overall score is under min_score."""
    if invalid or unjudged or s["failed"]:
        raise typer.Exit(EXIT_UNJUDGED)
    if min_score is not None and (s["overall"] is None or s["overall"] < min_score):
        warn(f"overall score {s['overall']} is under --min-score {min_score}")
        raise typer.Exit(EXIT_BELOW_MIN)


def read_results(path: Path, warn: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """A results file as id -> record, the last record per id (as `run --retry-failed` appends); lines that are
    not a result (no id or task, a score that is neither a number nor null) are reported with their number."""
    found: dict[str, dict[str, Any]] = {}
    for n, line in numbered_lines(path):
        try:
            rec = json.loads(line)
        except ValueError:
            warn(f"{path}:{n}: not JSON, skipped")
            continue
        if not _is_result(rec):
            warn(f"{path}:{n}: not a result (id, task, score null or in [0, 1]), skipped")
            continue
        found[str(rec["id"])] = rec
    return found


def _is_result(rec: Any) -> bool:
    """An object with an id, a task, and a score that is null (failed) or a number in [0, 1]."""
    if not isinstance(rec, dict) or rec.get("id") is None or not isinstance(rec.get("task"), str):
        return False
    score = rec.get("score")
    if score is None:
        return True
    # NaN (which json accepts) would silence the gate.
    return not isinstance(score, bool) and isinstance(score, int | float) and math.isfinite(score) and 0 <= score <= 1


def _ids(ids: list[str], limit: int) -> str:
    shown = ", ".join(ids[:limit])
    return shown + (f", … (+{len(ids) - limit} more)" if len(ids) > limit else "")


def compare_notes(c: dict[str, Any], limit: int) -> list[str]:
    """What was left out of the pairing, one line per kind (the first `limit` ids of each)."""
    notes = []
    for key, what in (("only_in_baseline", "only in the baseline"), ("only_in_candidate", "only in the candidate"),
                      ("failed_in_baseline", "failed (score null) in the baseline"),
                      ("failed_in_candidate", "failed (score null) in the candidate")):
        if c[key]:
            notes.append(f"{len(c[key])} ids {what}, left out of the paired difference: {_ids(c[key], limit)}")
    if c["mismatched"]:
        ids = [m["id"] for m in c["mismatched"]]
        notes.append(f"{len(ids)} ids with a different task or rubric in the two runs, left out: {_ids(ids, limit)}")
    return notes


def verdict_line(c: dict[str, Any], gated: bool) -> str:
    """The verdict in one line: what, the overall difference with its interval and p, and the gate."""
    o = c["overall"]
    level = f"{c['confidence']:.0%}"
    drop = c["max_drop"]
    explain = {"regression": f"the candidate is worse by more than {drop:g} with {level} confidence",
               "within tolerance": f"worse with {level} confidence, but not by more than {drop:g}",
               "improvement": f"the candidate is better with {level} confidence",
               "no significant change": f"the {level} interval includes no change",
               "not enough pairs": "too few pairs for an interval"}[o["verdict"]]
    gate = "" if gated else " (report only: no --max-drop)"
    return (f"**Verdict: {o['verdict']}**{gate}: overall Δ {fmt(o['diff'], signed=True)} "
            f"({level} CI {fmt(o['ci_low'], signed=True)} to {fmt(o['ci_high'], signed=True)}, p = {fmt(o['p_value'])}"
            f", {o['pairs']} pairs); {explain}.")


def compare_markdown(c: dict[str, Any], baseline: str, candidate: str, gated: bool, limit: int) -> str:
    level = f"{c['confidence']:.0%}"
    lines = [f"### MediX judge: `{candidate}` against `{baseline}`", "", verdict_line(c, gated), "",
             f"| task | pairs | baseline | candidate | Δ | {level} CI | p | verdict |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    rows = [*c["tasks"].items(), ("**overall**", c["overall"])]
    for task, t in rows:
        lines.append(f"| {task} | {t['pairs']} | {fmt(t['baseline'])} | {fmt(t['candidate'])} | "
                     f"{fmt(t['diff'], signed=True)} | {interval_text(t['ci_low'], t['ci_high'], signed=True)} | "
                     f"{fmt(t['p_value'])} | {t['verdict']} |")
    lines += ["", f"Δ = candidate − baseline on the items scored in both runs; overall = mean over tasks. "
              f"Interval: {c['interval_method']} ({c['resamples']} resamples, seed {c['seed']}). "
              f"p: {c['p_value_method']}."]
    notes = compare_notes(c, limit)
    if notes:
        lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


@app.command()
def compare(
    baseline: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Results JSONL of the reference run.")],
    candidate: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Results JSONL of the run tested.")],
    max_drop: Annotated[float | None, typer.Option(
        min=0.0, help="Gate: exit 1 when the upper end of the interval of candidate − baseline (overall) is below "
                      "−X, i.e. the candidate is worse by more than X at the --confidence level (95%). Without it: "
                      "report only.")
    ] = None,
    each_task: Annotated[bool, typer.Option(
        help="With --max-drop, also exit 1 when any single task regresses (one test per task: more false alarms).")
    ] = False,
    markdown: Annotated[Path | None, typer.Option(help="Write the comparison as Markdown (a CI job summary).")] = None,
    summary: Annotated[Path | None, typer.Option(help="Write the comparison JSON here (every unpaired id listed).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the resampling; same seed, same numbers.")] = SEED,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples and sign flips.")] = RESAMPLES,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Level of the intervals.")] = CONFIDENCE,
    show_ids: Annotated[int, typer.Option(min=0, help="Unpaired ids shown per kind (the JSON lists all).")] = 10,
) -> None:
    """Compare two `run` results files item by item: per task and overall, Δ = candidate − baseline with a
    paired bootstrap interval and a p-value.

    Items are paired by id. Ids in one run only, ids failed (score null) in either run, and ids whose task
    differs between the runs are counted and listed, and left out of the paired difference (a different
    task is also reported as an error line). Overall = mean over tasks of each task's mean difference.

    Interval: percentile bootstrap, pairs resampled within each task (scipy.stats.bootstrap). p-value:
    two-sided paired sign-flip permutation test of "no difference" (each pair's two scores exchangeable;
    scipy.stats.permutation_test, each pair's sign flipped at random, exact for few pairs). Seeded: same
    files, same --seed and --resamples, same numbers.

    Verdicts: regression (interval entirely below −max-drop), within tolerance (below 0, not below
    −max-drop), improvement (entirely above 0), no significant change.

    Exit codes: 0 no regression (or no --max-drop); 1 regression of the overall score (or of any task with
    --each-task) beyond --max-drop; 2 the runs cannot be paired (no id scored in both) or a file is missing.
    """
    c = compare_runs(read_results(baseline, warn), read_results(candidate, warn),
                     max_drop=max_drop or 0.0, confidence=confidence, resamples=resamples, seed=seed)
    _warn_mismatched(c, baseline, candidate)
    if summary:
        summary.write_text(json.dumps(c, indent=2))
    if not c["pairable"]:
        _warn_unpairable(c, baseline, candidate, show_ids)
        raise typer.Exit(EXIT_UNPAIRED)
    gated = max_drop is not None
    _print_comparison(c, baseline.name, candidate.name, confidence=confidence, gated=gated, show_ids=show_ids)
    if markdown:
        markdown.write_text(compare_markdown(c, baseline.name, candidate.name, gated, show_ids))
    if gated and _regressed(c, each_task):
        raise typer.Exit(EXIT_REGRESSION)


def _warn_mismatched(c: dict[str, Any], baseline: Path, candidate: Path) -> None:
    """An error line per id whose task or rubric differs between the two runs."""
    for m in c["mismatched"]:
        warn(f"error: id {m['id']!r}: task {m['baseline_task']!r} rubric {m['baseline_rubric']!r} in {baseline}, "
             f"task {m['candidate_task']!r} rubric {m['candidate_rubric']!r} in {candidate}; left out")


def _warn_unpairable(c: dict[str, Any], baseline: Path, candidate: Path, show_ids: int) -> None:
    """Why nothing could be paired: the ids in each run, and what was left out of the pairing."""
    warn(f"cannot compare: no id is scored in both {baseline} ({c['baseline_items']} ids) and {candidate} "
         f"({c['candidate_items']} ids)")
    for note in compare_notes(c, show_ids):
        warn(note)


def _print_comparison(c: dict[str, Any], baseline: str, candidate: str, *, confidence: float, gated: bool,
                      show_ids: int) -> None:
    """The per-task table of differences, the notes on what was left out, and the verdict line."""
    from rich.console import Console
    from rich.table import Table

    level = f"{confidence:.0%}"
    table = Table(title=f"MediX judge: {candidate} against {baseline}")
    for col in ("task", "pairs", "baseline", "candidate", "Δ", f"{level} CI", "p", "verdict"):
        table.add_column(col, justify="left" if col in ("task", "verdict") else "right")
    for task, t in [*c["tasks"].items(), ("overall", c["overall"])]:
        table.add_row(task, str(t["pairs"]), fmt(t["baseline"]), fmt(t["candidate"]), fmt(t["diff"], signed=True),
                      interval_text(t["ci_low"], t["ci_high"], signed=True), fmt(t["p_value"]), t["verdict"],
                      style="bold" if task == "overall" else None)
    console = Console(width=120)
    console.print(table)
    for note in compare_notes(c, show_ids):
        console.print(note, markup=False, highlight=False)
    console.print(verdict_line(c, gated).replace("**", ""), markup=False, highlight=False)


def _regressed(c: dict[str, Any], each_task: bool) -> bool:
    """The overall verdict is a regression, or with `each_task` any task's is."""
    return c["verdict"] == "regression" or (each_task and any(
        t["verdict"] == "regression" for t in c["tasks"].values()))


def question_text(row: dict[str, Any], question_field: str, options_field: str) -> str:
    """The question, with its options listed when the row has them (dict, list, or a dict written as text)."""
    q = str(row.get(question_field, ""))
    options = row.get(options_field)
    if isinstance(options, str):
        try:
            options = ast.literal_eval(options)  # a literal only; nothing is executed
        except (ValueError, SyntaxError):
            options = None
    if isinstance(options, dict) and options:
        q += "\n\nOptions:\n" + "\n".join(f"{k}. {v}" for k, v in options.items())
    elif isinstance(options, list) and options:
        q += "\n\nOptions: " + ", ".join(str(o) for o in options)
    return q


@app.command()
def generate(
    dataset: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Questions JSONL.")],
    model_url: Annotated[str, typer.Option(help="OpenAI-compatible base URL of the model under test (…/v1).")],
    model: Annotated[str, typer.Option(help="Model name on that server.")],
    output: Annotated[Path, typer.Option(help="Predictions JSONL (the input of `run`); resumable.")],
    api_key: Annotated[str | None, typer.Option(help="Key for the model server.")] = None,
    concurrency: Annotated[int, typer.Option(min=1)] = 8,
    max_tokens: Annotated[int, typer.Option(min=1)] = 256,
    limit: Annotated[int | None, typer.Option(help="Only the first N rows.")] = None,
    id_field: str = "id",
    question_field: str = "question",
    answer_field: str = "answer",
    task_field: str = "dataset",
    options_field: str = "options",
    task: Annotated[str | None, typer.Option(help="One task name for every row (else --task-field).")] = None,
    system: Annotated[str, typer.Option(help="System prompt for the model under test.")] = (
        "You are a medical expert. Answer the question concisely; for multiple choice, give the option."),
) -> None:
    """Ask the model under test each question; write id, task, question, reference, prediction."""
    rows = _read_questions(dataset, limit=limit, id_field=id_field, question_field=question_field,
                           answer_field=answer_field, task_field=task_field, options_field=options_field, task=task)
    todo = _resume(rows, lambda r: r["id"], output)
    failed = _generate_all(todo, model_url=model_url, api_key=api_key, model=model, system=system,
                           max_tokens=max_tokens, concurrency=concurrency, output=output)
    if failed:
        warn(f"{failed} rows failed; rerun the same command to complete them")
        raise typer.Exit(EXIT_UNJUDGED)


def _read_questions(dataset: Path, *, limit: int | None, id_field: str, question_field: str, answer_field: str,
                    task_field: str, options_field: str, task: str | None) -> list[dict[str, str]]:
    """The dataset's rows as id, task, question (with its options) and reference, the first `limit` of them; an
    invalid row is reported with its line number and skipped."""
    rows = []
    for n, line in numbered_lines(dataset):
        try:
            row = json.loads(line)
            rows.append({"id": str(row[id_field]), "task": task or str(row[task_field]),
                         "question": question_text(row, question_field, options_field),
                         "reference": str(row[answer_field])})
        except (ValueError, KeyError) as exc:
            warn(f"{dataset}:{n}: invalid row, skipped: {exc!r}")
        if limit and len(rows) >= limit:
            break
    return rows


def _generate_all(todo: list[dict[str, str]], *, model_url: str, api_key: str | None, model: str, system: str,
                  max_tokens: int, concurrency: int, output: Path) -> int:
    """Ask the model for each row's prediction with a progress bar; returns how many rows failed."""
    progress = Progress(len(todo), "generating")
    try:
        return asyncio.run(_generate_rows(todo, model_url=model_url, api_key=api_key, model=model, system=system,
                                          max_tokens=max_tokens, concurrency=concurrency, output=output,
                                          progress=progress))
    finally:
        progress.close()


async def _generate_rows(todo: list[dict[str, str]], *, model_url: str, api_key: str | None, model: str,
                         system: str, max_tokens: int, concurrency: int, output: Path, progress: Progress) -> int:
    """Ask the model for each row's prediction, `concurrency` at once; each answered row is appended to `output`
    as it lands. Returns how many rows failed (each reported)."""
    failed = 0
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=model_url.rstrip("/"), headers=auth_headers(api_key), timeout=600) as http:
        with open_jsonl_append(output) as out:
            async def one(row: dict[str, str]) -> None:
                nonlocal failed
                async with slots:
                    try:
                        text = await _prediction(http, _chat_request(model, system, row["question"], max_tokens))
                    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                        warn(f"id {row['id']}: generation failed: {exc!r}")
                        failed += 1
                        return
                append_jsonl(out, [{**row, "prediction": text}])
                progress.advance(1)

            async with asyncio.TaskGroup() as group:  # an unexpected error stops every row, as a kill would
                for r in todo:
                    group.create_task(one(r))
    return failed


def _chat_request(model: str, system: str, question: str, max_tokens: int) -> dict[str, Any]:
    """A greedy chat completion of one question under the system prompt."""
    return {"model": model, "max_tokens": max_tokens, "temperature": 0,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}


async def _prediction(http: httpx.AsyncClient, body: dict[str, Any]) -> str:
    """The model's reply text ("" for a null content); an HTTP error status raises."""
    resp = await http.post("/chat/completions", json=body)
    resp.raise_for_status()
    return resp.json()["choices"][0]["message"]["content"] or ""


# -- auditing the judge (the logic is in clients/audit.py, imported when a command runs) ---------------------------
class ProbeKind(StrEnum):
    """The bias probes /judge can ask (its request field `probe`)."""

    swap = "swap"


@app.command()
def agree(
    input: Annotated[Path, typer.Option("--input", exists=True, dir_okay=False, help=(
        "`run`'s input with a `human` field per line: a label (binary 0/1, report 0-5), a list of labels (one per "
        "annotator, the same position the same person on every line) or an object annotator -> label."))],
    output: Annotated[Path, typer.Option(help="Results JSONL (as `run` writes); appended to, and ids in it are "
                                              "skipped: a `run` results file is read as it is.")],
    url: Annotated[str | None, typer.Option(help="Service URL (default MEDIX_URL or http://127.0.0.1:8000).")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key (default MEDIX_API_KEY).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Items per /judge request.")] = 32,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight.")] = 4,
    rounds: Annotated[int, typer.Option(min=1, max=7, help="Judge rounds per item.")] = 3,
    min_kappa: Annotated[float | None, typer.Option(help=(
        "Gate: exit 1 when the lower end of the overall kappa interval (binary items; the weighted kappa's for "
        "report items) is under this."))] = None,
    summary: Annotated[Path | None, typer.Option(help="Write the agreement JSON here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the agreement report as Markdown here.")] = None,
    probe: Annotated[ProbeKind | None, typer.Option(help=(
        "Bias probe: ask each item again with prediction and reference swapped in the judge's prompt and report "
        "how often the verdict flips (ids judged earlier without it are asked again)."))] = None,
    retry_failed: Annotated[bool, typer.Option(help="Judge again ids whose earlier result failed.")] = False,
    show_items: Annotated[int, typer.Option(min=0, help="Items listed where judge and people disagree most.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the resampling; same seed, same numbers.")] = SEED,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples of each interval.")] = 1000,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Level of the intervals.")] = CONFIDENCE,
) -> None:
    """Judge items that people labelled (or read their results) and report how well the judge agrees with them:
    per task and overall, Cohen's kappa (binary) or the quadratic-weighted kappa and Spearman's rho (report),
    each with a bootstrap interval, raw agreement, the confusion matrix, inter-annotator agreement beside the
    judge's, the items of largest disagreement and, with --probe, the verdicts' flip rate. Resumes like `run`.

    Exit codes: 0 passed (or no --min-kappa); 1 the lower end of the overall kappa interval is under
    --min-kappa; 2 incomplete (invalid lines or labels, items unjudged or failed: rerun to complete).
    """
    from clients.audit import agree_command

    agree_command(input=input, output=output, url=url, api_key=api_key, batch_size=batch_size,
                  concurrency=concurrency, rounds=rounds, min_kappa=min_kappa, summary=summary, markdown=markdown,
                  probe=probe.value if probe else None, retry_failed=retry_failed, show_items=show_items,
                  seed=seed, resamples=resamples, confidence=confidence)


@app.command()
def calibrate(
    input: Annotated[Path, typer.Option("--input", exists=True, dir_okay=False, help=(
        "Labelled pairs JSONL: id, answer (or prediction), reference, optional modality and question, and label "
        "(1 correct, 0 not; or `human`, several annotators' labels, their majority)."))],
    url: Annotated[str | None, typer.Option(help="Service URL (default MEDIX_URL or http://127.0.0.1:8000).")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key (default MEDIX_API_KEY).")] = None,
    profiles: Annotated[str, typer.Option(help="Reward profiles to compare, comma-separated.")] = (
        "medix-r1,medix-r1-soft,medix-r1-strict"),
    bins: Annotated[int, typer.Option(min=2, max=50, help="Uniform bins of p(YES) for the ECE and the diagram.")] = 10,
    batch_size: Annotated[int, typer.Option(min=1, help="Items per /reward request.")] = 64,
    output: Annotated[Path | None, typer.Option(help="Write each pair's p(YES) and reward per profile (JSONL).")
    ] = None,
    summary: Annotated[Path | None, typer.Option(help="Write the calibration JSON here.")] = None,
    markdown: Annotated[Path | None, typer.Option(help="Write the calibration table as Markdown here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the reliability diagram here (PNG; needs matplotlib).")
    ] = None,
) -> None:
    """Score labelled (answer, reference) pairs with /reward under each profile and report how well p(YES) is
    calibrated (Brier score, expected calibration error, reliability diagram) and which profile and p(YES)
    threshold agree best with the labels. Exit 2 when lines were invalid or pairs failed."""
    from clients.audit import calibrate_command

    calibrate_command(input=input, url=url, api_key=api_key, profiles=profiles, bins=bins, batch_size=batch_size,
                      output=output, summary=summary, markdown=markdown, plot=plot)


if __name__ == "__main__":
    app()
