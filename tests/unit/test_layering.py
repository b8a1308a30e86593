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


@pytest.mark.parametrize("module", ["service.backends.judge_openai", "service.backends.embed_openai",
                                    "service.backends.breaker", "service.cache", "service.batching",
                                    "service.reward.rules"])
def test_lower_layers_load_without_http_or_wire_models(module: str) -> None:
    code = (f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'starlette') or m in ('service.errors', 'service.protocol', 'service.app')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", f"{module} pulls in {out.stdout.strip()}"
