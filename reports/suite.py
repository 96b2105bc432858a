"""The validation suite's summary page: every scenario's live vs predicted figures at once."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import plotly.graph_objects as go

from reports.compare import HEADLINE_ERRORS
from reports.escape import esc, plot_text
from reports.html import Section, page, write_report
from reports.sections import error_badge, number, table
from sim.metrics import METRICS, error_pct

SUITE_PLOT_ID = "suite-errors"
COLUMNS = tuple(METRICS[name] for name in ("ttft", "tps", "e2e", "stall"))  # their p50


class Validation(Protocol):
    """What the page shows of one scenario's validation."""

    name: str
    summary: dict[str, Any]  # the validate --json object
    report: Path | None  # its own report, linked


def suite_report(path: Path, validations: Sequence[Validation]) -> None:
    rows = [_row(v, path.parent) for v in validations]
    head = ["scenario"]
    for metric in COLUMNS:
        head += [
            f"{metric.label} p50 ({metric.unit}) live",
            "sim",
            "error",
            "trace-driven",
            "error",
        ]
    head.append("KS TTFT")
    explanation = (
        '<p class="small">error % = 100·(predicted − live)/live. "sim" is predicted from the '
        'scenario file alone; "trace-driven" replays the live run\'s own send times and '
        "lengths, so its error is the timing model's alone.</p>"
    )
    sections = [
        Section("summary", "Errors per scenario", explanation + table(head, rows, "numbers")),
        Section("chart", "Headline errors", f'<div id="{SUITE_PLOT_ID}" class="plot"></div>'),
    ]
    figure = _error_chart(validations)
    write_report(path, page("stairwise validation suite", sections, {SUITE_PLOT_ID: figure}))


def _row(validation: Validation, base: Path) -> list[str]:
    summary = validation.summary
    name = esc(validation.name)
    if validation.report is not None:
        name = f'<a href="{esc(validation.report.relative_to(base))}">{name}</a>'
    cells = [name]
    for metric in COLUMNS:
        live = summary["live"][metric.key]["p50"]
        cells.append(_scaled(live, metric.scale))
        for run in ("sim", "sim_trace_driven"):
            predicted = summary[run][metric.key]["p50"]
            cells += [_scaled(predicted, metric.scale), error_badge(error_pct(predicted, live))]
    cells.append(number(summary["ks"].get("ttft"), 2))
    return cells


def _scaled(value: float | None, scale: float) -> str:
    return number(None if value is None else value * scale, 1)


def _error_chart(validations: Sequence[Validation]) -> go.Figure:
    figure = go.Figure()
    names = [plot_text(v.name) for v in validations]
    for key in HEADLINE_ERRORS:
        values: list[Any] = [v.summary["error_pct"].get(key) for v in validations]
        figure.add_bar(name=f"{key} (sim)", x=names, y=values)
    figure.update_layout(
        barmode="group",
        yaxis_title="error % (predicted vs live)",
        height=420,
        margin={"t": 30},
    )
    return figure
