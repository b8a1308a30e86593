"""`medix-reward bench --modes capacity` (service/bench/capacity.py): the batch, the arithmetic of its table, and one
small run end to end against the simulated judge in a process of its own."""

from __future__ import annotations

from typing import Any

import pytest

from clients.datasets import SLAKE, read_jsonl
from service.bench import capacity
from service.bench.capacity import CapacityOptions, Run, distinct_batch, parse_rates, rate_row
from service.reward.profiles import PROFILES
from service.reward.scorer import prepare
from service.reward.wire import RewardItem
from tests.integration.stack import free_port

ROWS = list(read_jsonl(SLAKE))


def test_the_batch_is_judged_item_by_item_with_nothing_to_share():
    items = distinct_batch(ROWS, 1432)
    assert len(items) == 1432
    prepared = [prepare(i, RewardItem.model_validate(x), PROFILES["medix-r1"]) for i, x in enumerate(items)]
    assert {p.decided_by for p in prepared} == {"backends"}
    assert len({(p.answer, p.reference) for p in prepared}) == 1432
    assert len({p.answer for p in prepared}) == 1432
    assert distinct_batch(ROWS, 64, seed=3) == distinct_batch(ROWS, 64, seed=3)
    with pytest.raises(ValueError):
        distinct_batch(ROWS[:2], 100)


def test_rates_parse():
    assert parse_rates("15000, 60k,240000") == (15_000.0, 60_000.0, 240_000.0)
    for bad in ("", "0", "-5", "fast"):
        with pytest.raises(ValueError):
            parse_rates(bad)


def test_a_rate_row_is_the_engine_against_the_service_core():
    def run(seconds: float, cpu: float, busy: float) -> Run:
        judge = {"busy_s": busy, "requests": 100, "prompt_tokens": 15_000}
        return Run(rate=60_000, seconds=seconds, service_cpu_s=cpu, client_cpu_s=0.01, judge=judge,
                   embed={"busy_s": 0.01, "requests": 1}, unscored=0, sim_cpu_s=0.1)

    row = rate_row(100, [run(2.0, 0.5, 1.0), run(1.0, 0.25, 0.5), run(4.0, 1.0, 1.0)])
    assert row["tokens_per_verdict"] == 150
    assert row["items_per_s"] == {"median": 50.0, "min": 25.0, "max": 100.0}
    assert row["busy_share"]["median"] == 0.5
    assert row["cpu_ms_per_item"]["median"] == 5.0  # 0.5 s of the service's CPU for 100 items
    assert row["items_per_core_s"]["median"] == 200.0
    # Cores to keep the engine busy: the service's CPU seconds per second of engine work.
    assert row["cores_per_engine"] == {"median": 0.5, "min": 0.5, "max": 1.0}


def test_one_small_run_end_to_end(capsys: Any) -> None:
    options = CapacityOptions(items=48, rates=(2_000_000.0,), repeats=1, dim=16)
    out = capacity.run(rows=ROWS, options=options, port=free_port(), seed=0, log=lambda _: None)
    row = out["rows"][0]
    assert out["verdict"] == "single-step" and row["judge_calls"] == 48 and row["unscored"] == 0
    assert 0 < row["busy_share"]["median"] <= 1.0 and row["cpu_ms_per_item"]["median"] > 0
    capacity.report(out, print, print)
    assert "verdict single-step" in capsys.readouterr().out
