"""The two provisioned Grafana dashboards, built in code with Grafana Labs' grafana-foundation-sdk.

``dashboards/*.json`` next to this script is generated from it and checked in
(Grafana provisions plain JSON files). Regenerate after a change here:

    python 1_infrastructure/grafana/dashboards_code.py --write     (or: make dashboards)

``--check`` exits non-zero when the checked-in files differ from the code. The
SDK is a dev dependency, so this dev tool lives beside the files it writes, not
in the ``ipsp`` package: only this command and the tests (pytest puts this
folder on its path) import it, never the API (``ipsp serve`` runs without it).

The SDK has no builder for the Infinity datasource's query, so ``InfinityTarget``
below is one, implementing the SDK's ``Dataquery`` variant and ``Builder`` protocol.
What each target asks the API (url, params, columns) is what the API tests resolve
and send, see ``tests/support/dashboards.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

from grafana_foundation_sdk.builders import barchart, heatmap, piechart, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import heatmap as heatmap_model
from grafana_foundation_sdk.models import piechart as piechart_model

from ipsp.serving.models import ClassCounts

INFINITY_PLUGIN = "yesoreyeram-infinity-datasource"
DATASOURCE_UID = "ipsp-traffic-api"  # fixed uid of 1_infrastructure/grafana/datasources/infinity.yaml
DATASOURCE = model.DataSourceRef(type_val=INFINITY_PLUGIN, uid=DATASOURCE_UID)
# the provisioning folder beside this script
DEFAULT_FOLDER = Path(__file__).resolve().parent / "dashboards"
REFRESH_INTERVALS = ["10s", "30s", "1m", "5m", "15m"]
TIME_RANGE = ("now-6h", "now")  # the API warms its cache for this span (IPSP_API_WARM_HOURS)
BUCKETS = ["1m", "5m", "15m", "30m", "1h"]
DEFAULT_BUCKET = "5m"
# one bar per class column of the API's rows (``total`` is a sum, not a class)
CLASSES = [name for name in ClassCounts.model_fields if name != "total"]

ColumnType = Literal["string", "number", "timestamp"]
TIME_RANGE_PARAMS = (("from", "${__from}"), ("to", "${__to}"))
CAMERA_PARAM = ("camera", "${camera:csv}")


@dataclass(frozen=True)
class InfinityColumn:
    """One field a query reads from the API's rows (``selector``) and its display name."""

    selector: str
    text: str
    type: ColumnType = "number"

    def to_json(self) -> dict[str, object]:
        """The column as the Infinity plugin stores it."""
        return {"selector": self.selector, "text": self.text, "type": self.type}


class InfinityQuery(cogvariants.Dataquery):
    """An Infinity JSON query: GET ``url`` on the datasource's base URL, read ``columns`` of each row."""

    def __init__(self, url: str) -> None:
        self.ref_id = "A"
        self.url = url
        self.params: list[tuple[str, str]] = []
        self.columns: list[InfinityColumn] = []
        self.datasource: model.DataSourceRef | None = DATASOURCE

    def to_json(self) -> dict[str, object]:
        """The target as Grafana stores it in a panel (the backend parser: Grafana server-side fetches)."""
        payload: dict[str, object] = {"refId": self.ref_id}
        if self.datasource is not None:
            payload["datasource"] = self.datasource.to_json()
        payload.update(
            {
                "type": "json",
                "source": "url",
                "parser": "backend",
                "format": "table",
                "url": self.url,
                "url_options": {
                    "method": "GET",
                    "data": "",
                    "params": [{"key": key, "value": value} for key, value in self.params],
                    "headers": [],
                },
                "root_selector": "",
                "columns": [column.to_json() for column in self.columns],
                "filters": [],
            }
        )
        return payload


class InfinityTarget(cogbuilder.Builder[cogvariants.Dataquery]):
    """Builder of an ``InfinityQuery`` in the SDK's style (chained calls, ``build()``)."""

    def __init__(self, url: str) -> None:
        self._internal = InfinityQuery(url)

    def build(self) -> InfinityQuery:
        """The query."""
        return self._internal

    def ref_id(self, ref_id: str) -> Self:
        """The query's id within its panel."""
        self._internal.ref_id = ref_id
        return self

    def without_datasource(self) -> Self:
        """Leave out the datasource reference (a variable's query takes the variable's own)."""
        self._internal.datasource = None
        return self

    def param(self, key: str, value: str) -> Self:
        """Add a query-string parameter; ``value`` may use Grafana variables (``${__from}``)."""
        self._internal.params.append((key, value))
        return self

    def params(self, pairs: Sequence[tuple[str, str]]) -> Self:
        """Add several query-string parameters in order."""
        for key, value in pairs:
            self.param(key, value)
        return self

    def column(self, selector: str, text: str, kind: ColumnType = "number") -> Self:
        """Read field ``selector`` of each row, shown as ``text``."""
        self._internal.columns.append(InfinityColumn(selector, text, kind))
        return self


def _legend(placement: common.LegendPlacement, show: bool = True) -> common_builder.VizLegendOptions:
    return (
        common_builder.VizLegendOptions()
        .display_mode(common.LegendDisplayMode.LIST)
        .placement(placement)
        .show_legend(show)
    )


def _tooltip(mode: common.TooltipDisplayMode, sort: common.SortOrder) -> common_builder.VizTooltipOptions:
    return common_builder.VizTooltipOptions().mode(mode).sort(sort)


def _per_camera_bucket(path: str, field: str, label: str) -> InfinityTarget:
    """A query for one value per camera and ``${bucket}`` over the dashboard's range and cameras."""
    return (
        InfinityTarget(path)
        .params([*TIME_RANGE_PARAMS, CAMERA_PARAM, ("bucket", "${bucket}")])
        .column("time", "Time", "timestamp")
        .column("camera_id", "camera_id", "string")
        .column(field, label)
    )


def _partition_by_camera() -> model.DataTransformerConfig:
    # one frame per camera, so the panel draws one series per camera
    return model.DataTransformerConfig(
        id_val="partitionByValues",
        options={"fields": ["camera_id"], "keepFields": False, "naming": {"asLabels": False}},
    )


def _dashboard(uid: str, title: str, description: str, tags: list[str]) -> dashboard_builder.Dashboard:
    return (
        dashboard_builder.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(tags)
        .readonly()  # provisioned from git: edits in the UI would be lost
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .version(1)
        .refresh("30s")
        .time(*TIME_RANGE)
        .timezone("utc")
        .timepicker(dashboard_builder.TimePicker().refresh_intervals(REFRESH_INTERVALS))
        .variables([])  # an empty list, not a missing one: Grafana and the tests read templating.list
        .annotations([])
    )


def _link(title: str, uid: str) -> dashboard_builder.DashboardLink:
    return (
        dashboard_builder.DashboardLink(title).type(model.DashboardLinkType.LINK).url(f"/d/{uid}?${{__url_time_range}}")
    )


def camera_variable() -> dashboard_builder.QueryVariable:
    """Multi-select camera list, filled from GET /api/cameras."""
    query = (
        InfinityTarget("/api/cameras")
        .ref_id("variable")
        .without_datasource()
        .column("camera_id", "camera_id", "string")
    )
    return (
        dashboard_builder.QueryVariable("camera")
        .label("Camera")
        .datasource(DATASOURCE)
        .query({"refId": "variable", "queryType": "infinity", "query": "", "infinityQuery": query.build().to_json()})
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
        .options([])
    )


def bucket_variable() -> dashboard_builder.CustomVariable:
    """Time bucket of the heatmap and of the vehicles-over-time chart."""
    return (
        dashboard_builder.CustomVariable("bucket")
        .label("Heatmap bucket")
        .values(",".join(BUCKETS))
        .current(model.VariableOption(selected=True, text=DEFAULT_BUCKET, value=DEFAULT_BUCKET))
        .options([model.VariableOption(selected=b == DEFAULT_BUCKET, text=b, value=b) for b in BUCKETS])
        .multi(False)
        .include_all(False)
    )


def traffic_overview() -> dashboard_builder.Dashboard:
    """Vehicles, class mix, density and current status per camera."""
    status = table.Panel().id(1).title("Current status per camera").span(12).height(10)
    status.description(
        "Status, mean density and vehicles per frame in each camera's latest one-minute window (GET /api/cameras)."
    )
    status.datasource(DATASOURCE).with_target(
        InfinityTarget("/api/cameras")
        .param(*CAMERA_PARAM)
        .column("camera_id", "Camera", "string")
        .column("traffic_status", "Status", "string")
        .column("density_mean", "Density %")
        .column("vehicles_per_frame", "Vehicles per frame")
        .column("frames", "Frames")
        .column("time", "Latest window", "timestamp")
    )
    status.mappings(
        [
            model.ValueMap(
                options={
                    name: model.ValueMappingResult(text=name, color=color, index=index)
                    for index, (name, color) in enumerate(
                        (("Free", "green"), ("Normal", "orange"), ("Congested", "red"))
                    )
                }
            )
        ]
    )
    status.override_by_name("Status", [model.DynamicConfigValue("custom.cellOptions", {"type": "color-background"})])
    status.override_by_name(
        "Density %", [model.DynamicConfigValue("unit", "percent"), model.DynamicConfigValue("decimals", 1)]
    )
    status.show_header(True).cell_height(common.TableCellHeight.SM)
    status.sort_by([common_builder.TableSortByFieldState().display_name("Camera").desc(False)])

    mix = piechart.Panel().id(2).title("Class mix").span(12).height(10)
    mix.description("Objects per traffic class over the time range, summed from the windows (GET /api/class-mix).")
    mix.datasource(DATASOURCE).with_target(
        InfinityTarget("/api/class-mix")
        .params([*TIME_RANGE_PARAMS, CAMERA_PARAM])
        .column("class_name", "Class", "string")
        .column("count", "Objects")
    )
    mix.reduce_options(common_builder.ReduceDataOptions().values(True).calcs(["lastNotNull"]).fields("/^Objects$/"))
    mix.pie_type(piechart_model.PieChartType.DONUT)
    mix.display_labels([piechart_model.PieChartLabels.NAME, piechart_model.PieChartLabels.PERCENT])
    mix.legend(
        piechart.PieChartLegendOptions()
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.RIGHT)
        .show_legend(True)
        .values([piechart_model.PieChartLegendValues.VALUE, piechart_model.PieChartLegendValues.PERCENT])
    )
    mix.tooltip(_tooltip(common.TooltipDisplayMode.SINGLE, common.SortOrder.NONE))

    vehicles = timeseries.Panel().id(3).title("Vehicles per camera over time").span(24).height(9)
    vehicles.description(
        "Vehicles per frame in each time bucket, one line per camera (GET /api/windows, bucket from the variable)."
    )
    vehicles.datasource(DATASOURCE).with_target(
        _per_camera_bucket("/api/windows", "vehicles_per_frame", "vehicles per frame")
    )
    vehicles.line_width(1).fill_opacity(0).show_points(common.VisibilityMode.NEVER).unit("short").decimals(1)
    vehicles.legend(_legend(common.LegendPlacement.RIGHT))
    vehicles.tooltip(_tooltip(common.TooltipDisplayMode.MULTI, common.SortOrder.DESCENDING))
    vehicles.with_transformation(_partition_by_camera())

    density = heatmap.Panel().id(4).title("Density heatmap (camera x time)").span(24).height(11)
    density.description("Mean ROI density per camera and time bucket (GET /api/heatmap, bucket from the variable).")
    density.datasource(DATASOURCE).with_target(_per_camera_bucket("/api/heatmap", "density_mean", "density"))
    density.unit("percent").calculate(False).cell_gap(1)  # the API buckets; Grafana must not re-bucket
    density.y_axis(heatmap.YAxisConfig().axis_placement(common.AxisPlacement.LEFT))
    density.rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.AUTO))
    density.color(
        heatmap.HeatmapColorOptions()
        .mode(heatmap_model.HeatmapColorMode.SCHEME)
        .scheme("YlOrRd")
        .steps(64)
        .fill("dark-orange")
        .exponent(0.5)
        .reverse(False)
        .min(0)
    )
    density.show_tooltip().show_legend()
    density.with_transformation(_partition_by_camera())
    density.with_transformation(
        model.DataTransformerConfig(id_val="joinByField", options={"byField": "Time", "mode": "outer"})
    )

    per_camera = barchart.Panel().id(5).title("Class mix per camera").span(24).height(9)
    per_camera.description("Objects per class for each camera over the time range (GET /api/class-mix/cameras).")
    per_camera_target = InfinityTarget("/api/class-mix/cameras").params([*TIME_RANGE_PARAMS, CAMERA_PARAM])
    per_camera_target.column("camera_id", "Camera", "string")
    for name in CLASSES:
        per_camera_target.column(name, name)
    per_camera.datasource(DATASOURCE).with_target(per_camera_target)
    per_camera.stacking(common.StackingMode.NORMAL).orientation(common.VizOrientation.AUTO).x_field("Camera")
    per_camera.show_value(common.VisibilityMode.NEVER)
    per_camera.legend(_legend(common.LegendPlacement.BOTTOM))
    per_camera.tooltip(_tooltip(common.TooltipDisplayMode.MULTI, common.SortOrder.NONE))

    board = _dashboard(
        "ipsp-traffic",
        "IPSP traffic overview",
        "Vehicles, class mix, density and current status per camera, from the IPSP traffic API.",
        ["ipsp", "traffic"],
    )
    board.variables([camera_variable(), bucket_variable()])
    board.link(_link("Pipeline health", "ipsp-pipeline"))
    for panel in (status, mix, vehicles, density, per_camera):
        board.with_panel(panel)
    return board


def _batches_panel(panel_id: int, title: str, description: str, columns: Sequence[tuple[str, str]]) -> timeseries.Panel:
    """A time series of per-micro-batch fields (GET /api/pipeline/batches), one line per field."""
    target = InfinityTarget("/api/pipeline/batches").params(TIME_RANGE_PARAMS).column("time", "Time", "timestamp")
    for selector, text in columns:
        target.column(selector, text)
    panel = timeseries.Panel().id(panel_id).title(title).description(description).datasource(DATASOURCE)
    panel.with_target(target).span(12)
    panel.legend(_legend(common.LegendPlacement.BOTTOM))
    return panel.tooltip(_tooltip(common.TooltipDisplayMode.MULTI, common.SortOrder.NONE))


def pipeline_health() -> dashboard_builder.Dashboard:
    """Throughput, latency and dead letters of the streaming job."""
    summary = stat.Panel().id(1).title("Pipeline summary").span(24).height(5)
    summary.description("Totals and rates of the streaming job over the time range (GET /api/pipeline/health).")
    summary.datasource(DATASOURCE).with_target(
        InfinityTarget("/api/pipeline/health")
        .params(TIME_RANGE_PARAMS)
        .column("batches", "Micro-batches")
        .column("results", "Frames written")
        .column("throughput_rows_per_s", "Frames/s")
        .column("worst_latency_p95_ms", "Worst p95 latency")
        .column("dead_letters_stored", "Dead letters")
    )
    summary.decimals(1)
    summary.override_by_name("Worst p95 latency", [model.DynamicConfigValue("unit", "ms")])
    any_dead_letter = model.ThresholdsConfig(
        mode=model.ThresholdsMode.ABSOLUTE, steps=[model.Threshold(None, "green"), model.Threshold(1, "red")]
    )
    summary.override_by_name("Dead letters", [model.DynamicConfigValue("thresholds", any_dead_letter)])
    summary.reduce_options(common_builder.ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields(""))
    summary.color_mode(common.BigValueColorMode.VALUE).graph_mode(common.BigValueGraphMode.NONE)
    summary.text_mode(common.BigValueTextMode.VALUE_AND_NAME).orientation(common.VizOrientation.AUTO)
    summary.justify_mode(common.BigValueJustifyMode.AUTO)

    throughput = _batches_panel(
        2,
        "Throughput per micro-batch",
        "Input and processed rows per second of each micro-batch (GET /api/pipeline/batches).",
        [("input_rows_per_s", "input rows/s"), ("processed_rows_per_s", "processed rows/s")],
    )
    throughput.height(9).unit("reqps").show_points(common.VisibilityMode.ALWAYS)
    latency = _batches_panel(
        3,
        "Latency produce to MongoDB",
        "p50, p95 and max latency from Kafka produce to the MongoDB write, per micro-batch.",
        [("latency_p50_ms", "p50"), ("latency_p95_ms", "p95"), ("latency_max_ms", "max")],
    )
    latency.height(9).unit("ms").show_points(common.VisibilityMode.ALWAYS)
    rows = _batches_panel(
        4,
        "Rows per micro-batch",
        "Kafka records, frames written and dead letters of each micro-batch.",
        [("rows", "records"), ("results", "frames written"), ("dead_letters", "dead letters")],
    )
    rows.height(8).draw_style(common.GraphDrawStyle.BARS).fill_opacity(60)

    stages = barchart.Panel().id(5).title("Dead letters by stage").span(12).height(8)
    stages.description("Records the pipeline could not process, per stage (GET /api/dead-letters/stages).")
    stages.datasource(DATASOURCE).with_target(
        InfinityTarget("/api/dead-letters/stages")
        .params(TIME_RANGE_PARAMS)
        .column("stage", "Stage", "string")
        .column("count", "Dead letters")
    )
    stages.x_field("Stage").orientation(common.VizOrientation.AUTO).show_value(common.VisibilityMode.AUTO)
    stages.legend(_legend(common.LegendPlacement.BOTTOM, show=False))
    stages.tooltip(_tooltip(common.TooltipDisplayMode.SINGLE, common.SortOrder.NONE))

    latest = table.Panel().id(6).title("Latest dead letters").span(24).height(9)
    latest.description("The newest dead letters with reason and Kafka coordinates (GET /api/dead-letters).")
    latest.datasource(DATASOURCE).with_target(
        InfinityTarget("/api/dead-letters")
        .params([*TIME_RANGE_PARAMS, ("limit", "200")])
        .column("time", "Created", "timestamp")
        .column("stage", "Stage", "string")
        .column("reason", "Reason", "string")
        .column("record_key", "Record", "string")
        .column("camera_id", "Camera", "string")
        .column("topic", "Topic", "string")
        .column("partition", "Partition")
        .column("offset", "Offset")
    )
    latest.show_header(True).cell_height(common.TableCellHeight.SM)

    board = _dashboard(
        "ipsp-pipeline",
        "IPSP pipeline health",
        "Throughput, latency and dead letters of the IPSP streaming job, from the IPSP traffic API.",
        ["ipsp", "pipeline"],
    )
    board.link(_link("Traffic overview", "ipsp-traffic"))
    for panel in (summary, throughput, latency, rows, stages, latest):
        board.with_panel(panel)
    return board


def generate() -> dict[str, dict[str, object]]:
    """Every dashboard as Grafana JSON, by file name."""
    boards = {"traffic-overview.json": traffic_overview(), "pipeline-health.json": pipeline_health()}
    return {name: json.loads(json.dumps(board.build(), cls=JSONEncoder)) for name, board in boards.items()}


def render(board: dict[str, object]) -> str:
    """The file text of one dashboard (stable: what the check compares)."""
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def stale_files(folder: Path) -> list[str]:
    """Names of the dashboards whose file in ``folder`` is missing or differs from the code."""
    stale = []
    for name, board in generate().items():
        path = folder / name
        if not path.is_file() or path.read_text(encoding="utf-8") != render(board):
            stale.append(name)
    return stale


def write_files(folder: Path) -> list[Path]:
    """Write every dashboard into ``folder``; the paths written."""
    written = []
    for name, board in generate().items():
        path = folder / name
        path.write_text(render(board), encoding="utf-8")
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print, ``--write`` or ``--check`` the generated dashboards."""
    parser = argparse.ArgumentParser(
        prog="python 1_infrastructure/grafana/dashboards_code.py",
        description="Generate the provisioned Grafana dashboards from code (grafana-foundation-sdk).",
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="write the dashboards' JSON files into --folder")
    action.add_argument(
        "--check", action="store_true", help="exit 1 if a file in --folder differs from what the code generates"
    )
    parser.add_argument(
        "--folder", type=Path, default=DEFAULT_FOLDER, help="dashboards folder (default: the provisioned one)"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.folder)
        if stale:
            print(
                f"dashboards out of date with code: {', '.join(stale)} (run: make dashboards)",
                file=sys.stderr,
            )
            return 1
        return 0
    if args.write:
        for path in write_files(args.folder):
            print(f"wrote {path}")
        return 0
    for name, board in generate().items():
        print(f"# {name}")
        print(render(board), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
