"""Imports run one way: clients/ and trainer/ never reach into service/, and lower layers know no HTTP."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", ["clients", "trainer"])
def test_client_side_never_imports_the_service(package: str) -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(m for m in _imported_modules(p) if m.split(".")[0] == "service")
                 for p in (ROOT / package).rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}


HTTP = "m.split('.')[0] in ('fastapi', 'starlette') or m in ('service.api.errors', 'service.app')"


def _loaded(module: str, forbidden: str) -> str:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if {forbidden}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.strip()


@pytest.mark.parametrize("module", ["service.backends.judge_openai", "service.backends.embed_openai",
                                    "service.backends.judge_vllm", "service.backends.embed_st",
                                    "service.backends.breaker", "service.runtime.cache", "service.runtime.batching",
                                    "service.runtime.memo", "service.reward.rules", "service.reward.prompt"])
def test_lower_layers_load_without_http_or_wire_models(module: str) -> None:
    loaded = _loaded(module, f"{HTTP} or m == 'service.protocol'")
    assert loaded == "[]", f"{module} pulls in {loaded}"


# These build or read wire models (their results are what the HTTP layer sends), but know no HTTP themselves.
@pytest.mark.parametrize("module", ["service.reward.scorer", "service.reward.openrlhf", "service.evaluation.evaluator"])
def test_wire_model_users_load_without_http(module: str) -> None:
    loaded = _loaded(module, HTTP)
    assert loaded == "[]", f"{module} pulls in {loaded}"
