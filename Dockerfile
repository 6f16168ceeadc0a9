# vms-downloads-exporter: a small image that runs as an unprivileged user.
#   docker build -t vms-downloads-exporter .
#   docker run -p 9877:9877 -e VMS_EXPORTER_URL=https://vms.local \
#     -e VMS_EXPORTER_TOKEN_FILE=/run/secrets/vms_token -v "$PWD/token:/run/secrets/vms_token:ro" \
#     vms-downloads-exporter
# or mount a config.toml at /etc/vms-downloads-exporter/config.toml (the working directory).
#
# Versions the build reproduces: the base image by its full version, the build backend and
# every runtime dependency by hash from the locks that scripts/gen-locks makes from
# pyproject.toml. tests/test_image.py runs this file's RUN, ENTRYPOINT and HEALTHCHECK
# commands without an engine; hadolint checks it with no rule ignored.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    BUILD_VENV=/opt/build \
    VIRTUAL_ENV=/opt/vms-downloads-exporter
# The runtime environment gets no pip: the build environment's pip installs into it.
WORKDIR /src
COPY requirements-build.lock requirements.lock ./
RUN python -m venv "$BUILD_VENV" \
    && "$BUILD_VENV/bin/pip" install --require-hashes --no-deps -r requirements-build.lock \
    && python -m venv --without-pip "$VIRTUAL_ENV" \
    && "$BUILD_VENV/bin/pip" --python "$VIRTUAL_ENV/bin/python" install --require-hashes --no-deps \
        -r requirements.lock
COPY pyproject.toml README.md ./
COPY exporter/ exporter/
COPY vms_simulator/ vms_simulator/
# Served at /runbook: the wheel carries it as exporter/runbook.md (pyproject.toml).
COPY docs/runbook.md docs/runbook.md
RUN "$BUILD_VENV/bin/pip" wheel --no-build-isolation --no-deps --wheel-dir dist . \
    && "$BUILD_VENV/bin/pip" --python "$VIRTUAL_ENV/bin/python" install --no-deps \
        dist/vms_downloads_exporter-*.whl \
    && "$BUILD_VENV/bin/pip" --python "$VIRTUAL_ENV/bin/python" check

FROM python:3.11.14-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vms-downloads-exporter" \
      org.opencontainers.image.description="Prometheus exporter for archive downloads (video exports) of a VMS Client API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"
# A fixed numeric user, so Kubernetes' runAsNonRoot can check it; its own state directory
# for the [state] section ("directory = /var/lib/vms-downloads-exporter").
RUN useradd --system --no-log-init --uid 10001 --user-group --home-dir /nonexistent \
        --no-create-home --shell /usr/sbin/nologin exporter \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/vms-downloads-exporter
COPY --from=build /opt/vms-downloads-exporter /opt/vms-downloads-exporter
ENV PATH=/opt/vms-downloads-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# ./config.toml is read when present: mount one here, or configure by VMS_EXPORTER_* alone.
WORKDIR /etc/vms-downloads-exporter
USER 10001:10001
EXPOSE 9877
# Plain HTTP first, HTTPS (unverified, loopback only) when web.config_file turns TLS on;
# the port follows VMS_EXPORTER_WEB__LISTEN_ADDRESS. Another port set in the file: pass the URL.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-m", "exporter.healthcheck"]
# Exec form: the exporter is PID 1, gets SIGTERM itself and exits 0 within 2 s.
ENTRYPOINT ["vms-downloads-exporter"]
