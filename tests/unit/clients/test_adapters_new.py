"""The verifiers and NeMo Gym adapters import their framework, which exists only in that framework's environment
(tests/integration/frameworks: test_verifiers.py, test_nemo_gym.py drive them there): nothing else of the client
package may import them, and they import nothing of the service."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

CLIENTS = Path(__file__).resolve().parents[3] / "clients"
FRAMEWORK_ADAPTERS = {"clients.adapters.verifiers": "verifiers", "clients.adapters.nemo_gym": "nemo_gym"}
EXAMPLES = CLIENTS / "examples"


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_nothing_in_the_client_package_imports_the_framework_adapters():
    offenders = {}
    for path in CLIENTS.rglob("*.py"):
        if "build" in path.parts or EXAMPLES in path.parents:  # the example taskset package is verifiers-only too
            continue
        module = ".".join(("clients", *path.relative_to(CLIENTS).with_suffix("").parts))
        bad = {m for m in imports(path) if m in FRAMEWORK_ADAPTERS and m != module}
        if bad:
            offenders[module] = sorted(bad)
    assert offenders == {}


@pytest.mark.parametrize(("module", "framework"), sorted(FRAMEWORK_ADAPTERS.items()))
def test_each_framework_adapter_imports_its_framework_and_never_the_service(module, framework):
    found = imports(CLIENTS / "adapters" / f"{module.rsplit('.', 1)[1]}.py")
    assert any(m.split(".")[0] == framework for m in found)
    assert not any(m.split(".")[0] in ("service", "trainer") for m in found)


def test_the_example_taskset_package_exports_the_slake_taskset():
    """verifiers resolves a taskset id to a top-level package exporting one Taskset subclass via `__all__`."""
    project = tomllib.loads((EXAMPLES / "medix_slake" / "pyproject.toml").read_text())["project"]
    assert project["name"] == "medix-slake" and "medix-client" in project["dependencies"]
    tree = ast.parse((EXAMPLES / "medix_slake" / "medix_slake" / "__init__.py").read_text())
    exported = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in n.targets))
    assert exported == ["SlakeTaskset"]
    assert "clients.adapters.verifiers" in {n.module for n in tree.body if isinstance(n, ast.ImportFrom)}
    # The client wheel does not carry the example (it is its own package) nor need the frameworks.
    wheel = tomllib.loads((CLIENTS / "pyproject.toml").read_text())
    assert not any("examples" in p for p in wheel["tool"]["setuptools"]["packages"])
    assert not any(d.split("=")[0].split("<")[0].split(">")[0] in ("verifiers", "nemo-gym")
                   for d in wheel["project"]["dependencies"])
