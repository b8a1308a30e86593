"""The judge engine's dtype for the hardware: CPU flags in, dtype out; an explicit setting wins."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from service.engine import cpu
from service.engine.cpu import choose_dtype

AVX2_EPYC = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 fma avx avx2 f16c bmi2 sha_ni vaes".split())
SAPPHIRE_RAPIDS = AVX2_EPYC | {"avx512f", "avx512bw", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
ZEN4 = AVX2_EPYC | {"avx512f", "avx512_bf16"}
ICELAKE = AVX2_EPYC | {"avx512f", "avx512bw", "avx512vl"}  # AVX-512 but no bf16 instructions
GRAVITON3 = frozenset("fp asimd aes sha2 crc32 atomics asimddp sve sve2 bf16 i8mm".split())
GRAVITON2 = frozenset("fp asimd aes sha2 crc32 atomics asimddp".split())


@pytest.mark.parametrize(("flags", "machine", "dtype"), [
    (AVX2_EPYC, "x86_64", "float32"),  # the development machine: bf16 would be emulated
    (ICELAKE, "x86_64", "float32"),
    (ZEN4, "x86_64", "bfloat16"),
    (SAPPHIRE_RAPIDS, "x86_64", "bfloat16"),
    (AVX2_EPYC | {"amx_bf16"}, "AMD64", "bfloat16"),
    (GRAVITON3, "aarch64", "bfloat16"),
    (GRAVITON2, "aarch64", "float32"),
    (GRAVITON3, "x86_64", "float32"),  # ARM's `bf16` means nothing on x86
    (frozenset(), "arm64", "float32"),  # macOS: no /proc/cpuinfo
    (frozenset({"avx512_bf16"}), "s390x", "float32"),
])
def test_auto_follows_the_cpu_flags(flags, machine, dtype):
    chosen, why = choose_dtype("auto", flags, False, machine)
    assert chosen == dtype
    assert ("natively" in why) == (dtype == "bfloat16")


def test_auto_on_a_gpu_is_bf16_or_fp16_where_it_has_no_bf16():
    assert choose_dtype("auto", AVX2_EPYC, True, "x86_64")[0] == "bfloat16"
    assert choose_dtype("auto", AVX2_EPYC, True, "x86_64", gpu_bf16=False)[0] == "float16"


@pytest.mark.parametrize("setting", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize(("flags", "gpu"), [(AVX2_EPYC, False), (SAPPHIRE_RAPIDS, False), (AVX2_EPYC, True)])
def test_an_explicit_setting_wins(setting, flags, gpu):
    chosen, why = choose_dtype(setting, flags, gpu, "x86_64")
    assert chosen == setting and "operator" in why


def test_an_unknown_setting_is_refused():
    with pytest.raises(ValueError, match="float32"):
        choose_dtype("fp8", AVX2_EPYC, False, "x86_64")


def test_flags_and_model_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
                   "flags\t\t: fpu avx2 AVX512F avx512_bf16\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu.cpu_flags(str(x86)) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert cpu.cpu_model(str(x86)) == "AMD EPYC 9R14"
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd sve bf16\nCPU part\t: 0xd40\n")
    assert cpu.cpu_flags(str(arm)) == {"fp", "asimd", "sve", "bf16"}
    assert cpu.cpu_flags(str(tmp_path / "absent")) == frozenset()


def test_the_in_process_engine_gets_the_chosen_dtype(monkeypatch):
    from service.app import make_judge
    from service.settings import Settings

    monkeypatch.setattr(cpu, "cpu_flags", lambda path="/proc/cpuinfo": AVX2_EPYC)
    monkeypatch.setattr(cpu, "has_gpu", lambda: False)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    judge = make_judge(Settings(judge_backend="vllm"))
    assert judge.describe()["dtype"] == "float32" and "emulated" in judge.describe()["dtype_reason"]
    judge = make_judge(Settings(judge_backend="vllm", judge_dtype="bfloat16"))
    assert judge.describe()["dtype"] == "bfloat16"


def test_judge_server_passes_the_dtype(monkeypatch, tmp_path):
    from service import cli

    seen = {}
    monkeypatch.setattr(cpu, "cpu_flags", lambda path="/proc/cpuinfo": AVX2_EPYC)
    monkeypatch.setattr(cpu, "has_gpu", lambda: False)
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    monkeypatch.setattr("service.engine.local_models.prepare_judge", lambda d: tmp_path)
    monkeypatch.setattr("os.execvpe", lambda f, argv, env: seen.setdefault("argv", argv))
    monkeypatch.setenv("MEDIX_ENGINE_CPUS", "")

    def dtype_passed(*args: str) -> str:
        seen.clear()
        result = CliRunner().invoke(cli.app, ["judge-server", *args])
        assert result.exit_code == 0, result.output
        argv = seen["argv"]
        return argv[argv.index("--dtype") + 1]

    assert dtype_passed() == "float32"
    assert dtype_passed("--dtype", "bfloat16") == "bfloat16"
    monkeypatch.setenv("MEDIX_JUDGE_DTYPE", "float16")
    assert dtype_passed() == "float16"
    assert CliRunner().invoke(cli.app, ["judge-server", "--dtype", "fp8"]).exit_code == 2


def test_the_engine_runs_a_short_set_on_a_cpu_and_the_setting_wins():
    from service.engine.cpu import CPU_MAX_NUM_SEQS, engine_max_num_seqs

    assert engine_max_num_seqs(None, gpu=False) == CPU_MAX_NUM_SEQS
    assert engine_max_num_seqs(None, gpu=True) is None  # vLLM's own default on a GPU
    assert engine_max_num_seqs(200, gpu=False) == 200


def test_block_size_lets_the_cpu_engine_reuse_the_verdict_prompts_shared_part():
    import pytest

    from service.engine.cpu import CPU_BLOCK_SIZE, engine_block_size

    assert engine_block_size(None, gpu=False) == CPU_BLOCK_SIZE == 32  # vLLM's CPU default (128) is too long
    assert engine_block_size(None, gpu=True) is None  # vLLM's GPU default (16) already is short enough
    assert engine_block_size(64, gpu=False) == 64 and engine_block_size(16, gpu=True) == 16
    with pytest.raises(ValueError, match="multiple of 32"):
        engine_block_size(16, gpu=False)  # does not start on vLLM's CPU backend
