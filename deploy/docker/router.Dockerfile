# wl router: HTTP invoke and admin API on 7701, the Scheduler (gRPC) for the nodes on 7702;
# nodes register themselves. docker build -f deploy/docker/router.Dockerfile -t wl-router .
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
EXPOSE 7701 7702
# WL_ROUTER_ADMIN_TOKEN and WL_REGISTRY_TOKEN come from a Secret on Kubernetes.
CMD ["python", "-m", "wlruntime.router", "--host", "0.0.0.0", "--port", "7701", "--scheduler-port", "7702", "--registry", "http://wl-registry:7700"]
