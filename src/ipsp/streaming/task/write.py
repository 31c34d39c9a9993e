"""The write stage: results and dead letters to the sink on a background thread, one bounded queue deep.

Inference (ONNX Runtime releases the GIL) then overlaps the previous batch's
write. An error in the writer is raised in the task at the next put or at
close, failing the task: the batch is then retried or replayed, never skipped.
"""

from __future__ import annotations

import queue
import threading
import time

from ipsp.contracts import utc_now
from ipsp.streaming.progress import elapsed_ms
from ipsp.streaming.task.analyze import Analyzed
from ipsp.streaming.task.outcome import FrameOutcome, TaskReport
from ipsp.streaming.task.protocols import ResultSink


class Writer:
    """Writes each batch's documents, then records one :class:`FrameOutcome` per document written.

    ``reconcile``: the task may have run before (a retried attempt, a replayed
    batch), so dead letters an earlier run left for records that now have a
    result are deleted.
    """

    def __init__(self, sink: ResultSink, report: TaskReport, reconcile: bool = False) -> None:
        self.sink = sink
        self.report = report
        self.reconcile = reconcile
        self.outcomes: list[FrameOutcome] = []
        self.error: BaseException | None = None
        self.queue: queue.Queue[Analyzed | None] = queue.Queue(maxsize=2)
        self.thread = threading.Thread(target=self._run, name="ipsp-writer", daemon=True)
        self.thread.start()

    def put(self, batch: Analyzed) -> None:
        """Queue one batch of documents (blocks while two are pending)."""
        self._raise()
        if batch.results or batch.letters:
            self.queue.put(batch)

    def close(self) -> list[FrameOutcome]:
        """Wait for every queued write; raise the writer's error if one happened; return the outcomes."""
        self.queue.put(None)
        self.thread.join()
        self._raise()
        return self.outcomes

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain without writing: the task is failing anyway
            try:
                self._write(item)
            except BaseException as exc:
                self.error = exc

    def _write(self, batch: Analyzed) -> None:
        started = time.perf_counter()
        self.report.kept += self.sink.write_results(batch.results)
        self.sink.write_dead_letters(batch.letters)
        if self.reconcile and batch.coords:
            # an earlier attempt of this task (or run of this batch) may have dead-lettered these records
            self.report.stale += self.sink.delete_dead_letters(batch.coords)
        written = utc_now()
        self.report.write_ms += (time.perf_counter() - started) * 1000
        for result in batch.results:
            # latency runs from the producer's hand-off to the moment the write returned
            latency = result.pipeline.latency_ms + elapsed_ms(result.processed_at, written)
            self.outcomes.append(FrameOutcome.of_result(result, latency))
        self.outcomes.extend(FrameOutcome.of_letter(letter) for letter in batch.letters)
