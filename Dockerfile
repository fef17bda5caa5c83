# syntax=docker/dockerfile:1
# The omnipulse engine image: `docker build -t omnipulse .`
# The default command is `omnipulse run`; any other subcommand can be given
# instead, e.g. `docker run --rm omnipulse topics create`.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# Wheels for omnipulse and every dependency; tzdata gives zoneinfo its IANA
# database whatever the base image ships (engine.timezone).
RUN pip wheel --wheel-dir /wheels . tzdata

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="omnipulse" \
      org.opencontainers.image.description="Real-time omnichannel retail CRM engine: Kafka in, Redis state, triggers out." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Versions are pinned by the wheels built above (--no-index: nothing else is reachable).
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels omnipulse tzdata \
 && groupadd --gid 10001 omnipulse \
 && useradd --create-home --uid 10001 --gid 10001 omnipulse
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
WORKDIR /home/omnipulse
# Prometheus /metrics, /healthz and /readyz (engine.http_port).
EXPOSE 9108
# `docker stop` sends SIGTERM: the engine drains, flushes and commits, then exits.
STOPSIGNAL SIGTERM
ENTRYPOINT ["omnipulse"]
CMD ["run"]
