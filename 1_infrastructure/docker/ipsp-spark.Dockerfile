# syntax=docker/dockerfile:1.7
# ipsp-spark: the Spark driver and executor image.
#   Java 17, pyspark 4.2.0 (Scala 2.13), the ipsp package (CPU inference with ONNX Runtime), and
#   the Kafka connector + s3a jars baked into Spark's jars folder, so no pod resolves anything
#   from the network at start (the NetworkPolicies would not let it).
# Build from the repository root:
#   docker build -f 1_infrastructure/docker/ipsp-spark.Dockerfile -t ipsp-spark:0.1.0 .
# GPU variant for executors (Ultralytics + CUDA torch, see components/gpu-inference):
#   docker build -f 1_infrastructure/docker/ipsp-spark.Dockerfile --build-arg IPSP_EXTRAS=train \
#     -t ipsp-spark-gpu:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG JRE_IMAGE=eclipse-temurin:17.0.16_8-jre-jammy
ARG MAVEN_IMAGE=maven:3.9.11-eclipse-temurin-17

# --- 1. Maven resolves the connector jars (and their transitive deps) ---
FROM ${MAVEN_IMAGE} AS jars
WORKDIR /build
COPY 1_infrastructure/docker/spark-deps/pom.xml ./pom.xml
RUN mvn --batch-mode --quiet dependency:copy-dependencies \
      -DincludeScope=runtime -Dmdep.useRepositoryLayout=true -DoutputDirectory=/deps

# --- 2. The Java 17 runtime, copied whole into the final stage ---
FROM ${JRE_IMAGE} AS jre

# --- 3. A virtualenv with the ipsp package; Spark's jars folder gets the Maven jars ---
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
ARG IPSP_EXTRAS=""
RUN pip install "/src${IPSP_EXTRAS:+[$IPSP_EXTRAS]}"
COPY --from=jars /deps /deps
COPY 1_infrastructure/docker/merge-jars.sh /usr/local/bin/merge-jars.sh
RUN spark_home="$(python -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')" \
    && bash /usr/local/bin/merge-jars.sh /deps "$spark_home/jars"

# --- 4. Final image: runtime only (no Maven, no compiler, no pip cache) ---
FROM ${PYTHON_IMAGE}
ARG IPSP_UID=10001
# tini reaps the Python workers Spark forks and forwards SIGTERM to the driver (PID 1 ignores it otherwise).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "$IPSP_UID" ipsp \
    && useradd --uid "$IPSP_UID" --gid "$IPSP_UID" --home-dir /home/ipsp --create-home \
       --shell /usr/sbin/nologin ipsp \
    && mkdir -p /opt/spark/conf /opt/spark/work-dir /var/lib/ipsp \
    && chown "$IPSP_UID:$IPSP_UID" /opt/spark/work-dir /var/lib/ipsp
COPY --from=jre /opt/java/openjdk /opt/java/openjdk
COPY --from=venv /opt/venv /opt/venv
# the shipped detectors (default IPSP_MODEL=traffic); newer trained versions come from the registry
COPY 4_model_training/models /opt/ipsp/models
COPY --chmod=0755 1_infrastructure/docker/spark-entrypoint.sh /opt/ipsp/spark-entrypoint.sh
COPY --chmod=0644 1_infrastructure/docker/spark-main.py /opt/ipsp/spark-main.py
# SPARK_HOME is pyspark's own folder: the pip package carries Spark's jars and scripts.
# HADOOP_USER_NAME spares Hadoop a passwd lookup when a platform assigns a random UID.
# MPLCONFIGDIR / XDG_CACHE_HOME / YOLO_CONFIG_DIR point at /tmp because the root filesystem is
# read-only in the pods (an emptyDir is mounted there).
ENV JAVA_HOME=/opt/java/openjdk \
    IPSP_MODELS_DIR=/opt/ipsp/models \
    PATH=/opt/venv/bin:/opt/java/openjdk/bin:$PATH \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    HADOOP_USER_NAME=ipsp \
    SPARK_USER=ipsp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache \
    YOLO_CONFIG_DIR=/tmp/ultralytics
WORKDIR /opt/spark/work-dir
USER ${IPSP_UID}:${IPSP_UID}
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/ipsp/spark-entrypoint.sh"]
CMD ["ipsp", "--help"]
