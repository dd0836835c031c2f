# wl handler node: wasmtime behind gRPC on 7710, Prometheus metrics on 9100; it registers
# itself with the router (--register). docker build -f deploy/docker/node.Dockerfile -t wl-node .
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
EXPOSE 7710 9100
# The address it advertises is the pod IP (the manifests pass it); the admin token comes from a Secret.
CMD ["python", "-m", "wlruntime.node", "--host", "0.0.0.0", "--port", "7710", "--metrics-port", "9100", "--registry", "http://wl-registry:7700", "--register", "http://wl-router:7701", "--scheduler", "wl-router:7702"]
