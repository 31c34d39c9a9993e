# syntax=docker/dockerfile:1.7
# ipsp-app: the slim image for the replay producer (`ipsp produce`), the API (`ipsp serve`) and
# the model registry commands (`ipsp model ...`). No Java and no Spark connector jars: these
# processes never start a JVM (pyspark itself is a base dependency of the package, so its
# Python files come along).
# Build from the repository root:
#   docker build -f 1_infrastructure/docker/ipsp-app.Dockerfile -t ipsp-app:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- 1. A virtualenv with the ipsp package ---
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install /src

# --- 2. Final image: the interpreter, the virtualenv, tini ---
FROM ${PYTHON_IMAGE}
ARG IPSP_UID=10001
# tini forwards SIGTERM to the Python process (PID 1 ignores it otherwise) so pods stop cleanly.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "$IPSP_UID" ipsp \
    && useradd --uid "$IPSP_UID" --gid "$IPSP_UID" --home-dir /home/ipsp --create-home \
       --shell /usr/sbin/nologin ipsp \
    && mkdir -p /var/lib/ipsp \
    && chown "$IPSP_UID:$IPSP_UID" /var/lib/ipsp
COPY --from=venv /opt/venv /opt/venv
# the shipped detectors (default IPSP_MODEL=traffic); newer trained versions come from the registry
COPY 4_model_training/models /opt/ipsp/models
ENV PATH=/opt/venv/bin:$PATH \
    IPSP_MODELS_DIR=/opt/ipsp/models \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache
WORKDIR /var/lib/ipsp
USER ${IPSP_UID}:${IPSP_UID}
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["ipsp", "serve", "--host", "0.0.0.0", "--port", "8000"]
