# syntax=docker/dockerfile:1
# Tact's container image: the daemon (`tact run`) as a non-root user.
#
#   docker build -t tact .
#   docker run -v tact-data:/data -p 8080:8080 tact
#
# SQLite lives on the /data volume; set TACT_DATABASE__URL for PostgreSQL. Campaigns are read
# from /app/campaigns: mount your own directory there. Any TACT_* variable configures it.

FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN pip install uv==0.13.9

WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-install-project --python /usr/local/bin/python3
COPY . .
RUN uv sync --frozen --no-dev --no-editable --python /usr/local/bin/python3


FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/app/.venv/bin:$PATH \
    TACT_DATABASE__URL=sqlite:////data/tact.db \
    TACT_CAMPAIGNS_DIR=/app/campaigns

RUN useradd --system --user-group --uid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin tact \
    && mkdir /data \
    && chown tact:tact /data

WORKDIR /app
COPY --from=build /app/.venv /app/.venv
COPY --from=build /app/campaigns /app/campaigns
COPY --from=build /app/config.example.toml /app/config.example.toml

USER tact
VOLUME ["/data"]
EXPOSE 8080
# Alive means the API answers /healthz; orchestrators should gate traffic on /readyz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["tact"]
CMD ["run"]
