"""Build a SparkSession for local runs: connector jars, the venv's Python, small-machine defaults.

The Kafka source is not part of pyspark; ``ipsp stack fetch`` resolves it from
Maven Central into ``<home>/stack/spark-jars`` (or ``settings.spark_jars_dir``)
and this helper hands those jars to Spark with ``spark.jars``, so nothing is
resolved from the network when a job starts. An image that copies the jars into
pyspark's own ``jars/`` folder needs no ``spark.jars`` at all.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from ipsp.config import Settings, load_settings
from ipsp.errors import UserError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

CONNECTOR_PREFIX = "spark-sql-kafka-0-10_"


def jars_dir(settings: Settings) -> Path:
    """Folder holding the Kafka connector jars."""
    if settings.spark_jars_dir is not None:
        return Path(settings.spark_jars_dir)
    return Path(settings.home) / "stack" / "spark-jars"


def _pyspark_ships_connector() -> bool:
    import pyspark

    return any((Path(pyspark.__file__).parent / "jars").glob(CONNECTOR_PREFIX + "*.jar"))


def connector_jars(settings: Settings) -> list[Path]:
    """Jars to pass as ``spark.jars`` (empty when pyspark already ships the connector)."""
    folder = jars_dir(settings)
    jars = sorted(folder.glob("*.jar"))
    if any(jar.name.startswith(CONNECTOR_PREFIX) for jar in jars):
        return jars
    if _pyspark_ships_connector():
        return []
    raise UserError(f"the Spark Kafka connector jars are missing from {folder}: run `ipsp stack fetch`")


def s3a_conf(settings: Settings) -> dict[str, str]:
    """Hadoop settings so ``s3a://bucket/key`` paths reach the configured S3 server.

    Path-style addressing and plain HTTP suit a local or in-cluster server (S3Proxy,
    MinIO); the SDK's default credential chain is replaced by the configured keys.
    """
    endpoint = settings.s3_endpoint
    prefix = "spark.hadoop.fs.s3a."
    values = {
        "endpoint": endpoint,
        "endpoint.region": settings.s3_region,
        "path.style.access": "true",
        "connection.ssl.enabled": str(endpoint.startswith("https://")).lower(),
    }
    if settings.s3_access_key:
        values["aws.credentials.provider"] = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
        values["access.key"] = settings.s3_access_key
        values["secret.key"] = settings.s3_secret_key.get_secret_value()
    return {prefix + key: value for key, value in values.items()}


def spark_conf(app_name: str, settings: Settings, jars: list[Path], **conf: Any) -> dict[str, str]:
    """The configuration ``build_spark`` applies; ``conf`` (Spark key -> value) wins."""
    python = sys.executable
    base: dict[str, Any] = {
        "spark.app.name": app_name,
        "spark.master": settings.spark_master,
        "spark.driver.memory": settings.spark_driver_memory,
        "spark.pyspark.python": python,
        "spark.pyspark.driver.python": python,
        # a 2-core machine: few shuffle partitions, reused Python workers (the model loads once each)
        "spark.sql.shuffle.partitions": 4,
        "spark.python.worker.reuse": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        # several sessions may run side by side: the UI moves to the next free port
        "spark.ui.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.port.maxRetries": 100,
        "spark.log.level": "WARN",
    }
    if settings.spark_master.startswith("local"):
        # a cluster's default is the cores of its registered executors: the stream job sizes its tasks by it
        base["spark.default.parallelism"] = 4
    if on_loopback(settings.spark_master):
        # executors of a loopback cluster (``ipsp stack spark up``) reach the driver on loopback too
        base["spark.driver.host"] = "127.0.0.1"
        base["spark.driver.bindAddress"] = "127.0.0.1"
    base.update(s3a_conf(settings))
    if jars:
        base["spark.jars"] = ",".join(str(jar) for jar in jars)
    base.update(conf)
    return {key: str(value).lower() if isinstance(value, bool) else str(value) for key, value in base.items()}


def on_loopback(master: str) -> bool:
    """True for a local master and for a cluster master on this machine's loopback address."""
    if master.startswith("local"):
        return True
    return urlparse(master).hostname in ("127.0.0.1", "localhost")


def build_spark(app_name: str, settings: Settings | None = None, **conf: Any) -> SparkSession:
    """A SparkSession for local runs with the Kafka connector on the class path.

    Extra Spark settings go in as keyword arguments with their Spark names,
    e.g. ``build_spark("job", **{"spark.sql.shuffle.partitions": 2})``. Driver
    memory only applies when this call starts the JVM (the first session in a process).
    """
    return _build(app_name, settings, True, conf)


def build_batch_spark(app_name: str, settings: Settings | None = None, **conf: Any) -> SparkSession:
    """``build_spark`` without the Kafka connector, for a batch job that never reads Kafka (``ipsp pack``)."""
    return _build(app_name, settings, False, conf)


def _build(app_name: str, settings: Settings | None, kafka: bool, conf: dict[str, Any]) -> SparkSession:
    settings = settings if settings is not None else load_settings()
    if "JAVA_HOME" not in os.environ:
        from ipsp.localstack.fetch import require_java

        require_java()
    values = spark_conf(app_name, settings, connector_jars(settings) if kafka else [], **conf)
    # Python workers must run the same interpreter (and venv) as the driver
    os.environ["PYSPARK_PYTHON"] = values["spark.pyspark.python"]
    os.environ["PYSPARK_DRIVER_PYTHON"] = values["spark.pyspark.driver.python"]

    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for key, value in values.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(values["spark.log.level"])
    return spark
