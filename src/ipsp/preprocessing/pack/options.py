"""What a pack is asked to do (``PackOptions``) and what it did (``PackResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ipsp.preprocessing.manifest import PackOptionsRecord, PackSummary
from ipsp.preprocessing.validate import DEFAULT_NAME_PATTERN, Checks
from ipsp.storage.shards import DEFAULT_SHARD_BYTES


@dataclass(frozen=True)
class PackOptions:
    """How to pack; everything that changes the output is recorded in ``pack.json``."""

    name_pattern: str = DEFAULT_NAME_PATTERN
    shard_bytes: int = DEFAULT_SHARD_BYTES
    checks: Checks = field(default_factory=Checks)
    strict: bool = False
    partitions: int | None = None
    work_dir: str | None = None
    progress: bool = True

    def record(self) -> PackOptionsRecord:
        """The output-relevant options, for ``pack.json``."""
        fit = f"{self.checks.fit[0]}x{self.checks.fit[1]}" if self.checks.fit else None
        return PackOptionsRecord(
            name_pattern=self.name_pattern,
            shard_target_bytes=self.shard_bytes,
            max_side=self.checks.max_side,
            max_pixels=self.checks.max_pixels,
            fit=fit,
            quality=self.checks.quality,
        )


@dataclass
class PackResult:
    """What a pack did: the summary written to ``pack.json`` plus this run's own counters."""

    summary: PackSummary
    written: int = 0
    skipped: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def line(self) -> str:
        """The one-line summary the CLI prints."""
        s = self.summary
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s.reasons.items()) if k != "duplicate") or "none"
        return (
            f"packed {s.packed} frames ({s.data_bytes / 1e6:.1f} MB) into {len(s.shards)} shards "
            f"({self.written} written, {self.skipped} verified and skipped); "
            f"rejected {s.rejected - s.duplicates} ({reasons}); duplicates {s.duplicates} -> {s.dataset_uri}"
        )


def with_options(options: PackOptions, **changes: Any) -> PackOptions:
    """A copy of options with some fields changed (tests and the benchmark use it)."""
    return replace(options, **changes)
