# syntax=docker/dockerfile:1
# Two images from one file (pass --target):
#   serve  the ONNX Runtime serving path only (`cmi serve`): no torch, small, starts fast.
#   train  the whole toolkit (torch, Lightning, DVC with GCS) for training jobs on Vertex AI or
#          any machine.
# Both run as the non-root user `cmi` from a virtualenv at /opt/venv and are configured with
# CMI_* environment variables. See docs/operations.md.

# ---- base: the pinned Python both images start from -------------------------------------------
FROM python:3.11.11-slim-bookworm AS base
# No PIP_NO_CACHE_DIR: builds keep pip's cache in a BuildKit cache mount (outside every layer), so
# a rebuild after a code change downloads nothing and the images carry no cache.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# A fixed numeric id, so orchestrators can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --gid 10001 cmi \
 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin cmi

# ---- wheel: cmi-cli built once, installed by both images --------------------------------------
# Only this stage sees the code: the dependency layers below do not depend on it, so a code
# change rebuilds the wheel and the last layer of each image, never the dependencies.
FROM base AS wheel
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY configs/ configs/
COPY cmi_cli/ cmi_cli/
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir /wheels .

# ---- serve-deps: the pinned serving closure (requirements/serve.txt, from serve.in) ------------
# --no-deps: the lock is the whole closure (tests/delivery check it), so pip resolves nothing and
# installs exactly what was tested.
FROM base AS serve-deps
COPY requirements/serve.txt /tmp/serve.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
 && pip install --no-deps -r /tmp/serve.txt

# ---- serve-venv: cmi-cli without its training dependencies on top ------------------------------
FROM serve-deps AS serve-venv
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl \
 && pip uninstall --yes pip

# ---- serve --------------------------------------------------------------------------------------
FROM base AS serve
COPY --from=serve-venv /opt/venv /opt/venv
# Mount a model at /models (or build the serve-model target); every `cmi serve` option has a
# CMI_* variable (CMI_WORKERS, CMI_API_KEY_ENV, CMI_MAX_UPLOAD_MB, CMI_BATCH_SIZE ...).
ENV CMI_MODEL=/models/model.onnx \
    CMI_HOST=0.0.0.0 \
    CMI_PORT=8000 \
    CMI_WORKERS=1 \
    CMI_LOG_DIR=/var/lib/cmi/predictions
RUN mkdir -p /models /var/lib/cmi/predictions && chown -R cmi:cmi /var/lib/cmi
WORKDIR /var/lib/cmi
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CMI_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["cmi"]
CMD ["serve"]

# ---- serve-model: the serve image with a model baked in (--build-arg MODEL=path/in/context) ----
FROM serve AS serve-model
ARG MODEL=models/model.onnx
COPY --chown=cmi:cmi ${MODEL} /models/model.onnx

# ---- train-deps: the pinned training closure with a CPU build of torch (requirements/train.txt) -
FROM base AS train-deps
# The CPU wheels of torch and torchvision (train.txt pins them as +cpu builds). Empty: PyPI only.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
COPY requirements/train.txt /tmp/train.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
 && pip install --no-deps ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r /tmp/train.txt

# ---- train-venv: cmi-cli on top (its dependencies are all in train.txt) ------------------------
FROM train-deps AS train-venv
COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir --no-deps /wheels/*.whl

# ---- train --------------------------------------------------------------------------------------
FROM base AS train
# git: projects are git + DVC repositories (cmi init, cmi data pull, dvc repro).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends git \
 && rm -rf /var/lib/apt/lists/*
COPY --from=train-venv /opt/venv /opt/venv
COPY --chmod=755 deploy/gcp/vertex-train.sh /usr/local/bin/cmi-vertex-train
ENV CMI_PROJECT_DIR=/workspace/project \
    WANDB_DIR=/workspace \
    MPLBACKEND=Agg
RUN mkdir -p /workspace && chown cmi:cmi /workspace
WORKDIR /workspace
USER 10001:10001
ENTRYPOINT ["cmi"]
CMD ["--help"]
