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


# -- the judge engine's dtype ------------------------------------------------------------------------------
DTYPES = ("float32", "bfloat16", "float16")
# CPU flags (x86: /proc/cpuinfo `flags`; ARM: `Features`) that mean bf16 matrix arithmetic in hardware.
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAGS = ("bf16",)
# What an operator wants to see about the CPU beside the engine's speed.
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_fp16", "bf16", "asimd", "sve")


def choose_dtype(setting: str, cpu_flags: set[str] | frozenset[str], has_gpu: bool, machine: str,
                 gpu_bf16: bool = True) -> tuple[str, str]:
    """The judge engine's dtype, and why: an explicit setting wins; `auto` takes bfloat16 where the hardware
    computes it (a GPU, or a CPU with AVX-512-BF16/AMX or ARM BF16) and float32 otherwise.

    vLLM's own `auto` turns a float32 checkpoint into bfloat16 on any x86 CPU; without native bf16 the CPU
    emulates it, and the engine is several times slower and stops batching concurrent requests.
    """
    if setting != "auto":
        if setting not in DTYPES:
            raise ValueError(f"unknown dtype {setting!r}; one of auto, {', '.join(DTYPES)}")
        return setting, "set by the operator (MEDIX_JUDGE_DTYPE or --dtype)"
    if has_gpu:
        if gpu_bf16:
            return "bfloat16", "GPU with bf16 support"
        return "float16", "GPU without bf16 support"
    arch = machine.lower()
    if arch in ("aarch64", "arm64"):
        native = [f for f in ARM_BF16_FLAGS if f in cpu_flags]
    elif arch in ("x86_64", "amd64", "i686", "i386", "x86"):
        native = [f for f in X86_BF16_FLAGS if f in cpu_flags]
    else:
        native = []
    if native:
        return "bfloat16", f"{arch} CPU computes bf16 natively ({', '.join(native)})"
    wanted = "/".join(ARM_BF16_FLAGS if arch in ("aarch64", "arm64") else X86_BF16_FLAGS)
    return "float32", f"{arch} CPU without native bf16 ({wanted} absent): bf16 would be emulated"


def _cpuinfo(path: str) -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    fields: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (x86 `flags`, ARM `Features`), lower case."""
    info = _cpuinfo(path)
    return frozenset((info.get("flags") or info.get("features") or "").lower().split())


def cpu_model(path: str = "/proc/cpuinfo") -> str:
    import platform

    info = _cpuinfo(path)
    return info.get("model name") or info.get("cpu model") or platform.processor() or platform.machine()


def gpu_bf16() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except (ImportError, RuntimeError):
        return False


def engine_dtype(setting: str) -> tuple[str, str]:
    """choose_dtype for this machine."""
    import platform

    gpu = has_gpu()
    return choose_dtype(setting, cpu_flags(), gpu, platform.machine(), gpu_bf16=gpu_bf16() if gpu else True)


def cpu_summary() -> str:
    """`AMD EPYC (x86_64; avx2)`: the CPU model and the flags that decide the engine's speed."""
    import platform

    shown = [f for f in SHOWN_FLAGS if f in cpu_flags()]
    return f"{cpu_model()} ({platform.machine()}; {' '.join(shown) or 'no vector flags listed'})"


# -- the judge engine's scheduler ---------------------------------------------------------------------------
CPU_MAX_NUM_SEQS = 32


def engine_max_num_seqs(setting: int | None, gpu: bool) -> int | None:
    """Requests the engine runs at once (the rest wait in its priority-ordered queue); None: vLLM's default.

    vLLM runs its running requests in admission order and orders only the waiting ones by priority. On a CPU
    engine, whose default lets 128 run, a tenant's new call would queue behind every call of a tenant that filled
    the engine; 32 still fills each step's token budget with verdict prompts, so throughput is kept and the rest
    wait where priority applies. On a GPU vLLM's default stands (its steps take far more requests)."""
    if setting is not None:
        return setting
    return None if gpu else CPU_MAX_NUM_SEQS


# -- the judge engine's KV block size -----------------------------------------------------------------------
# vLLM reuses a cached prompt prefix only in whole KV blocks. Its CPU backend takes 128-token blocks unless told
# otherwise, longer than the verdict prompt's shared part (system message and chat header, ~105-116 tokens with
# the SmolLM2 tokenizer), so every cold verdict would recompute it. The CPU attention takes any multiple of 32;
# 32 was the fastest measured (docs/judge-engine.md, "Reusing the prompt's shared part").
CPU_BLOCK_SIZE = 32
CPU_BLOCK_MULTIPLE = 32


def engine_block_size(setting: int | None, gpu: bool) -> int | None:
    """Tokens per KV block of the judge engine; None: vLLM's default (16 on a GPU, where the verdict prompt's
    shared part already fills whole blocks). On a CPU the block must be a multiple of 32 (16 does not start)."""
    if setting is None:
        return None if gpu else CPU_BLOCK_SIZE
    if not gpu and setting % CPU_BLOCK_MULTIPLE:
        raise ValueError(f"block size {setting}: vLLM's CPU backend needs a multiple of {CPU_BLOCK_MULTIPLE} "
                         "(MEDIX_VLLM_BLOCK_SIZE)")
    return setting
