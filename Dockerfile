# vms-downloads-exporter — a small image that runs as an unprivileged user.
#   docker build -t vms-downloads-exporter .
#   docker run -p 9877:9877 -e VMS_EXPORTER_URL=https://vms.local \
#     -e VMS_EXPORTER_TOKEN_FILE=/run/secrets/vms_token -v ./token:/run/secrets/vms_token:ro \
#     vms-downloads-exporter
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
COPY vms_simulator ./vms_simulator
COPY docs/runbook.md ./docs/runbook.md
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN python -m pip install --no-cache-dir --upgrade pip \
    && useradd --system --uid 10001 --no-create-home exporter
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && install -d -o 10001 -m 0700 /var/lib/vms-downloads-exporter
# For [state] directory = "/var/lib/vms-downloads-exporter" (mount a volume there).
USER 10001
EXPOSE 9877
HEALTHCHECK --interval=30s --timeout=3s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9877/-/healthy', timeout=2)" || exit 1
ENTRYPOINT ["vms-downloads-exporter"]
