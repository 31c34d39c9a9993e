"""Serving documents written batch by batch equal what `ipsp rollups rebuild` computes, and prune keeps them."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from pymongo import monitoring

from ipsp import mongo
from ipsp.config import Settings
from ipsp.streaming.maintenance import prune, rebuild
from ipsp.streaming.sinks import MongoSink
from ipsp.streaming.windows import status_function
from support.serving import (
    DEFAULT_START,
    check_serving_equals_rebuild,
    open_sink,
    serving_snapshot,
    write_through_sink,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def sink(stack_settings: Settings):  # type: ignore[no-untyped-def]
    name = f"ipsp_test_rebuild_{uuid.uuid4().hex[:8]}"
    sink = open_sink(stack_settings, name)
    yield sink
    sink.client.drop_database(name)
    sink.client.close()


def test_batches_equal_rebuild_and_a_replay_changes_nothing(stack_settings: Settings, sink) -> None:  # type: ignore[no-untyped-def]
    # 25 minutes from 07:40: windows on both sides of an hour, batches of 50 frames end mid-window
    start = DEFAULT_START + timedelta(minutes=40)
    write_through_sink(sink, stack_settings, 900, 3, start, frames_per_second=0.2, batch_frames=50, dead_every=97)
    check_serving_equals_rebuild(sink.db, stack_settings)
    before = serving_snapshot(sink.db)
    assert len(before[mongo.CAMERA_HOURS]) == 3 * 2 and len(before[mongo.CAMERAS]) == 3
    # the same batches again (a replay from an empty writer cache): the same documents
    sink.serving_writer = None
    write_through_sink(sink, stack_settings, 900, 3, start, frames_per_second=0.2, batch_frames=50, dead_every=97)
    after = serving_snapshot(sink.db)
    for name in (mongo.CAMERA_HOURS, mongo.CAMERA_DAYS, mongo.CAMERAS):
        assert after[name] == before[name], name
    check_serving_equals_rebuild(sink.db, stack_settings)  # the replayed batches' new timings included


def test_rebuild_writes_what_the_writer_wrote(stack_settings: Settings, sink) -> None:  # type: ignore[no-untyped-def]
    write_through_sink(sink, stack_settings, 300, 3, frames_per_second=0.5, batch_frames=40)
    before = serving_snapshot(sink.db)
    for name in mongo.SERVING_COLLECTIONS:
        sink.db[name].drop()
    written = rebuild(sink.db, stack_settings.window_seconds, status_function(stack_settings.cameras_config))
    assert written[mongo.CAMERAS] == 3
    assert serving_snapshot(sink.db) == before


def test_prune_deletes_old_frames_and_keeps_rollup_totals(stack_settings: Settings, sink) -> None:  # type: ignore[no-untyped-def]
    write_through_sink(sink, stack_settings, 240, 2, frames_per_second=0.1, batch_frames=40)
    frames = sink.db["analysis_results"].count_documents({})
    before = serving_snapshot(sink.db)
    # retention of 10 minutes, seen from the run's end: about half the frames are older
    now = DEFAULT_START + timedelta(minutes=20)
    settings = stack_settings.model_copy(
        update={"retention_frames_days": 10 / 1440, "retention_windows_days": 10 / 1440,
                "retention_progress_days": 0, "retention_dead_letters_days": 0}
    )  # fmt: skip
    deleted = prune(sink.db, settings, now=now)
    left = sink.db["analysis_results"].count_documents({})
    assert 0 < deleted["analysis_results"] == frames - left and left > 0
    assert all(doc["event_time"] >= now - timedelta(minutes=10) for doc in sink.db["analysis_results"].find({}))
    assert deleted["traffic_windows"] > 0
    assert serving_snapshot(sink.db) == before  # the rollups keep their totals


class Statements(monitoring.CommandListener):
    """A pymongo command listener: each command's name, collection and write errors."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str]] = []
        self.collisions: list[str] = []  # collections where an insert met an existing _id

    def started(self, event) -> None:  # type: ignore[no-untyped-def]
        self.sent.append((event.command_name, str(event.command.get(event.command_name))))

    def succeeded(self, event) -> None:  # type: ignore[no-untyped-def]
        if event.command_name == "insert" and event.reply.get("writeErrors"):
            self.collisions.append(str(event.reply.get("writeErrors")[0].get("errmsg", "")))

    def failed(self, event) -> None:  # type: ignore[no-untyped-def]
        pass


def test_a_batch_reads_each_open_window_once_and_never_inserts_over_a_stored_document(
    stack_settings: Settings,
) -> None:
    # 3 cameras, 60 s each at 1 frame/s, batches of 10 s: six batches fold into the same open windows
    name = f"ipsp_test_held_{uuid.uuid4().hex[:8]}"
    statements = Statements()
    client = mongo.connect(stack_settings.mongo_uri.get_secret_value(), timeout_ms=10_000, listeners=[statements])
    sink = MongoSink(client, name, retry_seconds=120)
    try:
        batches = write_through_sink(sink, stack_settings, 180, 3, frames_per_second=1.0, batch_frames=30)
        windows = sink.db[mongo.WINDOWS].count_documents({})
        window_reads = [s for s in statements.sent if s == ("find", mongo.WINDOWS)]
        window_writes = [s for s in statements.sent if s[1] == mongo.WINDOWS and s[0] in ("insert", "update")]
        assert batches == 6 and 3 <= windows < batches * 3
        assert len(window_reads) == windows  # each window read from the store once, when first seen
        assert len(window_writes) >= batches  # every batch wrote its windows
        assert statements.collisions == []  # no insert of a document the writer had read or written
        check_serving_equals_rebuild(sink.db, stack_settings)
    finally:
        client.drop_database(name)
        client.close()
