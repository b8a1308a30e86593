"""trainer.plot: the reward curve from a run's steps.jsonl (no model, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.plot import moving_average, plot_steps


def test_moving_average_skips_missing_values() -> None:
    assert moving_average([1.0, None, 3.0, 5.0], 2) == [1.0, 1.0, 3.0, 4.0]
    assert moving_average([None, None], 3) == [None, None]
    assert moving_average([2.0, 4.0], 1) == [2.0, 4.0]


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    steps = tmp_path / "steps.jsonl"
    steps.write_text("".join(json.dumps({"step": i, "reward": 0.5 + i / 100, "medix/format": i / 10,
                                         "medix/modality": None if i == 2 else 0.5, "medix/seconds": 3.0,
                                         "medix/retried_replies": 2 if i == 3 else 0}) + "\n" for i in range(1, 6)))
    png = plot_steps(steps, tmp_path / "img" / "curve.png", window=2)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_refuses_an_empty_run(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    steps = tmp_path / "steps.jsonl"
    steps.write_text("\n")
    with pytest.raises(ValueError, match="no logged step"):
        plot_steps(steps, tmp_path / "curve.png")


def test_reward_table_row() -> None:
    from trainer.evaluate import markdown

    means = {"n": 2, "overall": 0.5, "format": 1.0, "accuracy_llm": 0.75, "accuracy_embed": 0.0, "modality": None}
    table = markdown(means, "after").splitlines()
    assert table[0] == "| policy | n | overall | format | accuracy_llm | accuracy_embed | modality |"
    assert table[2] == "| after | 2 | 0.500 | 1.000 | 0.750 | 0.000 | — |"
