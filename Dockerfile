# One image for every Backhaul service; the service and its role are chosen at run time:
#   docker run backhaul accounts serve --role api
#   docker run backhaul billing serve --role worker
#   docker run backhaul accounts migrate
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs libs
COPY services services
RUN uv sync --locked --no-dev --no-editable

FROM python:3.11-slim
RUN groupadd --system backhaul && useradd --system --gid backhaul --home /app backhaul
COPY --from=build /opt/venv /opt/venv
# Migrations live beside each service's package.
COPY --from=build /src/services /app/services
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HTTP_HOST=0.0.0.0 HTTP_PORT=8000 \
    ENVIRONMENT=production AUTO_MIGRATE=false LOG_JSON=true
WORKDIR /app
USER backhaul
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"HTTP_PORT\",\"8000\")}/healthz', timeout=2)"
ENTRYPOINT ["/app/services/entrypoint.sh"]
CMD ["accounts", "serve"]
