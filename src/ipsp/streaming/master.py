"""What the stream job's Spark settings and task layout depend on: the master and the checkpoint.

A ``local[N]`` master is one process of N task slots that retries a failed task
only when its URL says so; a cluster master offers the cores of its registered
executors, which the job waits for before it counts slots. Pure functions: the
job (:mod:`ipsp.streaming.job`) and the benchmarks call them.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlparse

from ipsp.config import Settings

#: attempts of one task before its batch fails (a local master needs it in the master URL too)
TASK_MAX_FAILURES = 4


def local_checkpoint_conf(checkpoint: str) -> dict[str, str]:
    """A checkpoint on a local disk written without starting processes.

    Without Hadoop's native library its local file system runs ``chmod`` for
    every file it creates, and ``FileContext`` renames run ``readlink`` for every
    status: about 15 processes per micro-batch from the driver JVM (strace),
    which made Spark's offset and commit log writes 65-105 ms each. The
    ``FileSystem``-based manager renames with ``File.renameTo`` (atomic on one
    disk), and the raw local file system writes no ``.crc`` side files; the two
    writes then take 7-19 ms (``bench-batch``). S3 checkpoints keep Spark's default.
    """
    if urlparse(checkpoint).scheme != "file":
        return {}
    return {
        "spark.sql.streaming.checkpointFileManagerClass":
            "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager",
        "spark.hadoop.fs.file.impl": "org.apache.hadoop.fs.RawLocalFileSystem",
    }  # fmt: skip


def cluster_conf(settings: Settings) -> dict[str, str]:
    """On a cluster with ``spark_cores_max``: take that many cores and wait until they all registered.

    Executors register a few seconds after the session starts; the warm-up counts
    the task slots and loads the model in every executor's Python worker, so it
    must not run before they are all there (Spark waits at most the given time).
    """
    if settings.spark_master.strip().startswith("local") or not settings.spark_cores_max:
        return {}
    return {
        "spark.cores.max": str(settings.spark_cores_max),
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
    }


def round_robin(master: str) -> bool:
    """Whether batches are spread round-robin over the slots: only on a local master (one process)."""
    return master.strip().startswith("local")


def with_local_retries(master: str) -> str:
    """A ``local[N]`` master retries failed tasks only when it says so: ``local[N,F]``."""
    match = re.fullmatch(r"local\[(\d+|\*)\]", master.strip())
    if match:
        return f"local[{match.group(1)},{TASK_MAX_FAILURES}]"
    if master.strip() == "local":
        return f"local[1,{TASK_MAX_FAILURES}]"
    return master


def offsets_for(batch_seconds: float, slots: int, frame_s: float) -> int:
    """Kafka records per micro-batch for ``batch_seconds`` of work on ``slots`` (at least one per slot)."""
    per_second = slots / max(frame_s, 1e-3)
    return max(slots, int(batch_seconds * per_second))


def task_slots(master: str, default_parallelism: int) -> int:
    """Tasks that run at once: N of ``local[N]`` (or the cores for ``local[*]``), else Spark's parallelism."""
    match = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master.strip())
    if match:
        return os.cpu_count() or 1 if match.group(1) == "*" else max(1, int(match.group(1)))
    if master.strip() == "local":
        return 1
    return max(1, default_parallelism)
