#!/bin/bash
# Start one Kafka node of the StatefulSet without writing to the image: the configuration is
# rendered into /tmp (an emptyDir) and the log folder is the PersistentVolumeClaim.
#   node.id              = the pod's ordinal (kafka-0 -> 0)
#   controller quorum    = every pod of the StatefulSet (KAFKA_NODES of them)
#   replication factors  = min(3, KAFKA_NODES); min.insync.replicas = 2 from 3 nodes on
set -euo pipefail

# overridable so tests/unit/test_k8s_scripts.py can run this script against fake binaries
kafka_home=${KAFKA_HOME:-/opt/kafka}
config_dir=${KAFKA_IPSP_CONFIG:-/etc/kafka-ipsp}
work_dir=${KAFKA_WORK_DIR:-/tmp/kafka}

ordinal=${HOSTNAME##*-}
nodes=${KAFKA_NODES:?}
domain="kafka-headless.${POD_NAMESPACE:?}.svc"
rf=$(( nodes < 3 ? nodes : 3 ))
min_isr=$(( rf > 1 ? 2 : 1 ))

voters=""
for (( i = 0; i < nodes; i++ )); do
  voters+="${voters:+,}${i}@kafka-${i}.${domain}:9093"
done

conf=$work_dir/server.properties
mkdir -p "$work_dir"
{
  cat "$config_dir/server.properties"
  echo "node.id=${ordinal}"
  echo "advertised.listeners=PLAINTEXT://${HOSTNAME}.${domain}:9092"
  echo "controller.quorum.voters=${voters}"
  echo "offsets.topic.replication.factor=${rf}"
  echo "transaction.state.log.replication.factor=${rf}"
  echo "transaction.state.log.min.isr=${min_isr}"
  echo "default.replication.factor=${rf}"
  echo "min.insync.replicas=${min_isr}"
} > "$conf"

# --ignore-formatted: a restarted pod keeps its data; only an empty volume is formatted
"$kafka_home/bin/kafka-storage.sh" format --ignore-formatted --cluster-id "${KAFKA_CLUSTER_ID:?}" --config "$conf"
exec "$kafka_home/bin/kafka-server-start.sh" "$conf"
