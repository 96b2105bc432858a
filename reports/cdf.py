"""CDFs of TTFT, E2E and ITL, every run on the same axes: predicted vs measured at a glance.

Percentiles say where two runs differ at three points; the CDF shows the whole shape —
a bimodal TTFT (staircase rounds landing in different engine steps) or a long ITL tail
(stalls between chunks) that a p50 hides. The figure has one trace per run and metric.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from reports.escape import plot_text
from reports.runs import Run
from sim.metrics import METRICS

# (metric, unit, scale from seconds): whole-request times read better in seconds
PANELS = (("ttft", "s", 1.0), ("e2e", "s", 1.0), ("itl", "ms", 1e3))
RUN_COLORS = qualitative.D3
REFERENCE_COLOR = "#111"
# A CDF of more points than this is thinned to evenly spaced ranks: it looks the same and
# keeps a report of 100k pooled ITL gaps small.
MAX_POINTS = 500


def cdf_points(
    values: list[float], max_points: int = MAX_POINTS
) -> tuple[list[float], list[float]]:
    """The empirical CDF as step corners: from 0 at the smallest value, ``i/n`` at the i-th.

    More than ``max_points`` values are thinned to evenly spaced ranks (the last one kept).
    """
    ordered = np.sort(np.asarray(values, dtype=float))
    if not len(ordered):
        return [], []
    probabilities = np.arange(1, len(ordered) + 1) / len(ordered)
    if len(ordered) > max_points:
        keep = np.unique(np.linspace(0, len(ordered) - 1, max_points).round().astype(int))
        ordered, probabilities = ordered[keep], probabilities[keep]
    return [float(ordered[0]), *ordered.tolist()], [0.0, *probabilities.tolist()]


def cdf_figure(runs: list[Run], reference: int) -> go.Figure:
    figure = make_subplots(
        rows=1,
        cols=len(PANELS),
        subplot_titles=[f"{METRICS[metric].label} ({unit})" for metric, unit, _ in PANELS],
        horizontal_spacing=0.06,
    )
    for column, (metric, unit, scale) in enumerate(PANELS, 1):
        for index, run in enumerate(runs):
            values, probabilities = cdf_points(run.stats.samples[metric])
            label = plot_text(run.label)
            is_reference = index == reference
            color = REFERENCE_COLOR if is_reference else RUN_COLORS[index % len(RUN_COLORS)]
            figure.add_trace(
                go.Scatter(
                    x=[v * scale for v in values],
                    y=probabilities,
                    mode="lines",
                    line={"shape": "hv", "color": color, "width": 3 if is_reference else 2},
                    name=label + (" (reference)" if is_reference and len(runs) > 1 else ""),
                    legendgroup=f"run{index}",
                    showlegend=column == 1,
                    hovertemplate=f"%{{x:.4g}} {unit}: %{{y:.1%}}<extra>{label}</extra>",
                ),
                row=1,
                col=column,
            )
        figure.update_xaxes(title_text=unit, row=1, col=column)
    figure.update_yaxes(range=[0, 1.02])
    figure.update_yaxes(title_text="fraction ≤ x", row=1, col=1)
    figure.update_layout(
        height=420,
        margin={"l": 60, "r": 20, "t": 60, "b": 50},
        legend={"orientation": "h", "y": -0.2, "x": 0},
    )
    return figure
