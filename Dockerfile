# syntax=docker/dockerfile:1.7
# One image for every Backhaul service; the service and its role are chosen at run time:
#   docker run backhaul accounts serve --role api
#   docker run backhaul billing serve --role worker
#   docker run backhaul accounts migrate
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The uv that wrote uv.lock (an older one may not read its format).
ARG UV_VERSION=0.13.9

# Only the manifests (pyproject.toml files and uv.lock) of the workspace: the dependency
# layer below is rebuilt when they change, not on every code change, and no member needs
# listing here by name.
FROM ${PYTHON_IMAGE} AS manifests
WORKDIR /src
COPY . .
RUN find . -type f ! -name pyproject.toml ! -name uv.lock -delete

FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION
RUN pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /app
COPY --from=manifests /src ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-workspace
COPY . .
# Editable: each service finds its migrations beside its package (services/<svc>/migrations),
# so the workspace keeps its layout under /app in the final image.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev \
 && python -m compileall -q libs services

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="backhaul" \
      org.opencontainers.image.description="Backhaul ISP operations services (accounts, billing, scheduler, provisioning, notifications)"
# A numeric user, so Kubernetes can verify runAsNonRoot without resolving names.
RUN groupadd --system --gid 10001 backhaul \
 && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home backhaul
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# The root filesystem may be read-only (Kubernetes): bytecode was compiled at build time.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    HTTP_HOST=0.0.0.0 HTTP_PORT=8000 ENVIRONMENT=production AUTO_MIGRATE=false LOG_JSON=true
WORKDIR /app
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('HTTP_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["/app/services/entrypoint.sh"]
CMD ["accounts", "serve", "--role", "api"]
