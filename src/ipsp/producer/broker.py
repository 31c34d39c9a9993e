"""The Kafka side of the replay: topic creation, producer settings, key partitioning.

Delivery settings: ``acks=all`` with the idempotent producer (kafka-python 2.2+
supports it; with up to 5 requests in flight per connection it keeps each
partition's order across retries), unlimited retries with backoff bounded by
``delivery_timeout_ms`` (a send is decided, success or failure, within that
time), no automatic topic creation (the replay creates the topic itself with
the partition count it was asked for).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ipsp.errors import ServiceUnavailable, UserError

TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


@dataclass(frozen=True)
class ProducerTuning:
    """Batching and timeout knobs of the producer (the defaults are what the benchmark chose)."""

    linger_ms: int = 5
    batch_size: int = 256 * 1024
    compression: str | None = None
    delivery_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0


@dataclass(frozen=True)
class TopicInfo:
    """The topic the replay writes to: its partition count and whether this run created it."""

    name: str
    partitions: int
    created: bool


def check_topic_name(topic: str) -> str:
    """Kafka's topic name rule, checked before asking the broker."""
    if not TOPIC_NAME.match(topic) or topic in (".", ".."):
        raise UserError(f"topic name {topic!r} is invalid: use 1-249 of A-Z a-z 0-9 . _ -")
    return topic


def producer_configs(bootstrap: str, tuning: ProducerTuning) -> dict[str, Any]:
    """kafka-python producer settings; keys this kafka-python version lacks are dropped."""
    from kafka import KafkaProducer

    delivery_ms = int(tuning.delivery_timeout_s * 1000)
    # kafka-python requires delivery_timeout >= linger + request_timeout
    request_ms = max(1000, min(30_000, delivery_ms - tuning.linger_ms - 1))
    wanted: dict[str, Any] = {
        "bootstrap_servers": bootstrap.split(","),
        "client_id": "ipsp-producer",
        "acks": "all",
        "enable_idempotence": True,
        "max_in_flight_requests_per_connection": 5,
        "retry_backoff_ms": 100,
        "reconnect_backoff_ms": 100,
        "reconnect_backoff_max_ms": 2000,
        "delivery_timeout_ms": max(delivery_ms, request_ms + tuning.linger_ms + 1),
        "request_timeout_ms": request_ms,
        "max_block_ms": int(tuning.connect_timeout_s * 1000),
        "bootstrap_timeout_ms": int(tuning.connect_timeout_s * 1000),
        "linger_ms": tuning.linger_ms,
        "batch_size": tuning.batch_size,
        "compression_type": tuning.compression,
        "allow_auto_create_topics": False,
        "metrics_enabled": False,
    }
    return {k: v for k, v in wanted.items() if k in KafkaProducer.DEFAULT_CONFIG}


def _unavailable(bootstrap: str, exc: BaseException, doing: str) -> ServiceUnavailable:
    return ServiceUnavailable(f"Kafka at {bootstrap} does not answer while {doing} ({exc}); nothing sent")


def ensure_topic(bootstrap: str, topic: str, partitions: int, connect_timeout_s: float = 10.0) -> TopicInfo:
    """Create the topic with ``partitions`` partitions unless it exists; return what it has."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    check_topic_name(topic)
    if partitions < 1:
        raise UserError("--partitions must be >= 1")
    timeout_ms = int(connect_timeout_s * 1000)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap.split(","),
            client_id="ipsp-producer-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )
    except KafkaError as exc:
        raise _unavailable(bootstrap, exc, "connecting") from None
    try:
        created = _create_topic(admin, bootstrap, topic, partitions, timeout_ms)
        try:
            described = admin.describe_topics([topic])
        except KafkaError as exc:
            raise _unavailable(bootstrap, exc, f"describing topic {topic!r}") from None
        count = len(described[0].get("partitions") or []) if described else 0
        if count < 1:
            raise UserError(f"topic {topic!r} has no partitions after creation; nothing sent")
        return TopicInfo(topic, count, created)
    finally:
        admin.close()


def _create_topic(admin: Any, bootstrap: str, topic: str, partitions: int, timeout_ms: int) -> bool:
    """Ask the broker to create the topic; True if created, False if it already existed."""
    import kafka.errors as errors

    try:
        result = admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": -1}},
            timeout_ms=timeout_ms,
            raise_errors=False,
        )
    except errors.KafkaError as exc:
        raise _unavailable(bootstrap, exc, f"creating topic {topic!r}") from None
    answer = result["topics"][0] if result.get("topics") else {}
    code = answer.get("error_code", 0)
    if code == 0:
        try:
            admin.wait_for_topics([topic], timeout_ms=timeout_ms)
        except errors.KafkaError as exc:
            raise _unavailable(bootstrap, exc, f"waiting for new topic {topic!r}") from None
        return True
    error = errors.for_code(code)
    if error is errors.TopicAlreadyExistsError:
        return False
    reason = answer.get("error_message") or error.__name__
    if getattr(error, "retriable", False):
        raise _unavailable(bootstrap, error(reason), f"creating topic {topic!r}")
    raise UserError(f"topic {topic!r} cannot be created: {reason} ({error.__name__}); nothing sent")


def open_producer(bootstrap: str, tuning: ProducerTuning) -> Any:
    """A connected kafka-python producer (ServiceUnavailable when the broker does not answer)."""
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    check_compression(tuning.compression)
    try:
        return KafkaProducer(**producer_configs(bootstrap, tuning))
    except KafkaError as exc:
        raise _unavailable(bootstrap, exc, "starting the producer") from None


def check_compression(codec: str | None) -> None:
    """Fail early (nothing sent) when the codec's Python library is missing."""
    from kafka import codec as codecs

    available = {
        None: True,
        "gzip": codecs.has_gzip(),
        "snappy": codecs.has_snappy(),
        "lz4": codecs.has_lz4(),
        "zstd": codecs.has_zstd(),
    }
    if codec not in available:
        raise UserError(f"compression {codec!r}: use none, gzip, snappy, lz4 or zstd")
    if not available[codec]:
        raise UserError(f"compression {codec!r} needs its Python library, which is not installed")


def topic_partitions(producer: Any, topic: str) -> list[int]:
    """Partition ids of the topic as the producer's metadata sees them (sorted)."""
    from kafka.errors import KafkaError

    try:
        found = producer.partitions_for(topic)
    except KafkaError as exc:
        raise ServiceUnavailable(f"no metadata for topic {topic!r} ({exc}); nothing sent") from None
    if not found:
        raise ServiceUnavailable(f"no metadata for topic {topic!r}; nothing sent")
    return sorted(found)


def partition_for(key: bytes, partitions: list[int]) -> int:
    """The partition kafka's default partitioner picks for a key (murmur2, like the Java client).

    Computed once per camera so each send skips the pure-Python hash.
    """
    from kafka.partitioner.default import murmur2

    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
