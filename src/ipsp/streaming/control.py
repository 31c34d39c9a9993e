"""Stopping the stream query cleanly, and saying why it failed.

A stop (SIGTERM/SIGINT, or the caller's ``until``) lets the running batch
finish and commit; the query is then stopped between batches, or the next
batch refuses to start (:class:`GracefulStop`) and stays uncommitted for the
next run. A failed query becomes one readable paragraph (:func:`describe_failure`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from ipsp.errors import UserError

if TYPE_CHECKING:
    from ipsp.streaming.job import BatchSink, StreamReport

log = logging.getLogger("ipsp.stream")


class StopRequest:
    """SIGTERM/SIGINT handler: ask the query to stop once the running batch is done."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.by_signal = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt  # a second signal stops at once
        log.warning("signal %d: stopping after the current batch (send again to stop now)", signum)
        self.by_signal = True
        self.requested.set()


class GracefulStop(Exception):
    """Raised in ``foreachBatch`` to refuse a batch once a stop was requested."""


def wait(
    query: Any,
    handler: BatchSink,
    report: StreamReport,
    until: Callable[[StreamReport], bool] | None = None,
) -> None:
    """Wait for the query; on a stop request stop it between batches; raise its failure clearly.

    A stop (signal, or ``until`` true) lets the running batch finish and commit:
    the query is stopped while idle, or the next batch refuses to start
    (``GracefulStop``), staying uncommitted for the next run.
    """
    from pyspark.errors import StreamingQueryException

    stop = handler.stop
    next_idle_check = time.monotonic() + IDLE_CHECK_SECONDS
    try:
        while query.isActive:
            if until is not None and until(report):
                stop.requested.set()
            if stop.requested.is_set():
                with handler.lock:
                    idle = between_batches(query, handler)
                if idle:
                    query.stop()
                    break
            elif time.monotonic() >= next_idle_check:
                next_idle_check = time.monotonic() + IDLE_CHECK_SECONDS
                with handler.lock:
                    if between_batches(query, handler):
                        handler.close_idle()
            query.awaitTermination(0.5)
        query.awaitTermination()
    except StreamingQueryException as exc:
        if not (stop.requested.is_set() and "GracefulStop" in str(exc)):
            raise StreamFailed(describe_failure(exc, report)) from None
    finally:
        report.stopped_by_signal = stop.by_signal


def between_batches(query: Any, handler: BatchSink) -> bool:
    """True when no batch runs and the last one is committed (Spark reports progress after the commit)."""
    if handler.in_batch.is_set():
        return False
    if handler.last_batch is None:
        return True
    progress = query.lastProgress
    return progress is not None and int(progress["batchId"]) >= handler.last_batch


#: how often a quiet query looks for windows of idle cameras to close
IDLE_CHECK_SECONDS = 10.0


class StreamFailed(UserError):
    """The query stopped on an error; what was committed stays, the rest replays on restart."""

    exit_code = 4


def describe_failure(exc: BaseException, report: StreamReport) -> str:
    """One readable paragraph for a failed query: the cause and how to resume."""
    text = str(exc)
    cause = next((line.strip() for line in text.splitlines() if "SinkUnavailable" in line or "Error:" in line), "")
    if "SinkUnavailable" in text or "MongoDB did not accept" in text:
        lines = [line for line in text.splitlines() if "MongoDB did not accept" in line]
        cause = lines[-1].strip() if lines else cause
    cause = cause or text.splitlines()[0][:500]
    return (
        f"query {report.query} stopped: {cause}. Batches committed so far are kept; the failed batch was not "
        f"committed and runs again when you restart the same command (checkpoint {report.checkpoint})."
    )
