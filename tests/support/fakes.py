"""Small fakes for the stream task's seams (:mod:`ipsp.streaming.task.protocols`), for unit tests.

Only for cases a real component cannot show on demand: a sink that records
instead of writing to MongoDB (the integration tests write to the real server),
a store that stops answering, an inference that fails. Everything else in the
task tests is real: the shipped model, LMDB shards written by the packer's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ipsp.contracts import AnalysisResult, DeadLetter
from ipsp.errors import ServiceUnavailable


class RecordingSink:
    """The task's sink, in memory: what it would write to MongoDB, in order."""

    def __init__(self) -> None:
        self.results: list[AnalysisResult] = []
        self.letters: list[DeadLetter] = []

    def write_results(self, results: Sequence[AnalysisResult]) -> int:
        self.results.extend(results)
        return len(results)

    def write_dead_letters(self, letters: Sequence[DeadLetter]) -> int:
        self.letters.extend(letters)
        return len(letters)

    def delete_dead_letters(self, ids: Sequence[str]) -> int:
        return 0


class UnansweringStore:
    """A shard source whose object store does not answer its first ``failures`` calls (forever by default)."""

    def __init__(self, failures: int = -1, data: bytes = b"x") -> None:
        self.failures = failures
        self.data = data
        self.calls = 0

    def get_many(self, shard_uri: str, keys: Sequence[str]) -> dict[str, bytes | Exception]:
        self.calls += 1
        if self.failures < 0 or self.calls <= self.failures:
            raise ServiceUnavailable("S3 server at http://127.0.0.1:9 does not answer")
        return dict.fromkeys(keys, self.data)


class FailingInference:
    """A real detector's preprocessing whose inference fails (out of memory on the device)."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector

    @property
    def last_timings(self) -> Any:
        return self.detector.last_timings

    def prepare_bytes(self, frames: Sequence[bytes], labels: Sequence[str]) -> Any:
        return self.detector.prepare_bytes(frames, labels)

    def detect_prepared(self, prepared: Any) -> Any:
        raise MemoryError("onnxruntime could not allocate")
