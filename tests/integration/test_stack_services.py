"""The real servers of the local stack, used the way the pipeline uses them."""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest
from minio import Minio
from minio.error import S3Error
from pymongo import MongoClient
from pymongo.errors import DuplicateKeyError

from ipsp.config import Settings
from ipsp.localstack.health import s3_client
from ipsp.localstack.layout import StackLayout


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- Kafka


def test_kafka_produce_and_consume_through_the_broker(stack_settings: Settings) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    topic = _name("it-roundtrip")
    admin = KafkaAdminClient(bootstrap_servers=stack_settings.kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
    finally:
        admin.close()

    sent = {f"cam_{i % 3:02d}|{i}": f"frame-{i}" for i in range(12)}
    producer = KafkaProducer(bootstrap_servers=stack_settings.kafka_bootstrap, acks="all")
    metadata = [
        producer.send(topic, key=key.split("|")[0].encode(), value=value.encode()).get(timeout=30)
        for key, value in sent.items()
    ]
    producer.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=stack_settings.kafka_bootstrap,
        group_id=_name("it-group"),
        auto_offset_reset="earliest",
        consumer_timeout_ms=30_000,  # only a safety net: the loop stops once all arrived
    )
    received = []
    for message in consumer:
        received.append((message.key.decode(), message.value.decode(), message.partition))
        if len(received) == len(sent):
            break
    consumer.close()

    assert sorted(v for _, v, _ in received) == sorted(sent.values())
    # the same key always lands on the same partition (per-camera ordering)
    partitions_by_key: dict[str, set[int]] = {}
    for key, _, partition in received:
        partitions_by_key.setdefault(key, set()).add(partition)
    assert all(len(parts) == 1 for parts in partitions_by_key.values())
    assert {m.topic for m in metadata} == {topic}


# ---------------------------------------------------------------- FerretDB (MongoDB wire protocol)


@pytest.fixture()
def mongo_db(stack_settings: Settings) -> Any:
    client: MongoClient[dict[str, Any]] = MongoClient(
        stack_settings.mongo_uri.get_secret_value(), serverSelectionTimeoutMS=10_000
    )
    name = _name("it_db").replace("-", "_")
    yield client[name]
    client.drop_database(name)
    client.close()


def test_mongo_insert_and_read(mongo_db: Any) -> None:
    docs = [{"_id": f"cam_01_{i:05d}", "camera_id": "cam_01", "counts": {"car": i, "total": i}} for i in range(5)]
    mongo_db.results.insert_many(docs)

    found = list(mongo_db.results.find({"counts.car": {"$gte": 3}}).sort("_id", 1))

    assert [d["_id"] for d in found] == ["cam_01_00003", "cam_01_00004"]
    assert found[0]["counts"] == {"car": 3, "total": 3}


def test_mongo_unique_index_rejects_a_duplicate(mongo_db: Any) -> None:
    mongo_db.windows.create_index([("camera_id", 1), ("window_start", 1)], unique=True)
    mongo_db.windows.insert_one({"camera_id": "cam_02", "window_start": "2024-01-01T00:00:00Z"})

    with pytest.raises(DuplicateKeyError):
        mongo_db.windows.insert_one({"camera_id": "cam_02", "window_start": "2024-01-01T00:00:00Z"})
    assert mongo_db.windows.count_documents({}) == 1


def test_mongo_id_lookups_use_the_id_index(mongo_db: Any) -> None:
    # FerretDB is built with a fix (ipsp.localstack.fetch.FERRETDB_FIXES): without it SQLite scans the table
    mongo_db.results.insert_many([{"_id": f"cam_04|{i:05d}", "total": i} for i in range(50)])

    plan = mongo_db.command("explain", {"find": "results", "filter": {"_id": "cam_04|00042"}})["queryPlanner"]
    mongo_db.results.replace_one({"_id": "cam_04|00042"}, {"total": -1})

    assert any("USING INDEX" in step for step in plan["Plan"]), plan
    assert mongo_db.results.find_one({"_id": "cam_04|00042"}) == {"_id": "cam_04|00042", "total": -1}


def test_mongo_upsert_replaces_instead_of_duplicating(mongo_db: Any) -> None:
    key = {"_id": "cam_03_00001"}
    first = mongo_db.results.update_one(key, {"$set": {"total": 1}}, upsert=True)
    second = mongo_db.results.update_one(key, {"$set": {"total": 7}}, upsert=True)

    assert first.upserted_id == "cam_03_00001"
    assert second.upserted_id is None and second.matched_count == 1
    assert list(mongo_db.results.find()) == [{"_id": "cam_03_00001", "total": 7}]


# ---------------------------------------------------------------- S3 server


@pytest.fixture()
def s3(stack_settings: Settings) -> Minio:
    return s3_client(
        stack_settings.s3_endpoint,
        stack_settings.s3_access_key,
        stack_settings.s3_secret_key.get_secret_value(),
    )


def test_s3_put_range_get_and_list(s3: Minio, stack_settings: Settings) -> None:
    prefix = _name("it") + "/"
    payload = bytes(range(256)) * 40
    s3.put_object("ipsp", prefix + "shard-0000.lmdb", io.BytesIO(payload), len(payload))
    s3.put_object("ipsp", prefix + "manifest.parquet", io.BytesIO(b"pq"), 2)

    response = s3.get_object("ipsp", prefix + "shard-0000.lmdb", offset=1000, length=300)
    try:
        chunk = response.read()
    finally:
        response.close()
        response.release_conn()
    listed = sorted(o.object_name for o in s3.list_objects("ipsp", prefix=prefix, recursive=True))

    assert chunk == payload[1000:1300]
    assert listed == [prefix + "manifest.parquet", prefix + "shard-0000.lmdb"]
    # kept on disk, under the stack folder
    on_disk = StackLayout.from_settings(stack_settings).s3_data / "ipsp" / prefix / "shard-0000.lmdb"
    assert on_disk.read_bytes() == payload
    for name in listed:
        s3.remove_object("ipsp", name)


@pytest.mark.parametrize("wrong", ["access_key", "secret_key"])
def test_s3_refuses_wrong_credentials(stack_settings: Settings, wrong: str) -> None:
    keys = {
        "access_key": stack_settings.s3_access_key,
        "secret_key": stack_settings.s3_secret_key.get_secret_value(),
    }
    keys[wrong] = keys[wrong][:-4] + "XXXX"
    intruder = s3_client(stack_settings.s3_endpoint, keys["access_key"], keys["secret_key"])

    with pytest.raises(S3Error) as refused:
        intruder.put_object("ipsp", "intruder.txt", io.BytesIO(b"x"), 1)
    with pytest.raises(S3Error):
        intruder.list_buckets()

    assert refused.value.code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}
