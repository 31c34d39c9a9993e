#!/bin/bash
# Create the frame-metadata topic (IPSP_KAFKA_TOPIC, IPSP_KAFKA_PARTITIONS); safe to run again.
# The replication factor is the brokers' default.replication.factor (start.sh).
set -euo pipefail
bin=${KAFKA_HOME:-/opt/kafka}/bin
until "$bin/kafka-topics.sh" --bootstrap-server "$IPSP_KAFKA_BOOTSTRAP" --list > /dev/null; do
  echo "waiting for Kafka at $IPSP_KAFKA_BOOTSTRAP"
  sleep "${RETRY_SECONDS:-5}"
done
"$bin/kafka-topics.sh" --bootstrap-server "$IPSP_KAFKA_BOOTSTRAP" --create --if-not-exists \
  --topic "$IPSP_KAFKA_TOPIC" --partitions "$IPSP_KAFKA_PARTITIONS"
"$bin/kafka-topics.sh" --bootstrap-server "$IPSP_KAFKA_BOOTSTRAP" --describe --topic "$IPSP_KAFKA_TOPIC"
