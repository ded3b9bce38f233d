# syntax=docker/dockerfile:1
# One image for the API, the workers and the migrations; the compose file picks the command.
# CUDA build: docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 .

FROM python:3.11-slim AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first and from its own index: PyPI's Linux wheel would pull the CUDA libraries into the CPU image.
# Its layer depends only on the build arg, so editing the code does not download it again.
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --index-url "$TORCH_INDEX_URL" torch
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".[postgres]"

FROM python:3.11-slim
RUN groupadd --gid 10001 bn \
    && useradd --uid 10001 --gid bn --no-create-home --home-dir /app --shell /usr/sbin/nologin bn \
    && mkdir /data \
    && chown bn:bn /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The source stays root-owned: the service only writes under /data.
COPY . .
ENV PATH=/opt/venv/bin:$PATH \
    DATA_DIR=/data HOST=0.0.0.0 PORT=8000 PYTHONUNBUFFERED=1
VOLUME /data
USER 10001:10001
EXPOSE 8000
# slim has no curl; the probe is the image's own Python.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:${PORT:-8000}/healthz', timeout=4)"
CMD ["python", "-m", "service"]
