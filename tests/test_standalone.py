"""The repository stands alone: a clone into an empty folder runs the unit suite with nothing beside it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Paths outside the repository: the old shared folder and its documents, and absolute paths under /work on the machine
# the project was built on (written so that this line does not match itself).
OUTSIDE = re.compile(r"\.\./shared|shared/(DESIGN|data)|DESIGN\.md|(?<![\w./-])/work(?=/)")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not on PATH: the repository cannot be cloned")
    if not (ROOT / ".git").exists():
        pytest.skip(f"{ROOT} has no .git (an unpacked copy, not a repository): nothing to clone")
    target = tmp_path_factory.mktemp("empty") / "medix"
    subprocess.run(["git", "clone", "--quiet", "--no-local", str(ROOT), str(target)], check=True)
    assert not (target.parent / "shared").exists()
    return target


def test_nothing_reaches_outside_the_repository(clone: Path) -> None:
    hits = [f"{p.relative_to(clone)}:{n}" for p in clone.rglob("*") if p.is_file() and ".git" not in p.parts
            and p.suffix in {".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".cfg", ""}
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if OUTSIDE.search(line)]
    assert hits == []


def test_the_unit_suite_passes_in_a_clone(clone: Path) -> None:
    # The clone's packages come first on sys.path, ahead of this checkout's editable install.
    env = {**os.environ, "PYTHONPATH": str(clone)}
    probe = subprocess.run([sys.executable, "-c", "import service, clients; print(service.__file__, clients.__file__)"],
                           cwd=clone, env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.count(str(clone)) == 2, probe.stdout
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/unit"], cwd=clone,
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert re.search(r"\d+ passed", run.stdout)
