"""The SparkSession helper's configuration (no JVM is started here)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ipsp.config import Settings
from ipsp.errors import UserError
from ipsp.sparkutil import connector_jars, jars_dir, spark_conf


def test_conf_for_a_small_local_machine(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, spark_master="local[2]", spark_driver_memory="1g")
    jars = [tmp_path / "a.jar", tmp_path / "b.jar"]

    conf = spark_conf("job", settings, jars)

    assert conf["spark.master"] == "local[2]"
    assert conf["spark.driver.memory"] == "1g"
    assert conf["spark.jars"] == f"{jars[0]},{jars[1]}"
    assert conf["spark.pyspark.python"] == sys.executable
    assert conf["spark.sql.shuffle.partitions"] == "4"
    assert conf["spark.python.worker.reuse"] == "true"
    assert conf["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    assert conf["spark.ui.enabled"] == "true" and int(conf["spark.port.maxRetries"]) >= 16


def test_caller_conf_wins_and_booleans_are_spark_style(tmp_path: Path) -> None:
    conf = spark_conf(
        "job", Settings(home=tmp_path), [], **{"spark.sql.shuffle.partitions": 2, "spark.ui.enabled": False}
    )

    assert conf["spark.sql.shuffle.partitions"] == "2"
    assert conf["spark.ui.enabled"] == "false"
    assert "spark.jars" not in conf


def test_jars_dir_defaults_under_the_stack_and_can_be_set(tmp_path: Path) -> None:
    assert jars_dir(Settings(home=tmp_path)) == tmp_path / "stack" / "spark-jars"
    assert jars_dir(Settings(home=tmp_path, spark_jars_dir=tmp_path / "j")) == tmp_path / "j"


def test_connector_jars_found_or_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "jars"
    folder.mkdir()
    settings = Settings(home=tmp_path, spark_jars_dir=folder)

    with pytest.raises(UserError, match=r"run `ipsp stack fetch`"):
        connector_jars(settings)
    for name in ["spark-sql-kafka-0-10_2.13-4.2.0.jar", "kafka-clients-3.9.2.jar"]:
        (folder / name).write_bytes(b"")
    assert [p.name for p in connector_jars(settings)] == [
        "kafka-clients-3.9.2.jar",
        "spark-sql-kafka-0-10_2.13-4.2.0.jar",
    ]


def test_s3a_points_at_the_configured_server(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        s3_endpoint="http://127.0.0.1:9400",
        s3_access_key="AK",
        s3_secret_key="SK",
        s3_region="eu-west-1",
    )

    conf = spark_conf("job", settings, [])

    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9400"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert (conf["spark.hadoop.fs.s3a.access.key"], conf["spark.hadoop.fs.s3a.secret.key"]) == ("AK", "SK")
    https = spark_conf("job", Settings(home=tmp_path, s3_endpoint="https://s3.example:443"), [])
    assert https["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert "spark.hadoop.fs.s3a.access.key" not in https  # no keys: the SDK's own chain decides


@pytest.mark.parametrize(
    ("master", "loopback"),
    [("local[2]", True), ("spark://127.0.0.1:7077", True), ("spark://localhost:7077", True),
     ("spark://spark-master:7077", False), ("k8s://https://kubernetes.default.svc:443", False)],
)  # fmt: skip
def test_a_loopback_cluster_gets_a_loopback_driver_and_its_own_parallelism(
    tmp_path: Path, master: str, loopback: bool
) -> None:
    conf = spark_conf("job", Settings(home=tmp_path, spark_master=master), [])

    assert (conf.get("spark.driver.host") == "127.0.0.1") is loopback
    # a cluster's default parallelism is its executors' cores, which the stream job counts as task slots
    assert ("spark.default.parallelism" in conf) is master.startswith("local")
