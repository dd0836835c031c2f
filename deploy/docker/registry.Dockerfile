# wl code registry: FastAPI + SQLite + content-addressed blobs under /var/lib/wl/registry
# (a volume). docker build -f deploy/docker/registry.Dockerfile -t wl-registry .
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 WL_DATA_DIR=/var/lib/wl
WORKDIR /opt/wl
COPY pyproject.toml README.md ./
COPY wl ./wl
COPY wlsim ./wlsim
COPY wlruntime ./wlruntime
COPY wlcommon ./wlcommon
COPY policies ./policies
COPY protos ./protos
RUN pip install . && useradd --system --uid 10001 --home /var/lib/wl wl && mkdir -p /var/lib/wl \
    && chown wl /var/lib/wl
USER 10001
EXPOSE 7700
# WL_REGISTRY_TOKEN (a Secret on Kubernetes) is the write token.
CMD ["python", "-m", "wlruntime.registry", "--host", "0.0.0.0", "--port", "7700", "--data-dir", "/var/lib/wl/registry"]
