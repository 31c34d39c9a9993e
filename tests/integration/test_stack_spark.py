"""A local SparkSession reads a real Kafka topic with the ``kafka`` source."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from ipsp.config import Settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession


def test_spark_batch_reads_a_kafka_topic(spark: SparkSession, stack_settings: Settings) -> None:
    from kafka import KafkaProducer

    topic = f"it-spark-{uuid.uuid4().hex[:10]}"
    producer = KafkaProducer(bootstrap_servers=stack_settings.kafka_bootstrap, acks="all")
    for i in range(20):
        producer.send(topic, key=f"cam_{i % 4:02d}".encode(), value=f'{{"frame_index": {i}}}'.encode())
    producer.flush()
    producer.close()

    frame = (
        spark.read.format("kafka")
        .option("kafka.bootstrap.servers", stack_settings.kafka_bootstrap)
        .option("subscribe", topic)
        .option("startingOffsets", "earliest")
        .option("endingOffsets", "latest")
        .load()
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "offset")
    )
    rows = frame.collect()

    assert len(rows) == 20
    assert sorted(r.value for r in rows) == sorted(f'{{"frame_index": {i}}}' for i in range(20))
    assert {r.key for r in rows} == {"cam_00", "cam_01", "cam_02", "cam_03"}
