"""Imports run one way, stated by folder: each folder of service/ is one layer.

    app.py, cli.py, bench/     entry points: may import every layer
    api/                       HTTP: the only layer that imports fastapi or starlette
    reward/, evaluation/       the two features' logic and wire models
    backends/                  judge and embedder backends
    engine/                    where the judge engine runs on this host (cpu pinning, local models)
    runtime/                   errors, metrics, cache, memo, batching, scheduling, rate limiting, shared wire types
    settings.py                read by any layer; imports none

A layer imports only the layers below it (and settings); clients/ and trainer/ never import service/.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"

# Each layer and the service layers it may import (besides itself and settings).
MAY_IMPORT: dict[str, set[str]] = {
    "entry": {"api", "reward", "evaluation", "backends", "engine", "runtime"},
    "api": {"reward", "evaluation", "backends", "runtime"},
    "reward": {"backends", "runtime"},
    "evaluation": {"backends", "runtime"},
    "backends": {"runtime"},
    "engine": {"runtime"},
    "runtime": set(),
    "settings": set(),
}
HTTP_PACKAGES = {"fastapi", "starlette"}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return found


def layer_of(module: str) -> str | None:
    """The layer a service module belongs to, from its folder (None: not a service module)."""
    parts = module.split(".")
    if parts[0] != "service" or len(parts) == 1:
        return None
    if parts[1] in ("app", "cli", "bench"):
        return "entry"
    if parts[1] == "settings":
        return "settings"
    return parts[1] if parts[1] in MAY_IMPORT else None


def _service_files() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in SERVICE.rglob("*.py")}


def test_every_service_module_sits_in_a_known_layer() -> None:
    loose = sorted(m for m in _service_files() if layer_of(m) is None and m not in ("service", "service.__init__"))
    assert loose == [], "a module outside every layer folder: put it in one"


@pytest.mark.parametrize("module", sorted(_service_files()))
def test_imports_run_down_the_layers(module: str) -> None:
    own = layer_of(module)
    if own is None:
        return
    allowed = MAY_IMPORT[own] | {own, "settings"}
    upward = sorted(m for m in _imported_modules(_service_files()[module])
                    if (target := layer_of(m)) is not None and target not in allowed)
    assert upward == [], f"{module} ({own}) imports upward"


@pytest.mark.parametrize("module", sorted(_service_files()))
def test_only_the_api_layer_imports_http(module: str) -> None:
    if layer_of(module) == "api":
        return
    http = sorted(m for m in _imported_modules(_service_files()[module]) if m.split(".")[0] in HTTP_PACKAGES)
    assert http == [], f"{module} imports HTTP outside service/api"


@pytest.mark.parametrize("package", ["clients", "trainer"])
def test_client_side_never_imports_the_service(package: str) -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.split(".")[0] == "service")
                 for p in (ROOT / package).rglob("*.py") if "build" not in p.parts}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_rules_catch_an_upward_import() -> None:
    assert layer_of("service.api.routes.reward") == "api" and layer_of("service.runtime.memo") == "runtime"
    assert "api" not in MAY_IMPORT["reward"] and "reward" not in MAY_IMPORT["backends"]


# What is loaded at run time, not only what is written: the core and the backends pull in no HTTP module at all.
@pytest.mark.parametrize("module", ["service.reward.scorer", "service.evaluation.evaluator",
                                    "service.reward.openrlhf", "service.backends.judge_openai",
                                    "service.backends.embed_openai", "service.runtime.memo"])
def test_the_core_loads_without_http(module: str) -> None:
    code = (f"import sys, {module}; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(HTTP_PACKAGES)!r} "
            "or m.startswith('service.api')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", f"{module} pulls in {out.stdout.strip()}"
