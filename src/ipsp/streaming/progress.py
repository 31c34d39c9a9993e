"""Figures of the progress document: elapsed times and latency percentiles."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime

from ipsp.contracts import LatencyStats


def elapsed_ms(start: datetime, end: datetime) -> float:
    """Milliseconds from ``start`` to ``end``, never negative (clocks of two hosts may disagree)."""
    return max(0.0, (end - start).total_seconds() * 1000.0)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks."""
    if not sorted_values:
        raise ValueError("percentile of nothing")
    if len(sorted_values) == 1:
        return float(sorted_values[0])
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    weight = rank - low
    return float(sorted_values[low] * (1 - weight) + sorted_values[high] * weight)


def latency_stats(latencies_ms: Iterable[float]) -> LatencyStats | None:
    """p50, p95 and max of a batch's latencies; None for a batch with no frames."""
    values = sorted(max(0.0, float(v)) for v in latencies_ms)
    if not values:
        return None
    return LatencyStats(
        p50_ms=round(percentile(values, 50), 3),
        p95_ms=round(percentile(values, 95), 3),
        max_ms=round(values[-1], 3),
    )
