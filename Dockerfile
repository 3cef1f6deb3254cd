# holdscan container images, built from this repository (pip installs the package).
#
#   docker build -t holdscan .                              # the scanning worker (default)
#   docker build --target mailhost -t holdscan-mailhost .   # Postfix + the dispatcher
#
# docker-compose.yml builds both. The worker image needs no Debian packages:
# clamd runs in its own container (clamav/clamav) and every Python dependency
# ships as a wheel.
#
# BASE_IMAGE: any Debian bookworm image with `python` and `pip` on PATH that install into
# the image. The official python image by default; the compose tests build from a base
# they make with debootstrap (holdscan/lab/baseimage.py), since they reach no registry.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY dispatcher/ dispatcher/
COPY workers/ workers/
COPY holdscan/ holdscan/
# [flower]: the same image runs Flower, so Flower and the workers share one Celery version.
RUN pip install ".[flower]" && cd / && rm -rf /build
WORKDIR /

# -- Postfix and the dispatcher: one image for both, so that mail_owner has the same
#    uid in each container that shares the spool volume.
FROM base AS mailhost
RUN echo "postfix postfix/main_mailer_type select Internet Site" | debconf-set-selections \
 && echo "postfix postfix/mailname string localhost" | debconf-set-selections \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# holdscan web's own user (the service "web" drops to it).
RUN useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin holdscan-web
COPY deploy/postfix/ /usr/share/holdscan/postfix/
COPY deploy/docker/postfix-start.sh /usr/local/bin/holdscan-postfix-start
EXPOSE 25
CMD ["holdscan-postfix-start"]

# -- The scanning worker (the default target). It needs no privileges at all.
FROM base AS worker
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin holdscan
USER holdscan
CMD ["holdscan", "worker"]
