"""What a task hands back to the driver: one :class:`FrameOutcome` per Kafka record and one :class:`TaskReport`.

Both are plain typed records; the Arrow schema the executors return through
``mapInArrow`` is derived from their fields (:func:`arrow_schema`), so the
counts travel as typed columns, never as text, and a new field needs no second
list to keep in step.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

from ipsp.contracts import AnalysisResult, DeadLetter
from ipsp.streaming.windows import COUNT_FIELDS, to_ms


@dataclass(frozen=True)
class FrameOutcome:
    """One Kafka record's outcome: a written result (``kind`` "result") or a dead letter ("dead").

    A result fills the event, count and Kafka fields; a dead letter the letter
    fields. Text fields a record lacks are empty ("" stands for None).
    """

    kind: str
    record_key: str = ""
    camera_id: str = ""
    # results
    event_id: str = ""
    event_ms: int = 0
    motorbike: int = 0
    car: int = 0
    bus: int = 0
    truck: int = 0
    bicycle: int = 0
    person: int = 0
    density: float = 0.0
    partition: int = 0
    offset: int = 0
    latency_ms: float = 0.0  # from the producer's hand-off to the write's return
    # dead letters: the document's _id, stage, reason and creation time (serving lists them)
    letter_id: str = ""
    stage: str = ""
    reason: str = ""
    created_ms: int = 0

    @classmethod
    def of_result(cls, result: AnalysisResult, latency_ms: float) -> FrameOutcome:
        """The outcome of a written result."""
        return cls(
            kind="result",
            record_key=result.record_key,
            camera_id=result.camera_id,
            event_id=result.id,
            event_ms=to_ms(result.event_time),
            **{name: getattr(result.counts, name) for name in COUNT_FIELDS},
            density=result.density_percent,
            partition=result.pipeline.kafka_partition,
            offset=result.pipeline.kafka_offset,
            latency_ms=latency_ms,
        )

    @classmethod
    def of_letter(cls, letter: DeadLetter) -> FrameOutcome:
        """The outcome of a written dead letter."""
        return cls(
            kind="dead",
            record_key=letter.record_key or "",
            camera_id=letter.camera_id or "",
            letter_id=letter.id,
            stage=letter.stage,
            reason=letter.reason,
            created_ms=to_ms(letter.created_at),
        )

    @property
    def figures(self) -> tuple[float, ...]:
        """The frame's contribution as a window stores it: the six class counts, then the density."""
        return (*(float(getattr(self, name)) for name in COUNT_FIELDS), float(self.density))


@dataclass
class TaskReport:
    """What one task did besides its outcomes: milliseconds per step, its write counts and its shard cache."""

    read_ms: float = 0.0
    parse_ms: float = 0.0
    fetch_ms: float = 0.0
    check_ms: float = 0.0
    pre_ms: float = 0.0
    #: time inference waited for its next batch; fetch, check and pre run on the prefetch thread
    wait_ms: float = 0.0
    infer_ms: float = 0.0
    post_ms: float = 0.0
    build_ms: float = 0.0
    write_ms: float = 0.0
    task_ms: float = 0.0
    kept: int = 0  # results the store kept (the rest: a later copy was there)
    stale: int = 0  # dead letters of earlier attempts deleted by this task
    # the shard cache the task read through (one per machine): where the task ran, as locality sees it
    cache: str = ""  # ``<host>:<cache folder>``
    fetched: str = ""  # shard URIs the task downloaded from the object store (cache misses), one per line
    fetched_bytes: int = 0
    cache_hits: int = 0  # shard reads served from the cache
    cache_bytes: int = 0  # bytes of shards the cache held when the task ended

    @property
    def fetched_shards(self) -> list[str]:
        """The shard URIs the task downloaded, in order."""
        return self.fetched.split("\n") if self.fetched else []


_ARROW_KINDS = {"str": "string", "int": "int64", "float": "float64"}
#: the task's own row among the outcome rows
TASK_KIND = "task"


def _columns() -> list[tuple[str, str]]:
    out = [(f.name, _ARROW_KINDS[str(f.type)]) for f in fields(FrameOutcome)]
    out += [(f.name, _ARROW_KINDS[str(f.type)]) for f in fields(TaskReport)]
    return out


#: ``(name, Arrow type name)`` of every column a task returns, derived from the two records
COLUMNS: tuple[tuple[str, str], ...] = tuple(_columns())


def schema_ddl() -> str:
    """The columns as a Spark DDL string (``mapInArrow``'s schema)."""
    spark_kinds = {"string": "string", "int64": "long", "float64": "double"}
    return ", ".join(f"{name} {spark_kinds[kind]}" for name, kind in COLUMNS)


def arrow_schema() -> Any:
    """The columns as a pyarrow schema (matches :func:`schema_ddl`)."""
    import pyarrow as pa

    return pa.schema([pa.field(name, getattr(pa, kind)()) for name, kind in COLUMNS])


def to_record_batch(outcomes: Iterable[FrameOutcome], report: TaskReport) -> Any:
    """One task's rows: its outcomes, then its report (a row of kind ``task``)."""
    import pyarrow as pa

    rows = [asdict(o) for o in outcomes]
    rows.append({"kind": TASK_KIND, **asdict(report)})
    return pa.RecordBatch.from_pylist(rows, schema=arrow_schema())


def from_table(table: Any) -> tuple[list[FrameOutcome], list[TaskReport]]:
    """The outcomes and the task reports of a batch's collected table."""
    outcome_names = [f.name for f in fields(FrameOutcome)]
    report_names = [f.name for f in fields(TaskReport)]
    outcomes: list[FrameOutcome] = []
    reports: list[TaskReport] = []
    for row in table.to_pylist():
        if row["kind"] == TASK_KIND:
            reports.append(TaskReport(**{n: row[n] for n in report_names}))
        else:
            outcomes.append(FrameOutcome(**{n: row[n] for n in outcome_names}))
    return outcomes, reports
