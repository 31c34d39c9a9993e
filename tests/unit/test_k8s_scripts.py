"""The shell scripts the Kafka pods run (``base/kafka/*.sh``), run here against fake binaries.

``start.sh`` renders each node's configuration (node id, advertised listener, KRaft quorum,
replication factors) and formats the volume before starting the broker;
``create-topic.sh`` waits for the brokers and creates the topic idempotently. The fake
``kafka-*.sh`` record their arguments, so the tests see exactly what the pod would run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KAFKA = REPO / "1_infrastructure" / "k8s" / "base" / "kafka"


def fake_kafka(home: Path, failures_before_success: int = 0) -> None:
    """Fake kafka-*.sh that append their arguments to calls.log (topics fails N times first)."""
    bin_dir = home / "bin"
    bin_dir.mkdir(parents=True)
    for name in ("kafka-storage.sh", "kafka-server-start.sh", "kafka-topics.sh"):
        script = bin_dir / name
        script.write_text(
            "#!/bin/bash\n"
            f'echo "{name} $*" >> "{home}/calls.log"\n'
            f'if [ "{name}" = kafka-topics.sh ] && [ "$(grep -c -- --list "{home}/calls.log")" -le '
            f"{failures_before_success} ]; then exit 1; fi\n"
        )
        script.chmod(0o755)


def run(script: str, home: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one of the Kafka scripts with KAFKA_HOME pointing at the fakes."""
    base = {"PATH": os.environ["PATH"], "KAFKA_HOME": str(home), "KAFKA_IPSP_CONFIG": str(KAFKA)}
    return subprocess.run(
        ["bash", str(KAFKA / script)], capture_output=True, text=True, env=base | env, timeout=60, check=False
    )


def properties(path: Path) -> dict[str, str]:
    """key=value lines of a .properties file."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and line[0] != "#")
    return {key: value for key, value in pairs}


@pytest.mark.parametrize(
    ("hostname", "nodes", "voters", "rf", "min_isr"),
    [
        ("kafka-0", "1", "0@kafka-0.kafka-headless.ipsp.svc:9093", "1", "1"),
        (
            "kafka-2",
            "3",
            "0@kafka-0.kafka-headless.ipsp.svc:9093,1@kafka-1.kafka-headless.ipsp.svc:9093,"
            "2@kafka-2.kafka-headless.ipsp.svc:9093",
            "3",
            "2",
        ),
    ],
)
def test_start_renders_the_node_and_formats_its_volume(
    tmp_path: Path, hostname: str, nodes: str, voters: str, rf: str, min_isr: str
) -> None:
    """node.id from the ordinal, the quorum from KAFKA_NODES, then format and start."""
    fake_kafka(tmp_path / "kafka")
    env = {
        "HOSTNAME": hostname,
        "KAFKA_NODES": nodes,
        "POD_NAMESPACE": "ipsp",
        "KAFKA_CLUSTER_ID": "KzBuBblZQ-Cx56GQvi6W3g",
        "KAFKA_WORK_DIR": str(tmp_path / "work"),
    }
    result = run("start.sh", tmp_path / "kafka", env)
    assert result.returncode == 0, result.stderr
    conf = tmp_path / "work" / "server.properties"
    rendered = properties(conf)
    assert rendered["node.id"] == hostname.rsplit("-", 1)[1]
    assert rendered["advertised.listeners"] == f"PLAINTEXT://{hostname}.kafka-headless.ipsp.svc:9092"
    assert rendered["controller.quorum.voters"] == voters
    assert rendered["default.replication.factor"] == rendered["offsets.topic.replication.factor"] == rf
    assert rendered["min.insync.replicas"] == rendered["transaction.state.log.min.isr"] == min_isr
    assert rendered["process.roles"] == "broker,controller"
    calls = (tmp_path / "kafka" / "calls.log").read_text().splitlines()
    assert calls == [
        f"kafka-storage.sh format --ignore-formatted --cluster-id KzBuBblZQ-Cx56GQvi6W3g --config {conf}",
        f"kafka-server-start.sh {conf}",
    ]


def test_start_needs_the_node_count(tmp_path: Path) -> None:
    """Without KAFKA_NODES the quorum is unknown: stop with the variable's name."""
    fake_kafka(tmp_path / "kafka")
    env = {"HOSTNAME": "kafka-0", "POD_NAMESPACE": "ipsp", "KAFKA_WORK_DIR": str(tmp_path / "work")}
    result = run("start.sh", tmp_path / "kafka", env)
    assert result.returncode != 0 and "KAFKA_NODES" in result.stderr
    assert not (tmp_path / "kafka" / "calls.log").exists()


def test_create_topic_waits_for_kafka_then_creates_idempotently(tmp_path: Path) -> None:
    """Retries --list until the brokers answer, then --create --if-not-exists with the settings."""
    fake_kafka(tmp_path / "kafka", failures_before_success=2)
    env = {
        "IPSP_KAFKA_BOOTSTRAP": "kafka:9092",
        "IPSP_KAFKA_TOPIC": "traffic-metadata",
        "IPSP_KAFKA_PARTITIONS": "4",
        "RETRY_SECONDS": "0",
    }
    result = run("create-topic.sh", tmp_path / "kafka", env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("waiting for Kafka") == 2
    calls = (tmp_path / "kafka" / "calls.log").read_text().splitlines()
    assert calls[-2:] == [
        "kafka-topics.sh --bootstrap-server kafka:9092 --create --if-not-exists "
        "--topic traffic-metadata --partitions 4",
        "kafka-topics.sh --bootstrap-server kafka:9092 --describe --topic traffic-metadata",
    ]
