# syntax=docker/dockerfile:1.7
# One production image for feedlot_pipeline on ECS: the code location's gRPC server (default
# command), the Dagster webserver, the daemon, and every run task (the EcsRunLauncher overrides
# the command with `dagster api execute_run …`). The EC2 worker installs the same wheel
# (deploy/README.md "Worker instance"). Built and pushed as in deploy/README.md "Image".
#
# The base is pinned by tag and digest. The digest is the multi-platform index of
# python:3.11.14-slim-bookworm as published; re-pin both together (`docker buildx imagetools
# inspect python:3.11.14-slim-bookworm`) when moving to a newer patch release.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# --- build: the project's wheel and a wheelhouse of its runtime dependencies ------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY setup.py pyproject.toml ./
COPY feedlot_pipeline ./feedlot_pipeline
# Binary wheels only: every dependency ships manylinux wheels for CPython 3.11 (psycopg and
# psycopg2 bundle libpq), so the image needs no compiler and no apt packages. No extras: the
# local stand-ins (moto, embedded PostgreSQL), test and dev tools stay out.
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && pip wheel --only-binary=:all: --wheel-dir /wheels /wheels/feedlot_pipeline-*.whl

# --- runtime --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home

# An unprivileged user with a fixed uid (the ECS task definitions run as 10001:10001).
RUN groupadd --system --gid 10001 feedlot \
 && useradd --system --uid 10001 --gid feedlot --home-dir /opt/dagster --no-create-home \
        --shell /usr/sbin/nologin feedlot

# Installed from the wheelhouse only (--no-index): the image holds exactly what was resolved in
# the build stage, and the wheels themselves are not copied into a layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/venv \
 && pip install --no-index --find-links=/wheels feedlot_pipeline==0.1.0 \
 && mkdir -p /opt/dagster/dagster_home /opt/dagster/storage \
 && chown feedlot:feedlot /opt/dagster/storage

# The production instance and workspace (root-owned, read-only for the service user).
COPY deploy/dagster/dagster.yaml deploy/dagster/workspace.yaml /opt/dagster/dagster_home/

USER 10001:10001
WORKDIR /opt/dagster
# 3000: webserver; 4000: code server (gRPC).
EXPOSE 3000 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "feedlot_pipeline.definitions", "-a", "defs", "--location-name", "feedlot_pipeline"]
