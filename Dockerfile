# syntax=docker/dockerfile:1
# The omnipulse engine image: `docker build -t omnipulse .`
# The default command is `omnipulse run`; any other subcommand can be given
# instead, e.g. `docker run --rm omnipulse topics create`.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
# Wheels for omnipulse and every dependency; tzdata gives zoneinfo its IANA
# database whatever the base image ships (engine.timezone).
RUN pip wheel --wheel-dir /wheels . tzdata

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels omnipulse tzdata \
 && useradd --create-home --uid 10001 omnipulse
USER omnipulse
WORKDIR /home/omnipulse
# Prometheus /metrics and /healthz (engine.http_port).
EXPOSE 9108
ENTRYPOINT ["omnipulse"]
CMD ["run"]
