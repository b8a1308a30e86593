"""Keeping the CPU judge engine and the service's own torch work on different cores."""

from __future__ import annotations

import logging
import os

log = logging.getLogger("medix.cpu")


def parse_cpus(spec: str) -> set[int]:
    """'0', '0-3', '0,2-3' -> a set of core ids."""
    cores: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cores.update(range(int(lo), int(hi or lo) + 1))
    return cores


def has_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def engine_cores(spec: str | None) -> set[int] | None:
    """Cores the judge engine should use; None when no pinning applies."""
    if not spec or not hasattr(os, "sched_getaffinity") or has_gpu():
        return None
    available = os.sched_getaffinity(0)
    if spec == "auto":
        return {min(available)} if len(available) >= 2 else None
    return parse_cpus(spec) & available or None


def prepare_engine_env(cores: set[int] | None) -> None:
    """vLLM's CPU backend binds its OpenMP threads to these cores when it starts."""
    if cores:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in sorted(cores))


def pin_service(avoid: set[int] | None) -> None:
    """Move this process (and torch's threads) off the engine's cores."""
    if not avoid or not hasattr(os, "sched_setaffinity"):
        return
    rest = os.sched_getaffinity(0) - avoid
    if not rest:
        return
    os.sched_setaffinity(0, rest)
    try:
        import torch

        torch.set_num_threads(len(rest))
    except ImportError:
        pass
    log.info("service pinned to cores %s, judge engine on %s", sorted(rest), sorted(avoid))
