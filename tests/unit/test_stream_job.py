"""Driver-side helpers of the stream job: checkpoint naming, watermark state, retries, failure text."""

from __future__ import annotations

from pathlib import Path

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from ipsp import mongo
from ipsp.config import Settings
from ipsp.streaming import sinks
from ipsp.streaming.control import describe_failure
from ipsp.streaming.job import StreamOptions, StreamReport, checkpoint_location, spark_checkpoint
from support.fakes import UnansweringStore


def settings(tmp_path: Path, **extra: object) -> Settings:
    return Settings(home=tmp_path, **extra)  # type: ignore[arg-type]


def test_checkpoint_defaults_to_database_query_and_topic(tmp_path: Path) -> None:
    s = settings(tmp_path)
    uri = checkpoint_location(s, StreamOptions(topic="feed-a"))
    assert uri == (tmp_path / "checkpoints" / "traffic_db" / "traffic-stream-feed-a").as_uri()
    other = checkpoint_location(s, StreamOptions(topic="feed-b", query="q2"))
    assert other.endswith("/traffic_db/q2-feed-b")
    # the same query into another database is another checkpoint
    assert checkpoint_location(settings(tmp_path, mongo_db="other"), StreamOptions(topic="feed-a")).endswith(
        "/other/traffic-stream-feed-a"
    )


def test_checkpoint_accepts_a_plain_path_and_s3(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert (
        checkpoint_location(s, StreamOptions(topic="t", checkpoint=str(tmp_path / "cp"))) == (tmp_path / "cp").as_uri()
    )
    assert spark_checkpoint("s3://bucket/cp/q-t") == "s3a://bucket/cp/q-t"
    from ipsp.errors import UserError

    with pytest.raises(UserError):
        checkpoint_location(s, StreamOptions(topic="t", checkpoint="ftp://host/cp"))


def test_retries_transient_errors_then_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mongo.time, "sleep", lambda s: None)
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise AutoReconnect("connection refused")
        return "ok"

    assert mongo.with_retries(flaky, "test write", retry_seconds=60) == "ok"
    assert calls["n"] == 3

    def down() -> None:
        raise AutoReconnect("connection refused")

    with pytest.raises(mongo.SinkUnavailable, match="did not accept test write"):
        mongo.with_retries(down, "test write", retry_seconds=0)


def test_non_transient_errors_are_not_retried() -> None:
    calls = {"n": 0}

    def bad() -> None:
        calls["n"] += 1
        raise OperationFailure("bad query")

    with pytest.raises(OperationFailure):
        mongo.with_retries(bad, "x", retry_seconds=60)
    assert calls["n"] == 1


def test_failure_message_names_the_cause_and_how_to_resume() -> None:
    report = StreamReport(query="traffic-stream-t", checkpoint="file:///cp")
    text = (
        "[FOREACH_BATCH_USER_FUNCTION_ERROR] An error occurred\n"
        "ipsp.mongo.SinkUnavailable: MongoDB did not accept bulk upsert of 8 into analysis_results "
        "after 5 attempts over 10s: connection refused\n  at org.apache..."
    )
    message = describe_failure(RuntimeError(text), report)
    assert "MongoDB did not accept bulk upsert" in message
    assert "runs again when you restart" in message
    assert "file:///cp" in message


def test_micro_batches_are_sized_in_seconds_of_measured_work() -> None:
    from ipsp.streaming.master import offsets_for

    assert offsets_for(8.0, 2, 0.1) == 160  # 2 slots x 10 frames/s x 8 s
    assert offsets_for(8.0, 2, 100.0) == 2  # never fewer than one record per slot


@pytest.mark.parametrize(
    ("master", "expected"),
    [("local[2]", "local[2,4]"), ("local[*]", "local[*,4]"), ("local", "local[1,4]"), ("local[2,3]", "local[2,3]"),
     ("spark://h:7077", "spark://h:7077")],
)  # fmt: skip
def test_a_local_master_retries_failed_tasks(master: str, expected: str) -> None:
    from ipsp.streaming.job import spark_conf
    from ipsp.streaming.master import with_local_retries

    assert with_local_retries(master) == expected
    conf = spark_conf(Settings(spark_master=master), StreamOptions(topic="t"))  # type: ignore[call-arg]
    assert int(conf["spark.task.maxFailures"]) >= 4


@pytest.mark.parametrize(
    ("master", "cores", "expected"),
    [("spark://127.0.0.1:7077", 2, {"spark.cores.max": "2", "spark.scheduler.minRegisteredResourcesRatio": "1.0"}),
     ("spark://127.0.0.1:7077", 0, {}), ("local[2]", 2, {})],
)  # fmt: skip
def test_on_a_cluster_the_job_waits_for_the_cores_it_takes(master: str, cores: int, expected: dict[str, str]) -> None:
    from ipsp.streaming.job import spark_conf

    conf = spark_conf(Settings(spark_master=master, spark_cores_max=cores), StreamOptions(topic="t"))  # type: ignore[call-arg]
    keys = ("spark.cores.max", "spark.scheduler.minRegisteredResourcesRatio")
    assert {k: conf[k] for k in keys if k in conf} == expected


@pytest.mark.parametrize(
    ("checkpoint", "rename_based"),
    [("file:///srv/ipsp/checkpoints/q", True), ("s3://bucket/checkpoints/q", False), ("", False)],
)
def test_a_local_checkpoint_is_written_by_the_file_system_based_manager(checkpoint: str, rename_based: bool) -> None:
    from ipsp.streaming.job import spark_conf

    conf = spark_conf(Settings(), StreamOptions(topic="t"), checkpoint)  # type: ignore[call-arg]
    manager = conf.get("spark.sql.streaming.checkpointFileManagerClass", "")
    assert manager.endswith(".FileSystemBasedCheckpointFileManager") is rename_based
    # the raw local file system only for file:// paths; S3 keeps its own
    assert ("spark.hadoop.fs.file.impl" in conf) is rename_based


@pytest.mark.parametrize("task_rows", [0, 50])
def test_the_kafka_source_reads_its_topic_without_the_brokers_long_poll(task_rows: int) -> None:
    from ipsp.streaming.job import kafka_source_options

    options = StreamOptions(topic="frames", task_rows=task_rows)  # type: ignore[call-arg]
    source = kafka_source_options(Settings(kafka_bootstrap="127.0.0.1:9092"), options, 40)  # type: ignore[call-arg]
    assert source["subscribe"] == "frames" and source["maxOffsetsPerTrigger"] == "40"
    assert source["kafka.bootstrap.servers"] == "127.0.0.1:9092"
    # Kafka's 500 ms default held every task at the tail of a live topic for its read-ahead fetch
    assert int(source["kafka.fetch.max.wait.ms"]) <= 50
    assert source.get("maxRecordsPerPartition") == (str(task_rows) if task_rows else None)


@pytest.mark.parametrize("content", [None, b"this is not an ONNX model"])
def test_a_model_that_does_not_load_fails_before_anything_is_read(tmp_path: Path, content: bytes | None) -> None:
    from ipsp.errors import UserError
    from ipsp.streaming.job import run_stream

    model = tmp_path / "broken.onnx"
    if content is not None:
        model.write_bytes(content)
    # nothing listens on these ports: reaching Kafka or MongoDB would fail differently
    s = settings(tmp_path, model=str(model), kafka_bootstrap="127.0.0.1:1", mongo_uri="mongodb://127.0.0.1:1/")
    with pytest.raises(UserError, match=r"broken\.onnx"):
        run_stream(s, StreamOptions(topic="t"))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize(
    ("master", "parallelism", "slots"),
    [("local[2]", 4, 2), ("local[3,2]", 4, 3), ("local", 4, 1), ("spark://host:7077", 16, 16)],
)
def test_task_slots(master: str, parallelism: int, slots: int) -> None:
    from ipsp.streaming.master import task_slots

    assert task_slots(master, parallelism) == slots


def test_a_stored_result_is_replaced_only_by_a_later_kafka_record_or_another_model() -> None:
    def doc(partition: int, offset: int, sha: str = "a") -> dict[str, object]:
        return {"pipeline": {"kafka_partition": partition, "kafka_offset": offset}, "model": {"sha256": sha}}

    assert sinks.supersedes(doc(0, 9), doc(0, 5))
    assert not sinks.supersedes(doc(0, 5), doc(0, 9))  # an older copy never overwrites a newer one
    assert sinks.supersedes(doc(1, 0), doc(0, 99))  # (partition, offset) order
    assert not sinks.supersedes(doc(0, 5), doc(0, 5))  # the same record again: already stored
    assert sinks.supersedes(doc(0, 5, "b"), doc(0, 5))  # the same record by another model: rewritten


def test_an_object_store_outage_is_waited_out_then_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipsp.errors import ServiceUnavailable
    from ipsp.streaming.task import fetch

    monkeypatch.setattr(fetch.time, "sleep", lambda _s: None)
    reader = UnansweringStore(failures=2)
    assert fetch.fetch_with_retries(reader, "s3://b/s.lmdb", ["k"], 60.0) == {"k": b"x"}
    assert reader.calls == 3
    with pytest.raises(ServiceUnavailable):
        fetch.fetch_with_retries(UnansweringStore(failures=2), "s3://b/s.lmdb", ["k"], 0.0)


@pytest.mark.parametrize(
    ("master", "spread"), [("local[2]", True), ("local", True), ("spark://127.0.0.1:7077", False), ("k8s://h", False)]
)
def test_only_one_process_spreads_batches_round_robin(master: str, spread: bool) -> None:
    from ipsp.streaming.master import round_robin

    # on a cluster the Kafka partitions (keyed by camera) keep their executors, so a camera's shards stay on one
    assert round_robin(master) is spread


def test_shard_fetches_are_folded_per_cache() -> None:
    from ipsp.streaming import locality
    from ipsp.streaming.task.outcome import TaskReport

    shard = "s3://ipsp/datasets/d/shards/{0}/{0}-0000.lmdb".format
    totals: dict[str, locality.CacheUse] = {}
    first = [
        TaskReport(cache="a:/c", fetched=f"{shard('cam_01')}\n{shard('cam_03')}", fetched_bytes=30, cache_bytes=30),
        TaskReport(cache="b:/c", fetched=shard("cam_02"), fetched_bytes=10, cache_bytes=10),
        TaskReport(),  # a task with no rows read no shard
    ]
    batch = locality.fold(first, totals)
    assert set(batch) == {"a:/c", "b:/c"} and batch["a:/c"].cameras == ["cam_01", "cam_03"]
    batch = locality.fold([TaskReport(cache="a:/c", cache_hits=2, cache_bytes=30)], totals)
    assert batch["a:/c"].fetched == [] and batch["a:/c"].hits == 2
    assert (totals["a:/c"].tasks, totals["a:/c"].hits, len(totals["a:/c"].fetched)) == (2, 2, 2)
    lines = locality.summary_lines(totals)
    assert lines[0] == (
        "shard cache a:/c: 2 task(s), 2 shard(s) fetched (30 bytes), 2 hit(s), holds 30 bytes; "
        "cameras fetched: cam_01 cam_03"
    )
    figures = locality.as_json(totals)["b:/c"]
    assert figures == {"tasks": 1, "shards_fetched": 1, "fetched_bytes": 10, "hits": 0, "cache_bytes": 10,
                       "cameras_fetched": ["cam_02"], "busy_s": 0.0}  # fmt: skip
    assert lines[1].endswith("cameras fetched: cam_02") and "b:/c fetched 1 (0.0 MB)" in locality.batch_line(totals)
    # a results file names the caches without the machine's paths
    named = locality.as_json({"w:/srv/ipsp/stack/cache-0": totals["a:/c"], "b:/c": totals["b:/c"]}, Path("/srv/ipsp"))
    assert set(named) == {"w:stack/cache-0", "b:/c"}


def test_balance_says_how_evenly_the_machines_shared_each_batch() -> None:
    from ipsp.streaming import locality
    from ipsp.streaming.task.outcome import TaskReport

    def batch(*tasks: tuple[str, float]) -> dict[str, locality.CacheUse]:
        return locality.fold([TaskReport(cache=cache, task_ms=ms) for cache, ms in tasks], {})

    # two machines, 12 and 8 cameras' work: the batch lasts as long as the busier one
    assert locality.balance([batch(("a", 1200.0), ("b", 800.0))]) == pytest.approx(1000 / 1200)
    # summed over batches: an even batch, then one b sat out: 2000 ms of work took 1500 ms where 1000 would do
    assert locality.balance([batch(("a", 500.0), ("b", 500.0)), batch(("a", 1000.0))]) == pytest.approx(1000 / 1500)
    # tasks on one machine add up; one machine alone is always even
    assert locality.balance([batch(("a", 300.0), ("a", 300.0), ("b", 600.0))]) == pytest.approx(1.0)
    assert locality.balance([batch(("a", 900.0))]) == 1.0 and locality.balance([]) == 1.0
