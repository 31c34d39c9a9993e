"""Checks the stream job runs before it reads anything: the model loads, the topic exists, MongoDB answers."""

from __future__ import annotations

import logging

from ipsp.config import Settings
from ipsp.contracts import ModelRef
from ipsp.errors import UserError
from ipsp.mongo import SinkUnavailable, connect, redact
from ipsp.streaming.sinks import MongoSink


def load_model(settings: Settings) -> tuple[str, ModelRef]:
    """Load the model once on the driver: a broken model fails here, before any record is read.

    Returns a pinned reference for the workers (``name:version`` or the file path)
    and the model's identity for the results.
    """
    from ipsp.detection import load_detector
    from ipsp.detection.registry import resolve_model

    path, card = resolve_model(settings.model, settings)
    detector = load_detector(str(path) if card is None else settings.model, settings, threads=1, batch_size=1)
    info = detector.model_info
    ref = str(path) if card is None else card.ref
    del detector
    return ref, ModelRef(name=info.name, version=info.version, sha256=info.sha256)


def check_topic(settings: Settings, topic: str) -> None:
    """A clear error when Kafka is down or the topic is missing."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    logging.getLogger("kafka").setLevel(logging.ERROR)  # its warnings about our metadata-only consumer are noise
    try:
        consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15000)
    except KafkaError as exc:
        raise UserError(f"Kafka at {settings.kafka_bootstrap} does not answer ({exc}); is the stack up?") from exc
    try:
        partitions = consumer.partitions_for_topic(topic)
    finally:
        consumer.close()
    if not partitions:
        raise UserError(f"topic {topic!r} does not exist on {settings.kafka_bootstrap}: produce to it first")


def open_sink(settings: Settings, retry_seconds: float) -> MongoSink:
    """The driver's Mongo sink, checked (ping) and with the contract's indexes."""
    sink = MongoSink(connect(settings.mongo_uri.get_secret_value()), settings.mongo_db, retry_seconds)
    try:
        sink.ping()
        sink.ensure_indexes()
    except SinkUnavailable as exc:
        where = f"{redact(settings.mongo_uri.get_secret_value())} db={settings.mongo_db}"
        raise SinkUnavailable(f"MongoDB at {where} does not answer: {exc}") from exc
    return sink
