"""The sweep report: the right plot for the axes, values from the rows, data escaped."""

from __future__ import annotations

from pathlib import Path

import pytest

from reports.sweep import metric_figure, render_sweep_report, write_sweep_report
from sim.sweep import sweep

EXAMPLE = str(Path("examples/staircase-moa.yaml").resolve())


def run(axes, method=None, name="report", replications=2):
    spec = {
        "kind": "sweep",
        "name": name,
        "scenario": EXAMPLE,
        "overrides": ["workload.requests=6"],
        "axes": axes,
        "replications": replications,
        "metrics": ["ttft_s.p90", "cost_usd.per_request"],
    }
    if method:
        spec["method"] = method
    return sweep(spec, workers=1)


def test_one_axis_is_a_line_with_the_intervals_as_error_bars():
    result = run({"topology.chunks.proposer.0": [32, 4, 16]})
    (line,) = metric_figure(result, "ttft_s.p90").data
    by_chunk = {row["topology.chunks.proposer.0"]: row for row in result.rows}
    assert list(line.x) == [4, 16, 32]  # sorted along the axis
    assert list(line.y) == pytest.approx([by_chunk[c]["ttft_s.p90"] for c in (4, 16, 32)])
    highs = [by_chunk[c]["ttft_s.p90.ci_high"] - by_chunk[c]["ttft_s.p90"] for c in (4, 16, 32)]
    assert list(line.error_y.array) == pytest.approx(highs)


def test_a_grid_is_a_heatmap_of_the_first_two_axes_averaged_over_the_rest():
    result = run(
        {
            "topology.redundancy": [0, 2],
            "topology.mode": ["staircase", "standard"],
            "topology.chunks.proposer.0": [4, 16],
        },
        replications=1,
    )
    (heatmap,) = metric_figure(result, "ttft_s.p90").data
    assert list(heatmap.x) == ["0", "2"] and list(heatmap.y) == ["staircase", "standard"]
    for y_index, mode in enumerate(["staircase", "standard"]):
        for x_index, redundancy in enumerate([0, 2]):
            cell = [
                row["ttft_s.p90"]
                for row in result.rows
                if row["topology.mode"] == mode and row["topology.redundancy"] == redundancy
            ]
            assert heatmap.z[y_index][x_index] == pytest.approx(sum(cell) / len(cell))


def test_samples_off_a_grid_are_a_scatter_coloured_by_the_metric():
    result = run(
        {
            "workload.arrival.rate_per_s": {"low": 0.05, "high": 0.5, "log": True},
            "topology.chunks.proposer.0": {"low": 4, "high": 64, "integer": True},
        },
        method={"kind": "lhs", "n": 5, "seed": 1},
        replications=1,
    )
    (scatter,) = metric_figure(result, "cost_usd.per_request").data
    assert scatter.mode == "markers" and len(scatter.x) == 5
    assert list(scatter.marker.color) == [r["cost_usd.per_request"] for r in result.rows]


def test_names_and_values_from_the_sweep_are_escaped(tmp_path):
    result = run({"name": ["<script>alert(1)</script>"]}, name="<img src=x onerror=alert(2)>")
    page = render_sweep_report(result)
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    write_sweep_report(result, tmp_path / "deep" / "report.html")
    written = (tmp_path / "deep" / "report.html").read_text()
    assert written.count('class="plot"') == 2  # one plot per metric
