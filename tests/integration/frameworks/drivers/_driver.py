"""What the framework drivers share. They run in a framework's own environment (envs.sh beside this file), with the
framework at its pinned version and medix-client installed, never the service: so this imports neither.

A driver reads a JSON file of cases (`question`, `response`, `ground_truth`), feeds them to the framework's own
reward code with our adapter plugged in as the framework's documentation says, and writes what the framework
ended up holding to a JSON file; tests/integration/frameworks compares that with /reward for the same items.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from pathlib import Path
from typing import Any

ADAPTERS = Path(__file__).resolve().parents[4] / "clients" / "adapters"
# An item the service answers but refuses to score: ~4,000 CJK characters are several thousand tokens, more than
# the judge's 2,048-token context (tests/integration/test_hostile.py). The drivers that exercise `on_refused` add it.
REFUSED = {"question": "Which disease is shown in this chest X-ray?", "ground_truth": "<X_RAY>Pneumonia",
           "response": "<X_RAY><thinking>t</thinking><answer>" + "肺" * 3999 + "</answer>"}


def parse(extra: list[tuple[str, dict[str, Any]]] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True, help="the live service")
    p.add_argument("--down-url", required=True, help="an address where nothing answers: an outage")
    p.add_argument("--cases", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--tokenizer", help="a local Hugging Face tokenizer folder")
    for name, kwargs in extra or []:
        p.add_argument(name, **kwargs)
    return p.parse_args()


def cases(args: argparse.Namespace) -> list[dict[str, Any]]:
    return json.loads(args.cases.read_text())


def number(value: Any) -> float | None:
    """A framework's value (tensor, numpy scalar, float) as a JSON number; NaN as None."""
    if hasattr(value, "item"):
        value = value.item()
    value = float(value)
    return None if math.isnan(value) else value


def failure(exc: BaseException) -> str:
    """An exception as the test sees it: the type names of its chain, then the message."""
    names = []
    e: BaseException | None = exc
    while e is not None:
        names.append(type(e).__name__)
        e = e.__cause__ or e.__context__
    return " <- ".join(names) + ": " + str(exc)[:2000]


def write(args: argparse.Namespace, report: dict[str, Any]) -> None:
    args.out.write_text(json.dumps(report, indent=1, default=str))


def run(main: Any) -> None:
    """Run a driver; an unexpected failure is written to stderr and exits 1 (the test shows it)."""
    try:
        main()
    except Exception:
        traceback.print_exc()
        sys.exit(1)
