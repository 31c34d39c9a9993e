"""Read the provisioned Grafana dashboards and resolve each panel's API request as Grafana would.

Grafana cannot run here, so the dashboards are checked by what they ask for:
this module walks the dashboard JSON (panels, nested rows, template variables),
picks out every Infinity query, substitutes Grafana's variables (``${__from}``,
``${__to}``, ``${camera:csv}`` ...) the way Grafana does before the plugin sends
the request, and returns the path, parameters and the fields the panel reads.
The unit tests check the structure; the integration tests and ``make bench-serve``
send the requests (which is why this lives here, not in the runtime package).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from ipsp.contracts import format_time

GRID_COLUMNS = 24

# ${name}, ${name:format}, ${name:date:iso}, $name and [[name]] (Grafana's variable syntaxes)
_VARIABLE = re.compile(
    r"\$\{(?P<braced>[A-Za-z0-9_]+)(?::(?P<format>[^}]+))?\}|\$(?P<plain>[A-Za-z_][A-Za-z0-9_]*)|\[\[(?P<old>[A-Za-z0-9_]+)\]\]"
)


@dataclass(frozen=True)
class PanelQuery:
    """One Infinity query of a dashboard: a panel target or a template variable's query."""

    dashboard: str
    panel: str
    ref_id: str
    target: Mapping[str, Any]


@dataclass(frozen=True)
class PanelRequest:
    """The HTTP request a panel's query makes, after variable substitution."""

    path: str
    params: list[tuple[str, str]]
    columns: list[str]
    root_selector: str


def load_dashboards(folder: Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` dashboard in ``folder`` by file name."""
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))}


def load_datasources(path: Path) -> list[dict[str, Any]]:
    """The ``datasources`` list of a Grafana datasource provisioning file."""
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return list(document.get("datasources") or [])


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def infinity_queries(name: str, dashboard: Mapping[str, Any]) -> Iterator[PanelQuery]:
    """Every Infinity query of the dashboard: panel targets, then query variables."""
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            yield PanelQuery(name, panel.get("title", ""), target.get("refId", ""), target)
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query" and isinstance(query, dict) and "infinityQuery" in query:
            yield PanelQuery(name, f"variable {variable.get('name')}", "variable", query["infinityQuery"])


def grafana_values(
    start: datetime, end: datetime, variables: Mapping[str, str | Sequence[str]]
) -> dict[str, str | list[str]]:
    """Values of Grafana's global time variables plus the dashboard's own variables."""
    values: dict[str, str | list[str]] = {
        "__from": str(int(start.timestamp() * 1000)),
        "__to": str(int(end.timestamp() * 1000)),
        "__from:date:iso": format_time(start),
        "__to:date:iso": format_time(end),
    }
    for key, value in variables.items():
        values[key] = value if isinstance(value, str) else list(value)
    return values


def interpolate(text: str, values: Mapping[str, str | list[str]]) -> str:
    """Substitute Grafana variables in ``text``; an unknown variable raises KeyError (a typo in a panel)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain") or match.group("old")
        fmt = match.group("format")
        if fmt and fmt.startswith("date") and f"{name}:{fmt}" in values:
            return str(values[f"{name}:{fmt}"])
        if name not in values:
            raise KeyError(f"variable ${name} has no value (not a dashboard variable?)")
        return _format(values[name], fmt)

    return _VARIABLE.sub(replace, text)


def _format(value: str | list[str], fmt: str | None) -> str:
    items = [value] if isinstance(value, str) else value
    if fmt is None:  # Grafana's default for a multi-value variable is the glob form {a,b}
        return items[0] if len(items) == 1 else "{" + ",".join(items) + "}"
    if fmt in ("csv", "raw"):
        return ",".join(items)
    if fmt == "pipe":
        return "|".join(items)
    raise KeyError(f"variable format {fmt!r} is not handled here")


def resolve_request(target: Mapping[str, Any], values: Mapping[str, str | list[str]]) -> PanelRequest:
    """The path, parameters and read fields of one Infinity query after substitution."""
    url = interpolate(str(target.get("url", "")), values)
    params = [
        (str(item["key"]), interpolate(str(item.get("value", "")), values))
        for item in (target.get("url_options") or {}).get("params", [])
    ]
    columns = [str(column["selector"]) for column in target.get("columns", [])]
    return PanelRequest(url, params, columns, str(target.get("root_selector", "")))


def overlapping(panels: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of panel titles whose grid rectangles overlap (row panels take a full-width line)."""
    boxes = []
    for panel in panels:
        grid = panel.get("gridPos", {})
        boxes.append((panel.get("title", ""), grid["x"], grid["y"], grid["w"], grid["h"]))
    clashes = []
    for i, (title_a, xa, ya, wa, ha) in enumerate(boxes):
        for title_b, xb, yb, wb, hb in boxes[i + 1 :]:
            if xa < xb + wb and xb < xa + wa and ya < yb + hb and yb < ya + ha:
                clashes.append((title_a, title_b))
    return clashes
