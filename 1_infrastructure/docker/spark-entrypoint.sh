#!/usr/bin/env bash
# Entry point of the ipsp-spark image (runs under tini, see the Dockerfile).
#
# Spark on Kubernetes starts executor pods with the single argument `executor` and passes
# everything else in SPARK_* environment variables; in cluster mode (the Spark operator
# overlay) it starts the driver pod with `driver <spark-submit arguments>`. This script turns
# those two into the JVM / spark-submit command lines. Any other command (`ipsp stream`,
# `ipsp pack`, a shell) runs unchanged, so one image serves driver, executors and tools.
set -euo pipefail

# Classpath: the Spark conf folder first (log4j2 and spark-defaults live there), then every jar
# Spark ships plus the ones the image baked in, then the working directory (Spark puts files
# distributed with --files there).
spark_classpath() {
  local classpath="${SPARK_CONF_DIR:-$SPARK_HOME/conf}:$SPARK_HOME/jars/*"
  if [ -n "${SPARK_EXTRA_CLASSPATH:-}" ]; then
    classpath="$classpath:$SPARK_EXTRA_CLASSPATH"
  fi
  printf '%s:%s' "$classpath" "$PWD"
}

run_executor() {
  local -a java_opts=()
  local name
  # The driver hands the executor JVM options over as SPARK_JAVA_OPT_0, _1, ...; keep their order.
  while IFS= read -r name; do
    java_opts+=("${!name}")
  done < <(compgen -e | grep -E '^SPARK_JAVA_OPT_[0-9]+$' | sort -t _ -k 4 -n || true)

  exec "$JAVA_HOME/bin/java" "${java_opts[@]}" \
    "-Xms${SPARK_EXECUTOR_MEMORY:?}" "-Xmx${SPARK_EXECUTOR_MEMORY:?}" \
    -cp "$(spark_classpath)" \
    org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
    --driver-url "${SPARK_DRIVER_URL:?}" \
    --executor-id "${SPARK_EXECUTOR_ID:?}" \
    --cores "${SPARK_EXECUTOR_CORES:?}" \
    --app-id "${SPARK_APPLICATION_ID:?}" \
    --hostname "${SPARK_EXECUTOR_POD_IP:?}" \
    --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}" \
    --podName "${SPARK_EXECUTOR_POD_NAME:?}"
}

run_driver() {
  # In cluster mode the driver pod runs spark-submit in client mode against the pod's own IP.
  exec "$SPARK_HOME/bin/spark-submit" \
    --deploy-mode client \
    --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:?}" \
    --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS:?}" \
    "$@"
}

case "${1:-}" in
  executor)
    shift
    run_executor
    ;;
  driver)
    shift
    run_driver "$@"
    ;;
  "")
    echo "usage: executor | driver SPARK_SUBMIT_ARGS... | COMMAND [ARGS...]" >&2
    exit 2
    ;;
  *)
    exec "$@"
    ;;
esac
