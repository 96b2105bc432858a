"""The sweep report: each metric over the sweep's axes, as one self-contained HTML page.

One axis: a line with the replications' prediction interval as error bars. Two or more
axes on a grid: a heatmap over the first two (averaged over the others, as the plot says).
Random and Latin-hypercube samples do not fill a grid, so they show as scatter plots of the
first two axes coloured by the metric. A table of every point ends the page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from reports.escape import esc, plot_text
from reports.html import Section, page, write_report
from sim.sweep.runner import SweepResult
from sim.sweep.store import Row

MAX_TABLE_ROWS = 500


def write_sweep_report(result: SweepResult, path: Path) -> None:
    write_report(path, render_sweep_report(result))


def render_sweep_report(result: SweepResult) -> str:
    figures = {f"metric-{i}": metric_figure(result, m) for i, m in enumerate(result.metrics)}
    plots = "".join(f'<div id="{div}" class="plot"></div>' for div in figures)
    sections = [
        Section("sweep", "Sweep", _facts(result)),
        Section("metrics", "Metrics over the axes", plots),
        Section("points", "Points", points_table(result)),
    ]
    return page(f"stairwise sweep: {result.name}", sections, figures)


def metric_figure(result: SweepResult, metric: str) -> go.Figure:
    if len(result.axes) == 1:
        figure = _line(result.rows, result.axes[0], metric)
    elif result.method == "grid":
        figure = _heatmap(result.rows, result.axes, metric)
    else:
        figure = _scatter(result.rows, result.axes[0], result.axes[1], metric)
    figure.update_layout(title=plot_text(metric), height=420, margin={"t": 50})
    return figure


def _line(rows: list[Row], axis: str, metric: str) -> go.Figure:
    shown = sorted((r for r in rows if r[metric] is not None), key=lambda r: _sort_key(r[axis]))
    means = np.array([r[metric] for r in shown], dtype=float)
    high = np.array([_or_nan(r[f"{metric}.ci_high"]) for r in shown], dtype=float)
    low = np.array([_or_nan(r[f"{metric}.ci_low"]) for r in shown], dtype=float)
    trace = go.Scatter(
        x=[_label(r[axis]) for r in shown],
        y=means,
        mode="lines+markers",
        error_y={"type": "data", "array": high - means, "arrayminus": means - low},
        name=plot_text(metric),
    )
    figure = go.Figure(trace)
    figure.update_xaxes(title=plot_text(axis))
    figure.update_yaxes(title=plot_text(f"{metric} (mean, CI)"))
    return figure


def _heatmap(rows: list[Row], axes: list[str], metric: str) -> go.Figure:
    x_axis, y_axis = axes[0], axes[1]
    xs = _ordered_values(rows, x_axis)
    ys = _ordered_values(rows, y_axis)
    cells: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        if row[metric] is not None:
            cell = (_text(row[x_axis]), _text(row[y_axis]))
            cells.setdefault(cell, []).append(row[metric])
    z = [[_mean(cells.get((_text(x), _text(y)))) for x in xs] for y in ys]
    heatmap = go.Heatmap(
        x=[plot_text(_text(x)) for x in xs],
        y=[plot_text(_text(y)) for y in ys],
        z=z,
        colorscale="Viridis",
        colorbar={"title": {"text": plot_text(metric)}},
        texttemplate="%{z:.3g}",
        hovertemplate="%{x}, %{y}: %{z:.4g}<extra></extra>",
    )
    figure = go.Figure(heatmap)
    figure.update_xaxes(title=plot_text(x_axis), type="category")
    figure.update_yaxes(title=plot_text(y_axis), type="category")
    if len(axes) > 2:
        note = f"mean over {', '.join(axes[2:])}"
        figure.add_annotation(
            text=plot_text(note),
            showarrow=False,
            xref="paper",
            yref="paper",
            x=0,
            y=1.08,
            xanchor="left",
        )
    return figure


def _scatter(rows: list[Row], x_axis: str, y_axis: str, metric: str) -> go.Figure:
    shown = [r for r in rows if r[metric] is not None]
    scatter = go.Scatter(
        x=[_label(r[x_axis]) for r in shown],
        y=[_label(r[y_axis]) for r in shown],
        mode="markers",
        marker={
            "color": [r[metric] for r in shown],
            "colorscale": "Viridis",
            "size": 10,
            "colorbar": {"title": {"text": plot_text(metric)}},
        },
        hovertemplate="%{x}, %{y}: %{marker.color:.4g}<extra></extra>",
    )
    figure = go.Figure(scatter)
    figure.update_xaxes(title=plot_text(x_axis))
    figure.update_yaxes(title=plot_text(y_axis))
    return figure


def points_table(result: SweepResult) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in [*result.axes, *result.metrics])
    body = []
    for row in result.rows[:MAX_TABLE_ROWS]:
        cells = [f"<td>{esc(_text(row[axis]))}</td>" for axis in result.axes]
        cells += [f"<td>{_with_interval(row, metric)}</td>" for metric in result.metrics]
        body.append(f"<tr>{''.join(cells)}</tr>")
    more = len(result.rows) - MAX_TABLE_ROWS
    note = f"<p class=small>{more} more points in the results file.</p>" if more > 0 else ""
    return f"<table class=numbers><tr>{head}</tr>{''.join(body)}</table>{note}"


def _facts(result: SweepResult) -> str:
    facts = [
        ("points", f"{len(result.rows)} ({result.method})"),
        ("replications per point", str(result.rows[0]["replications"]) if result.rows else "-"),
        ("axes", ", ".join(result.axes)),
        ("results file", str(result.path) if result.path is not None else "(not stored)"),
    ]
    if result.skipped:
        facts.append(("points left out (invalid)", str(result.skipped)))
    rows = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in facts)
    return f"<table class=facts>{rows}</table>"


def _with_interval(row: Row, metric: str) -> str:
    mean, low, high = row[metric], row[f"{metric}.ci_low"], row[f"{metric}.ci_high"]
    if mean is None:
        return "-"
    if low is None or high is None:
        return f"{mean:.4g}"
    return f"{mean:.4g} <span class=small>({low:.3g}–{high:.3g})</span>"


def _ordered_values(rows: list[Row], axis: str) -> list[Any]:
    distinct = {_text(r[axis]): r[axis] for r in rows}
    return sorted(distinct.values(), key=_sort_key)


def _sort_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, _text(value))


def _label(value: Any) -> Any:
    """Numbers stay numbers (a numeric plot axis); anything else becomes escaped text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return plot_text(_text(value))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _mean(values: list[float] | None) -> float | None:
    return float(np.mean(values)) if values else None


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value
