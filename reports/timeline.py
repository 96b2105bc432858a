"""The staircase timeline: per request, every agent's calls as bars on one time axis.

Time is measured from the moment each request was sent, so requests line up and the
staircase — proposers streaming chunks, the aggregator starting rounds before they finish —
reads left to right. Each run gets its own panel, one above the other, on a shared axis:
live and simulated runs of the same scenario compare at a glance.

Per run the figure has one bar trace per agent, one marker trace for unit releases and one
for the user's first answer token (the browser test counts on that). A call of an agent that
reads others is labelled with its coverage — the share of its inputs' whole answers its
prompt held (``sim/coverage.py``) — so how much each round knew sits beside when it ran.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from reports.escape import plot_text
from reports.runs import Run
from sim.metrics import request_metrics
from sim.trace import Record

DEFAULT_TIMELINE_REQUESTS = 10
AGENT_COLORS = qualitative.Plotly
STATUS_OPACITY = {"ok": 0.9, "cancelled": 0.45}
OTHER_STATUS_OPACITY = 0.25  # failed or unfinished
ROW_PX = 18
PANEL_PX = 70


@dataclass
class _Bars:
    """One agent's calls in one run, in the columns a horizontal plotly bar wants."""

    rows: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)
    hover: list[str] = field(default_factory=list)
    opacity: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)  # the coverage of a call that reads inputs


@dataclass
class _Markers:
    rows: list[str] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    hover: list[str] = field(default_factory=list)


def shown_requests(runs: list[Run], limit: int) -> list[int]:
    """The first ``limit`` request indices any run sent (trace-driven replays share them)."""
    sent = {r["req"] for run in runs for r in run.records if r["type"] == "request"}
    return sorted(sent)[:limit]


def agents_in(records: list[Record], requests: list[int]) -> list[str]:
    """Agents that made calls for these requests, in order of their first call."""
    wanted = set(requests)
    names = [r["agent"] for r in records if r["type"] == "call" and r["req"] in wanted]
    return list(dict.fromkeys(names))


def row_label(req: int, agent: str) -> str:
    return f"req {req} · {plot_text(agent)}"


def timeline_figure(runs: list[Run], max_requests: int = DEFAULT_TIMELINE_REQUESTS) -> go.Figure:
    requests = shown_requests(runs, max_requests)
    all_agents = list(dict.fromkeys(a for run in runs for a in agents_in(run.records, requests)))
    colors = {a: AGENT_COLORS[i % len(AGENT_COLORS)] for i, a in enumerate(all_agents)}
    rows_per_run = [_row_order(run.records, requests) for run in runs]
    figure = make_subplots(
        rows=len(runs),
        cols=1,
        shared_xaxes=True,
        vertical_spacing=min(0.08, 0.3 / len(runs)),
        row_heights=[max(1, len(rows)) for rows in rows_per_run],
        subplot_titles=[plot_text(run.label) for run in runs],
    )
    in_legend: set[str] = set()
    for panel, (run, rows) in enumerate(zip(runs, rows_per_run, strict=True), 1):
        for trace in _run_traces(run.records, requests, colors):
            trace.showlegend = trace.legendgroup not in in_legend
            in_legend.add(trace.legendgroup)
            figure.add_trace(trace, row=panel, col=1)
        figure.update_yaxes(
            categoryorder="array",
            categoryarray=rows,
            range=[len(rows) - 0.5, -0.5],
            tickfont={"size": 10},
            row=panel,
            col=1,
        )
    figure.update_xaxes(title_text="seconds since the request was sent", row=len(runs), col=1)
    figure.update_layout(
        barmode="overlay",
        height=sum(len(rows) * ROW_PX + PANEL_PX for rows in rows_per_run) + 80,
        margin={"l": 140, "r": 20, "t": 60, "b": 50},
        hoverlabel={"align": "left"},
    )
    return figure


def _row_order(records: list[Record], requests: list[int]) -> list[str]:
    agents = agents_in(records, requests)
    called = {(r["req"], r["agent"]) for r in records if r["type"] == "call"}
    return [row_label(req, a) for req in requests for a in agents if (req, a) in called]


def _run_traces(
    records: list[Record], requests: list[int], colors: dict[str, str]
) -> list[go.Bar | go.Scatter]:
    sent = {r["req"]: r["t"] for r in records if r["type"] == "request" and r["req"] in requests}
    bars = _call_bars(records, sent)
    traces: list[go.Bar | go.Scatter] = [
        go.Bar(
            orientation="h",
            y=b.rows,
            base=b.starts,
            x=b.durations,
            name=plot_text(agent),
            legendgroup=f"agent:{plot_text(agent)}",
            marker={"color": colors[agent], "opacity": b.opacity},
            text=b.text,
            textposition="inside",
            insidetextanchor="start",
            textfont={"size": 9},
            hovertext=b.hover,
            hoverinfo="text",
        )
        for agent, b in bars.items()
    ]
    traces.append(
        _marker_trace(
            _unit_markers(records, sent),
            name="unit released",
            marker={"symbol": "line-ns-open", "size": 12, "color": "#222", "line": {"width": 2}},
        )
    )
    traces.append(
        _marker_trace(
            _first_token_markers(records, sent),
            name="user's first token",
            marker={"symbol": "star", "size": 14, "color": "#d62728", "line": {"width": 1}},
        )
    )
    return traces


def _marker_trace(markers: _Markers, name: str, marker: dict[str, Any]) -> go.Scatter:
    return go.Scatter(
        mode="markers",
        y=markers.rows,
        x=markers.times,
        name=name,
        legendgroup=name,
        marker=marker,
        hovertext=markers.hover,
        hoverinfo="text",
    )


def _call_bars(records: list[Record], sent: dict[int, float]) -> dict[str, _Bars]:
    ends = {(r["req"], r["call"]): r for r in records if r["type"] == "call_end"}
    lengths = {
        r["req"]: r.get("answer_tokens") or {} for r in records if r["type"] == "request_end"
    }
    last_t = max((_time_of(r) for r in records if "t" in r), default=0.0)
    bars: dict[str, _Bars] = defaultdict(_Bars)
    for call in records:
        if call["type"] != "call" or call["req"] not in sent:
            continue
        end = ends.get((call["req"], call["call"]))
        t0 = sent[call["req"]]
        start, stop = call["t"] - t0, (end["t"] if end else last_t) - t0
        status = end["status"] if end else "unfinished"
        b = bars[call["agent"]]
        b.rows.append(row_label(call["req"], call["agent"]))
        b.starts.append(start)
        b.durations.append(max(stop - start, 0.0))
        b.opacity.append(STATUS_OPACITY.get(status, OTHER_STATUS_OPACITY))
        read, share = _coverage(call, lengths.get(call["req"], {}))
        b.text.append("" if share is None else f"{share:.0%}")
        b.hover.append(_call_hover(call, end, start, stop, status) + read)
    return bars


def _coverage(call: Record, lengths: dict[str, int]) -> tuple[str, float | None]:
    """A hover line with the tokens of each input the call's prompt held, and their share of
    the inputs' whole answers (None: the call reads no input, or the lengths are unknown)."""
    read = call.get("read")
    if not read:
        return "", None
    each = ", ".join(f"{plot_text(name)} {tokens}" for name, tokens in read.items())
    whole = sum(lengths.get(name, 0) for name in read)
    if not whole or any(name not in lengths for name in read):
        return f"<br>read (tokens): {each}", None
    share = sum(read.values()) / whole
    return f"<br>read (tokens): {each}; {share:.0%} of their {whole} tokens", share


def _time_of(record: Record) -> float:
    """A record's time; for a ``deltas`` record (a list of times), its last."""
    t = record["t"]
    return float(max(t, default=0.0)) if isinstance(t, list) else float(t)


def _call_hover(call: Record, end: Record | None, start: float, stop: float, status: str) -> str:
    usage = ""
    if end is not None:
        usage = (
            f"<br>prompt {_count(end.get('prompt_tokens'))} tok, "
            f"cached {_count(end.get('cached_tokens'))}, "
            f"generated {_count(end.get('completion_tokens'))}"
        )
    reason = f" ({plot_text(end['reason'])})" if end is not None and end.get("reason") else ""
    return (
        f"<b>{plot_text(call['agent'])}</b> {plot_text(call['call'])}, "
        f"round {plot_text(call['round'])}"
        f"<br>{start:.3f} s → {stop:.3f} s ({stop - start:.3f} s), asked for "
        f"{_count(call.get('tokens'))} tokens{usage}<br>status: {plot_text(status)}{reason}"
    )


def _count(value: Any) -> str:
    return "?" if value is None else plot_text(value)


def _unit_markers(records: list[Record], sent: dict[int, float]) -> _Markers:
    markers = _Markers()
    for unit in records:
        if unit["type"] != "unit" or unit["req"] not in sent:
            continue
        at = unit["t"] - sent[unit["req"]]
        markers.rows.append(row_label(unit["req"], unit["agent"]))
        markers.times.append(at)
        markers.hover.append(
            f"{plot_text(unit['agent'])}: unit {plot_text(unit['unit'])} released at {at:.3f} s "
            f"({_count(unit.get('tokens'))} tokens so far)"
        )
    return markers


def _first_token_markers(records: list[Record], sent: dict[int, float]) -> _Markers:
    answering: dict[int, str] = {}
    for call in records:
        if call["type"] == "call" and call["final"] and call["req"] in sent:
            answering.setdefault(call["req"], call["agent"])
    markers = _Markers()
    for metrics in request_metrics(records):
        if metrics.ttft is None or metrics.req not in answering:
            continue
        markers.rows.append(row_label(metrics.req, answering[metrics.req]))
        markers.times.append(metrics.ttft)
        markers.hover.append(f"request {metrics.req}: first answer token at {metrics.ttft:.3f} s")
    return markers
