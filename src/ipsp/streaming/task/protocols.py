"""The seams of the stream task: what it needs from a shard reader, a detector and a sink.

The real ones are :class:`ipsp.storage.shards.ShardReader`,
:class:`ipsp.detection.detector.Detector` and :class:`ipsp.streaming.sinks.MongoSink`;
the unit tests pass small fakes (``tests/support/fakes.py``) where a real one
cannot show the case (a store that stops answering, an inference that fails).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ipsp.contracts import AnalysisResult, DeadLetter
    from ipsp.detection.detector import PreparedBatch, StepTimings
    from ipsp.detection.types import DetectResult


class ShardSource(Protocol):
    """Reads frames of one LMDB shard; a missing shard or key comes back per key as an exception."""

    def get_many(self, shard_uri: str, keys: Sequence[str]) -> dict[str, bytes | Exception]: ...


class FrameDetector(Protocol):
    """Decodes a batch of frames (the prefetch stage), then infers it (the task's own thread)."""

    @property
    def last_timings(self) -> StepTimings: ...

    def prepare_bytes(self, frames: Sequence[bytes], labels: Sequence[str]) -> PreparedBatch: ...

    def detect_prepared(self, prepared: PreparedBatch) -> list[DetectResult]: ...


class ResultSink(Protocol):
    """Writes results and dead letters by ``_id``; deletes dead letters a later attempt resolved."""

    def write_results(self, results: Sequence[AnalysisResult]) -> int: ...

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> int: ...

    def delete_dead_letters(self, ids: Sequence[str]) -> int: ...
