"""Serving documents (contracts v1.1): their shapes, their ``_id`` values, and how windows fold into them.

FerretDB 1.x answers only ``_id`` equality from an index; any range filter, sort
or limit reads the whole collection. So everything a dashboard panel reads is
kept, by the stream job, in a few documents whose ``_id`` follows from the time
range asked for:

- ``serving_camera_hours``: one document per camera and UTC hour holding that
  hour's windows (``_id`` = ``<camera_id>|YYYY-MM-DDTHH``);
- ``serving_camera_days``: one per camera and UTC day holding a summary per hour
  (``_id`` = ``<camera_id>|YYYY-MM-DD``), read for long ranges;
- ``serving_cameras``: one per camera, its latest window and frames per day;
- ``serving_pipeline_hours``: one per UTC hour of batch finish time, one entry
  per micro-batch (``_id`` = ``YYYY-MM-DDTHH``);
- ``serving_state``: one document (``_id`` = ``state``), the latest batch.

Every document is written whole under its ``_id`` (read, change the entries the
batch touched, write back): a replayed batch writes the same values again, never
adds them twice. The pure parts (``shapes``, ``keys``, ``fold``, ``read``) are re-exported here;
:mod:`ipsp.rollups.write` is the stream job's writer. The stream job, the
``ipsp rollups rebuild`` command and the API all use them.
"""

from __future__ import annotations

from ipsp.rollups.fold import (
    batch_figures,
    counts_dict,
    fold_cameras,
    fold_days,
    fold_hours,
    fold_pipeline,
    letter_figures,
    majority_status,
    state_document,
    summarize,
    window_figures,
)
from ipsp.rollups.keys import (
    as_utc,
    camera_day_id,
    camera_day_ids,
    camera_hour_id,
    camera_hour_ids,
    day_floor,
    day_key,
    days_between,
    hour_floor,
    hour_key,
    hours_between,
    pipeline_hour_ids,
    slot_key,
    slot_start,
)
from ipsp.rollups.read import batches_of_hours, hours_of_days, letters_of_batches, windows_of_hours
from ipsp.rollups.shapes import (
    CLASS_NAMES,
    DAY,
    HOUR,
    LETTERS_PER_BATCH,
    SERVING_VERSION,
    STATE_ID,
    BatchFigures,
    CameraDay,
    CameraHour,
    CameraServing,
    DayTotals,
    HourFigures,
    LatestWindow,
    LetterFigures,
    PipelineHour,
    ServingState,
    WindowFigures,
)

__all__ = [
    "CLASS_NAMES",
    "DAY",
    "HOUR",
    "LETTERS_PER_BATCH",
    "SERVING_VERSION",
    "STATE_ID",
    "BatchFigures",
    "CameraDay",
    "CameraHour",
    "CameraServing",
    "DayTotals",
    "HourFigures",
    "LatestWindow",
    "LetterFigures",
    "PipelineHour",
    "ServingState",
    "WindowFigures",
    "as_utc",
    "batch_figures",
    "batches_of_hours",
    "camera_day_id",
    "camera_day_ids",
    "camera_hour_id",
    "camera_hour_ids",
    "counts_dict",
    "day_floor",
    "day_key",
    "days_between",
    "fold_cameras",
    "fold_days",
    "fold_hours",
    "fold_pipeline",
    "hour_floor",
    "hour_key",
    "hours_between",
    "hours_of_days",
    "letter_figures",
    "letters_of_batches",
    "majority_status",
    "pipeline_hour_ids",
    "slot_key",
    "slot_start",
    "state_document",
    "summarize",
    "window_figures",
    "windows_of_hours",
]
