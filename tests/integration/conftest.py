"""Integration fixtures: the real local stack (Kafka, FerretDB, S3Proxy), Spark, the stream tests' feed.

Every test in this folder is marked ``integration``. The session fixture
``stack_settings`` brings the stack up when it is not already answering (first
run fetches and builds it: minutes) and yields settings pointing at it; it
leaves the stack running afterwards so the next run starts warm (``ipsp stack
down`` or ``make down`` stops it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ipsp.config import Settings, get_settings, load_settings

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from support.streamfeed import Dataset, Feed

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration with ``integration``."""
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def stack_settings() -> Iterator[Settings]:
    """Settings pointing at the running local stack (started here if needed)."""
    from ipsp.localstack import stack

    current = stack.status(load_settings())
    if not current.all_up:
        current = stack.up(load_settings())
    get_settings.cache_clear()  # pick up the stack.env written by the first `up`
    yield load_settings(
        kafka_bootstrap=current.kafka_bootstrap,
        mongo_uri=current.mongo_uri,
        s3_endpoint=current.s3_endpoint,
        s3_access_key=current.s3_access_key,
        s3_secret_key=current.s3_secret_key,
    )


@pytest.fixture(scope="session")
def spark(stack_settings: Settings) -> Iterator[SparkSession]:
    """One local SparkSession (with the Kafka connector) shared by the whole session."""
    from ipsp.sparkutil import build_spark

    session = build_spark("ipsp-integration-tests", stack_settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def dataset(stack_settings: Settings) -> Iterator[Dataset]:
    """The stream tests' synthetic feed, packed once for all of them (read only: each test has its own topic)."""
    from support.streamfeed import packed_dataset

    with packed_dataset(stack_settings) as packed:
        yield packed


@pytest.fixture
def feed(stack_settings: Settings, dataset: Dataset) -> Iterator[Feed]:
    """A fresh topic (the feed with bad records mixed in), database and checkpoint for one stream test."""
    from support.streamfeed import fresh_feed

    with fresh_feed(stack_settings, dataset) as made:
        yield made
