"""Where a stream job's shards were read: per shard cache (one per machine), what it fetched and holds.

Every task reports the cache it read through (``<host>:<folder>``), the shards
it downloaded from the object store (its cache misses) and the bytes the cache
held when it ended (:class:`ipsp.streaming.task.outcome.TaskReport`). The driver
folds them per cache, batch after batch, so a run can say which executor fetched
which camera's shards: with locality each camera's shards are fetched by one
cache only, and a task that moves costs the moved camera's shards there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ipsp.streaming.task.outcome import TaskReport


@dataclass
class CacheUse:
    """One shard cache's figures over the batches folded so far."""

    tasks: int = 0
    fetched: list[str] = field(default_factory=list)  # shard URIs downloaded, in order
    fetched_bytes: int = 0
    hits: int = 0
    cache_bytes: int = 0  # as the latest task through it saw it
    busy_ms: float = 0.0  # its tasks' time, summed: how much of the work its machine did

    @property
    def cameras(self) -> list[str]:
        """The cameras whose shards this cache fetched (``.../shards/<camera_id>/<shard>``)."""
        return sorted({camera_of(uri) for uri in self.fetched})


def camera_of(shard_uri: str) -> str:
    """The camera folder a shard lives in (the object-store layout: ``shards/<camera_id>/<shard>.lmdb``)."""
    parts = shard_uri.rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def fold(tasks: Iterable[TaskReport], into: dict[str, CacheUse]) -> dict[str, CacheUse]:
    """Add the tasks' shard figures to ``into`` (per cache) and return what this batch alone did."""
    batch: dict[str, CacheUse] = {}
    for task in tasks:
        if not task.cache:  # a task with no rows reads no shard
            continue
        for uses in (batch, into):
            use = uses.setdefault(task.cache, CacheUse())
            use.tasks += 1
            use.fetched.extend(task.fetched_shards)
            use.fetched_bytes += task.fetched_bytes
            use.hits += task.cache_hits
            use.cache_bytes = task.cache_bytes
            use.busy_ms += task.task_ms
    return batch


def balance(batches: list[dict[str, CacheUse]]) -> float:
    """How evenly the machines shared the batches: the mean machine's busy time over the busiest's.

    Summed over the batches, since a batch ends with its busiest machine: 1.0 is
    an even share, 0.5 one of two machines doing all. Kafka partitions stay on
    their executor (by hash), and cameras on their partition (by hash), so a
    few cameras over few partitions seldom split evenly.
    """
    machines = {cache for batch in batches for cache in batch}
    busiest = sum(max((use.busy_ms for use in batch.values()), default=0.0) for batch in batches)
    if len(machines) < 2 or busiest <= 0:
        return 1.0
    return sum(use.busy_ms for batch in batches for use in batch.values()) / len(machines) / busiest


def batch_line(uses: dict[str, CacheUse]) -> str:
    """The shard part of a batch's log line: per cache, the shards it fetched and what it holds."""
    return "; ".join(
        f"{cache} fetched {len(use.fetched)} ({use.fetched_bytes / 1e6:.1f} MB), {use.hits} hit(s), "
        f"holds {use.cache_bytes / 1e6:.1f} MB"
        for cache, use in sorted(uses.items())
    )


def summary_lines(uses: dict[str, CacheUse]) -> list[str]:
    """One line per cache for the end of a run (the cluster test reads them)."""
    return [
        f"shard cache {cache}: {use.tasks} task(s), {len(use.fetched)} shard(s) fetched "
        f"({use.fetched_bytes} bytes), {use.hits} hit(s), holds {use.cache_bytes} bytes; "
        f"cameras fetched: {' '.join(use.cameras) or '-'}"
        for cache, use in sorted(uses.items())
    ]


def as_json(uses: dict[str, CacheUse], home: Path | None = None) -> dict[str, dict[str, object]]:
    """The figures per cache as plain JSON (the benchmark's results), named as :func:`public_name` says."""
    return {public_name(cache, home): figures(use) for cache, use in sorted(uses.items())}


def public_name(cache: str, home: Path | None) -> str:
    """A cache's name with its folder relative to ``home`` when under it: a results file holds no machine path."""
    host, _, folder = cache.partition(":")
    root = home.resolve() if home is not None else None
    if root is not None and Path(folder).is_relative_to(root):
        return f"{host}:{Path(folder).relative_to(root)}"
    return cache


def figures(use: CacheUse) -> dict[str, object]:
    """One cache's figures as plain JSON."""
    return {
        "tasks": use.tasks,
        "shards_fetched": len(use.fetched),
        "fetched_bytes": use.fetched_bytes,
        "hits": use.hits,
        "cache_bytes": use.cache_bytes,
        "cameras_fetched": use.cameras,
        "busy_s": round(use.busy_ms / 1000, 2),
    }
