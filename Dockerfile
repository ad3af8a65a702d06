# Vyapaar Nexus images, one multi-stage file with two targets built from the repository root:
#
#   docker build --target operator -t vyapaar/operator:dev .   # python -m vyapaar_operator
#   docker build --target services -t vyapaar/services:dev .   # python -m vyapaar_services NAME
#
# The services share one image (they share every dependency and most code; five images
# would be five copies of the same layers to build, scan and pull): its command is the
# service name (`args: ["payment"]` in a pod). Both run under tini as uid 65532, write
# nothing outside /tmp (readOnlyRootFilesystem), and carry the `vyapaar` CLI.
#
# The local stack builds this same file with buildah on a Debian bookworm base made with
# debootstrap (no Docker, no registry): `vyapaar stack images`.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- builder: wheels of the dependencies, then of the project, into a venv ----------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
WORKDIR /src
# Dependencies first, from pyproject.toml alone: a change of the sources does not
# download or install them again (layer cache).
COPY pyproject.toml README.md ./
RUN --mount=type=cache,id=vyapaar-pip,target=/root/.cache/pip \
    python3 -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
 && python3 -m venv /opt/build \
 && /opt/build/bin/pip wheel --wheel-dir /wheels -r requirements.txt \
 && python3 -m venv /opt/vyapaar \
 && /opt/vyapaar/bin/pip install --no-index --find-links /wheels -r requirements.txt
COPY operator/ operator/
COPY services/ services/
COPY messaging/ messaging/
COPY cli/ cli/
RUN /opt/build/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/vyapaar/bin/pip install --no-index --no-deps /wheels/vyapaar_nexus-*.whl \
 && /opt/vyapaar/bin/pip uninstall --yes pip setuptools \
 && rm -f /opt/vyapaar/bin/activate* /opt/vyapaar/bin/Activate.ps1 \
 && /opt/vyapaar/bin/python -c 'import vyapaar_operator, vyapaar_services, vyapaar_messaging, vyapaar_cli'

# --- runtime: the base, tini, the numeric user and the venv --------------------------------
FROM ${BASE_IMAGE} AS runtime
# Debian's python3 base has tini already; the official Python image gets it from apt here.
RUN command -v tini >/dev/null \
    || { apt-get update && apt-get install --yes --no-install-recommends tini \
         && rm -rf /var/lib/apt/lists/* /var/cache/apt/*; } \
 && groupadd --gid 65532 vyapaar \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin vyapaar
# Owner of the installed packages: root (0) in every image users run. `tilt up` builds with
# the app's uid so live update can copy changed sources over them (see Tiltfile).
ARG VENV_OWNER=0
COPY --from=builder --chown=${VENV_OWNER}:${VENV_OWNER} /opt/vyapaar /opt/vyapaar
ENV PATH=/opt/vyapaar/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8 \
    HOME=/tmp
WORKDIR /tmp
USER 65532:65532
ARG VERSION=dev
ARG SOURCE_URL=https://github.com/vyapaar-nexus/vyapaar-nexus
LABEL org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# --- the operator ---------------------------------------------------------------------------
FROM runtime AS operator
ENV VYAPAAR_HOST=0.0.0.0
# liveness (VYAPAAR_HEALTH_PORT), Prometheus metrics (VYAPAAR_METRICS_PORT)
EXPOSE 8080 9100
LABEL org.opencontainers.image.title="vyapaar-operator" \
      org.opencontainers.image.description="Vyapaar Nexus operator: drives Order sagas (kopf)"
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "vyapaar_operator"]

# --- the services (the last stage: a plain `docker build .` gives this one) -----------------
FROM runtime AS services
ENV VYAPAAR_HTTP_HOST=0.0.0.0
# inventory 8081, payment 8082, shipping 8083, notification 8084, analytics 8085, gateway 8080
# (VYAPAAR_HTTP_PORT)
EXPOSE 8080 8081 8082 8083 8084 8085
LABEL org.opencontainers.image.title="vyapaar-services" \
      org.opencontainers.image.description="Vyapaar Nexus services: inventory, payment, shipping, notification, analytics, gateway"
ENTRYPOINT ["/usr/bin/tini", "--", "python", "-m", "vyapaar_services"]
CMD ["inventory"]
