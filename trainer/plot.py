"""The reward curve of a `medix-train` run: mean overall reward and each component against the step.

    python -m trainer.plot runs/medix-grpo/steps.jsonl curve.png [--title TEXT] [--window 5]

Thin lines are the per-step means (one step's batch), thick lines their trailing moving average. A lower panel
shows how long each step waited on the service, so a judge outage the client rode out stands out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

SERIES = (("reward", "overall", "black"), ("medix/format", "format", "tab:blue"),
          ("medix/modality", "modality", "tab:purple"), ("medix/accuracy_llm", "accuracy_llm", "tab:orange"),
          ("medix/accuracy_embed", "accuracy_embed", "tab:green"))


def read_steps(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def moving_average(values: list[float | None], window: int) -> list[float | None]:
    out: list[float | None] = []
    for i in range(len(values)):
        seen = [v for v in values[max(0, i - window + 1):i + 1] if v is not None]
        out.append(sum(seen) / len(seen) if seen else None)
    return out


def plot_steps(steps_path: Path, png: Path, title: str | None = None, window: int = 5) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = read_steps(steps_path)
    if not steps:
        raise ValueError(f"{steps_path} holds no logged step")
    x = [s["step"] for s in steps]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True, gridspec_kw={"height_ratios": [4, 1]})
    for key, label, color in SERIES:
        ys = [s.get(key) for s in steps]
        if all(v is None for v in ys):
            continue
        top.plot(x, [float("nan") if v is None else v for v in ys], color=color, lw=0.8, alpha=0.3)
        smooth = moving_average(ys, window)
        top.plot(x, [float("nan") if v is None else v for v in smooth], color=color, lw=2.0,
                 label=f"{label} ({window}-step mean)" if window > 1 else label)
    top.set_ylim(-0.02, 1.2)
    top.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    top.set_ylabel("mean over the step's completions")
    top.grid(alpha=0.3)
    top.legend(loc="upper center", fontsize=8, ncol=3, frameon=False)
    top.set_title(title or f"medix-train: reward per component ({steps_path.parent.name})", fontsize=10)
    waits = [s.get("medix/seconds") or 0.0 for s in steps]
    colors = ["tab:red" if (s.get("medix/retried_replies") or 0) > 0 else "tab:gray" for s in steps]
    bottom.bar(x, waits, color=colors, width=0.8)
    bottom.set_ylabel("/reward s", fontsize=8)
    bottom.set_xlabel("GRPO step (red: the client retried error replies)")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Plot a medix-train run's steps.jsonl.")
    parser.add_argument("steps", type=Path, help="steps.jsonl of a run")
    parser.add_argument("png", type=Path, help="PNG to write")
    parser.add_argument("--title", help="figure title")
    parser.add_argument("--window", type=int, default=5, help="moving-average window in steps (1: none)")
    args = parser.parse_args(argv)
    print(plot_steps(args.steps, args.png, args.title, args.window))


if __name__ == "__main__":
    main()
