# One image for every role: `rarefit api` (default), `rarefit worker`, `rarefit migrate`.
# The base already carries a CUDA build of torch + torchvision; we install the
# project and its other dependencies around it and never reinstall torch.
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAREFIT_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md constraints.txt ./
COPY rarefit ./rarefit
COPY service ./service
COPY workers ./workers
COPY launch ./launch
COPY migrations ./migrations

# Pin torch/torchvision to exactly what the base image ships (constraints.txt pins
# the CPU test versions, which would pull a second multi-GB torch), keep every
# other pin from constraints.txt, and install the real dependency tree.
RUN set -eux; \
    grep -v -E '^(torch|torchvision)==' constraints.txt > /tmp/constraints.txt; \
    python -c "import torch, torchvision; print(f'torch=={torch.__version__}'); print(f'torchvision=={torchvision.__version__}')" >> /tmp/constraints.txt; \
    pip install -c /tmp/constraints.txt '.[postgres]'; \
    rm /tmp/constraints.txt

RUN useradd --create-home --uid 10001 --user-group rarefit \
    && mkdir -p /data \
    && chown rarefit:rarefit /data
USER rarefit
VOLUME ["/data"]

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["rarefit", "api", "--host", "0.0.0.0", "--port", "8000"]
