"""`medix-judge`: CI evaluation with the service's /judge. From a dataset file to a score table in two commands.

    medix-judge generate --dataset data.jsonl --model-url http://host:8000/v1 --model NAME --output preds.jsonl
    medix-judge run --input preds.jsonl --output results.jsonl --min-score 0.5 --markdown summary.md

Both are resumable: ids already in --output are skipped, and results are appended and flushed as they come.
"""

from __future__ import annotations

import ast
import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from clients.client import AsyncMedixClient, MedixError
from service.judge.rubric import summarise

app = typer.Typer(help="CI evaluation with the MediX judge service.", no_args_is_help=True, add_completion=False)

EXIT_BELOW_MIN = 1
EXIT_UNJUDGED = 2


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


def read_predictions(path: Path, warn: Callable[[str], None]) -> tuple[list[PredictionLine], int]:
    """Valid lines in order, and how many lines were invalid (each reported with its number)."""
    valid: list[PredictionLine] = []
    seen: set[str] = set()
    invalid = 0
    with path.open() as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = PredictionLine.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "line"
                warn(f"{path}:{n}: invalid line, skipped: {where}: {first['msg']}")
                invalid += 1
                continue
            if row.id in seen:
                warn(f"{path}:{n}: duplicate id {row.id!r}, skipped")
                invalid += 1
                continue
            seen.add(row.id)
            valid.append(row)
    return valid, invalid


def read_done(path: Path) -> dict[str, dict[str, Any]]:
    """Records already in an output file, the last one per id (a torn last line is ignored)."""
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


def _append(out: Any, records: Iterable[dict[str, Any]]) -> None:
    out.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    out.flush()


def markdown_table(summary: dict[str, Any], invalid: int, unjudged: int) -> str:
    lines = ["| task | n | score | failed |", "| --- | ---: | ---: | ---: |"]
    for task, t in summary["tasks"].items():
        score = "—" if t["score"] is None else f"{t['score']:.4f}"
        lines.append(f"| {task} | {t['n']} | {score} | {t['failed']} |")
    overall = "—" if summary["overall"] is None else f"{summary['overall']:.4f}"
    lines.append(f"| **overall** | {sum(t['n'] for t in summary['tasks'].values())} | **{overall}** | "
                 f"{summary['failed']} |")
    if invalid or unjudged:
        lines.append("")
        lines.append(f"{invalid} invalid input lines skipped; {unjudged} items left unjudged by errors.")
    return "\n".join(lines) + "\n"


async def _judge_batches(client: AsyncMedixClient, batches: list[list[PredictionLine]], rounds: int,
                         concurrency: int, output: Path, progress: Progress, warn: Callable[[str], None]) -> None:
    """Judge batches concurrently; append each batch's results as it lands. A failed batch writes nothing."""
    slots = asyncio.Semaphore(concurrency)
    with output.open("a") as out:
        async def one(batch: list[PredictionLine]) -> None:
            async with slots:
                try:
                    results = await client.judge([b.model_dump(exclude_none=True) for b in batch], rounds=rounds)
                except MedixError as exc:
                    warn(f"batch of {len(batch)} starting at id {batch[0].id!r} failed: {exc}")
                    return
            _append(out, (r.model_dump(exclude_none=True) for r in results))
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
    from rich.console import Console
    from rich.table import Table

    def warn(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows, invalid = read_predictions(input, warn)
    done = read_done(output)
    todo = [r for r in rows if r.id not in done or (retry_failed and done[r.id].get("score") is None)]
    skipped = len(rows) - len(todo)
    if skipped:
        warn(f"resuming: {skipped} ids already in {output}")
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    progress = Progress(len(todo), "judging")

    async def go() -> None:
        async with AsyncMedixClient(url, api_key, max_items=batch_size) as client:
            await _judge_batches(client, batches, rounds, concurrency, output, progress, warn)

    try:
        if batches:
            asyncio.run(go())
    finally:
        progress.close()

    final = read_done(output)
    records = [final[r.id] for r in rows if r.id in final]
    s = summarise(records)
    unjudged_total = len(rows) - len(records)  # batch errors of this run and of earlier ones
    s.update(invalid_lines=invalid, unjudged=unjudged_total)

    table = Table(title=f"MediX judge: {input.name}")
    for col, just in (("task", "left"), ("n", "right"), ("score", "right"), ("failed", "right")):
        table.add_column(col, justify=just)
    for task, t in s["tasks"].items():
        table.add_row(task, str(t["n"]), "—" if t["score"] is None else f"{t['score']:.4f}", str(t["failed"]))
    table.add_row("overall", str(len(records)), "—" if s["overall"] is None else f"{s['overall']:.4f}",
                  str(s["failed"]), style="bold")
    Console(width=100).print(table)
    if invalid or unjudged_total:
        warn(f"{invalid} invalid lines skipped; {unjudged_total} items left unjudged")
    if summary:
        summary.write_text(json.dumps(s, indent=2))
    if markdown:
        markdown.write_text(markdown_table(s, invalid, unjudged_total))
    if invalid or unjudged_total or s["failed"]:
        raise typer.Exit(EXIT_UNJUDGED)
    if min_score is not None and (s["overall"] is None or s["overall"] < min_score):
        warn(f"overall score {s['overall']} is under --min-score {min_score}")
        raise typer.Exit(EXIT_BELOW_MIN)


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

    def warn(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    rows = []
    with dataset.open() as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows.append({"id": str(row[id_field]), "task": task or str(row[task_field]),
                             "question": question_text(row, question_field, options_field),
                             "reference": str(row[answer_field])})
            except (ValueError, KeyError) as exc:
                warn(f"{dataset}:{n}: invalid row, skipped: {exc!r}")
            if limit and len(rows) >= limit:
                break
    done = read_done(output)
    todo = [r for r in rows if r["id"] not in done]
    if len(rows) - len(todo):
        warn(f"resuming: {len(rows) - len(todo)} ids already in {output}")
    progress = Progress(len(todo), "generating")
    failed = 0

    async def go() -> None:
        nonlocal failed
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        slots = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=model_url.rstrip("/"), headers=headers, timeout=600) as http:
            with output.open("a") as out:
                async def one(row: dict[str, Any]) -> None:
                    nonlocal failed
                    body = {"model": model, "max_tokens": max_tokens, "temperature": 0,
                            "messages": [{"role": "system", "content": system},
                                         {"role": "user", "content": row["question"]}]}
                    async with slots:
                        try:
                            resp = await http.post("/chat/completions", json=body)
                            resp.raise_for_status()
                            text = resp.json()["choices"][0]["message"]["content"] or ""
                        except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
                            warn(f"id {row['id']}: generation failed: {exc!r}")
                            failed += 1
                            return
                    _append(out, [{**row, "prediction": text}])
                    progress.advance(1)

                async with asyncio.TaskGroup() as group:
                    for r in todo:
                        group.create_task(one(r))

    try:
        asyncio.run(go())
    finally:
        progress.close()
    if failed:
        warn(f"{failed} rows failed; rerun the same command to complete them")
        raise typer.Exit(EXIT_UNJUDGED)


if __name__ == "__main__":
    app()
