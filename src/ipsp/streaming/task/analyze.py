"""The analyze stage: infer one prepared batch and turn each frame into its result (or a dead letter).

Counting rules (ROI, units, density, status) come from
:func:`ipsp.detection.traffic_summary` with the camera's settings; this stage
only attaches the event's identity, the model and the pipeline figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from ipsp.contracts import (
    AnalysisResult,
    Counts,
    DeadLetter,
    Detection,
    ModelRef,
    PipelineInfo,
    TrafficStatus,
    dead_letter_id,
    event_id,
    utc_now,
)
from ipsp.streaming.progress import elapsed_ms
from ipsp.streaming.task.fetch import Ready
from ipsp.streaming.task.outcome import TaskReport
from ipsp.streaming.task.parse import Record, letter_for
from ipsp.streaming.task.protocols import FrameDetector

if TYPE_CHECKING:
    from ipsp.detection.metrics import CamerasConfig


def build_result(
    record: Record,
    *,
    counts: Counts,
    density_percent: float,
    traffic_status: TrafficStatus,
    detections: list[Detection],
    model: ModelRef,
    batch_id: int,
    inference_ms: float,
    now: datetime,
) -> AnalysisResult:
    """The ``analysis_results`` document of one event (``_id`` = event_id(camera, event time))."""
    msg = record.message
    return AnalysisResult(
        id=event_id(msg.camera_id, msg.event_time),
        record_key=msg.record_key,
        camera_id=msg.camera_id,
        frame_index=msg.frame_index,
        event_time=msg.event_time,
        replay_id=msg.replay_id,
        counts=counts,
        density_percent=min(100.0, max(0.0, density_percent)),
        traffic_status=traffic_status,
        detections=detections,
        model=model,
        pipeline=PipelineInfo(
            batch_id=batch_id,
            kafka_partition=record.kafka.partition,
            kafka_offset=record.kafka.offset,
            inference_ms=max(0.0, inference_ms),
            latency_ms=elapsed_ms(msg.produced_at, now),
        ),
        processed_at=now,
    )


@dataclass
class Analyzed:
    """One batch's documents: results (with their records' dead-letter ids) and dead letters."""

    results: list[AnalysisResult] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    #: the results' Kafka coordinates as dead-letter ids (a retried task deletes letters an earlier attempt left)
    coords: list[str] = field(default_factory=list)


def analyze(
    item: Ready,
    detector: FrameDetector,
    cameras: CamerasConfig,
    class_map: dict[str, str],
    model: ModelRef,
    batch_id: int,
    report: TaskReport,
) -> Analyzed:
    """Infer ``item``'s batch; each frame becomes its result, or a dead letter when it does not decode.

    ``class_map``: the cameras' class names as the results name them (``cameras.full_class_map()``, made once per task).
    """
    from ipsp.detection import traffic_summary
    from ipsp.detection.errors import FrameError

    out = Analyzed(letters=list(item.letters))
    if item.prepared is None:
        return out
    outcomes = detector.detect_prepared(item.prepared)
    step = detector.last_timings
    report.pre_ms += step.pre_ms
    report.infer_ms += step.infer_ms
    report.post_ms += step.post_ms
    per_frame = step.infer_ms / max(len(item.records), 1)
    started = time.perf_counter()
    now = utc_now()
    for record, outcome in zip(item.records, outcomes, strict=True):
        if isinstance(outcome, FrameError):
            out.letters.append(letter_for("decode", f"frame does not decode: {outcome}", record, now))
            continue
        summary = traffic_summary(outcome, record.message.camera_id, cameras_cfg=cameras)
        detections = [Detection.model_validate(r) for r in summary.detections.to_records(class_map)]
        out.results.append(
            build_result(
                record,
                counts=summary.counts,
                density_percent=summary.density_percent,
                traffic_status=summary.status,
                detections=detections,
                model=model,
                batch_id=batch_id,
                inference_ms=per_frame,
                now=now,
            )
        )
        out.coords.append(dead_letter_id(record.kafka))
    report.build_ms += (time.perf_counter() - started) * 1000
    return out
