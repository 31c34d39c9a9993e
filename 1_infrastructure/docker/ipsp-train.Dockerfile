# syntax=docker/dockerfile:1.7
# ipsp-train: YOLO training (`ipsp train`) and model registration (`ipsp model push`).
#   The package with its `train` extra: Ultralytics and torch. The Linux torch wheels on PyPI
#   carry the CUDA 12 runtime as nvidia-* wheels, so the image needs no CUDA base; the node
#   provides the driver through the NVIDIA device plugin (request nvidia.com/gpu).
# Build from the repository root:
#   docker build -f 1_infrastructure/docker/ipsp-train.Dockerfile -t ipsp-train:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- 1. A virtualenv with the ipsp package and the train extra ---
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install "/src[train]"

# --- 2. Final image ---
FROM ${PYTHON_IMAGE}
ARG IPSP_UID=10001
# libgl1 and libglib2.0-0 are runtime libraries of opencv-python, which Ultralytics pulls in.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "$IPSP_UID" ipsp \
    && useradd --uid "$IPSP_UID" --gid "$IPSP_UID" --home-dir /home/ipsp --create-home \
       --shell /usr/sbin/nologin ipsp \
    && mkdir -p /var/lib/ipsp \
    && chown "$IPSP_UID:$IPSP_UID" /var/lib/ipsp
COPY --from=venv /opt/venv /opt/venv
# the shipped default detector (IPSP_MODEL=centernet); trained models come from the registry
COPY 4_model_training/models /opt/ipsp/models
# YOLO_OFFLINE keeps Ultralytics from reaching GitHub for fonts or weights (pods have no egress).
ENV PATH=/opt/venv/bin:$PATH \
    IPSP_MODELS_DIR=/opt/ipsp/models \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    YOLO_CONFIG_DIR=/tmp/ultralytics \
    YOLO_OFFLINE=1
WORKDIR /var/lib/ipsp
USER ${IPSP_UID}:${IPSP_UID}
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["ipsp", "train", "--help"]
