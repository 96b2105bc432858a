"""The report's tables as HTML: runs, errors, per-agent timing, engine metrics, provenance.

Every value that comes from a trace goes through :func:`reports.escape.esc`; numbers are
formatted here, so nothing from data reaches the page unescaped.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from reports.compare import (
    AGENT_TIMINGS,
    PERCENTILES,
    THROUGHPUT_KEY,
    agent_timing_errors,
    ks_distances,
    percentile_errors,
)
from reports.engine_metrics import HIT_RATE, highlights, server_deltas, trace_figures
from reports.escape import esc
from reports.runs import Run
from sim.metrics import METRICS

GOOD_ERROR_PCT = 10.0  # the project's fidelity target
FAIR_ERROR_PCT = 25.0
AGENT_TIMING_LABELS = {"start_s": "first start", "end_s": "last end", "call_s": "mean call"}


def table(head: list[str], rows: list[list[str]], css: str = "") -> str:
    """An HTML table of cells that are already HTML (escaped by the caller)."""
    header = "".join(f"<th>{cell}</th>" for cell in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css}"><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>'


def number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def error_badge(error: float | None) -> str:
    if error is None:
        return '<span class="err none">n/a</span>'
    size = abs(error)
    grade = "good" if size <= GOOD_ERROR_PCT else "fair" if size <= FAIR_ERROR_PCT else "bad"
    return f'<span class="err {grade}">{error:+.1f} %</span>'


def runs_table(runs: list[Run], reference: int) -> str:
    rows = []
    for index, run in enumerate(runs):
        summary = run.stats.summary
        role = "reference" if index == reference and len(runs) > 1 else ""
        rows.append(
            [
                esc(run.label),
                role,
                esc(run.source),
                esc(summary["scenario"]),
                str(summary["requests"]),
                str(summary["failed_requests"]),
                number(summary["duration_s"], 2),
            ]
        )
    head = ["run", "", "source", "scenario", "requests", "failed", "duration (s)"]
    return table(head, rows)


def error_table(runs: list[Run], reference: int) -> str:
    """Each run's percentiles; predictions carry their error % against the reference."""
    measured = runs[reference].stats
    errors = [percentile_errors(run.stats, measured) for run in runs]
    ks = [ks_distances(run.stats, measured) for run in runs]
    rows = []
    for metric, shown in METRICS.items():
        for p in PERCENTILES:
            cells = [f"{shown.title} {p} ({shown.unit})"]
            for index, run in enumerate(runs):
                value = run.stats.summary[shown.key][p]
                cell = number(None if value is None else value * shown.scale)
                if index != reference:
                    cell += " " + error_badge(errors[index][f"{metric}_{p}"])
                cells.append(cell)
            rows.append(cells)
    throughput = ["system throughput (tok/s)"]
    for index, run in enumerate(runs):
        cell = number(run.stats.summary[THROUGHPUT_KEY])
        if index != reference:
            cell += " " + error_badge(errors[index]["throughput"])
        throughput.append(cell)
    rows.append(throughput)
    for metric, shown in METRICS.items():
        rows.append(
            [f"KS distance, {shown.title}"]
            + [
                "" if index == reference else number(ks[index][metric], 3)
                for index in range(len(runs))
            ]
        )
    return table(["metric", *(esc(run.label) for run in runs)], rows, css="numbers")


def agent_table(runs: list[Run], reference: int) -> str:
    """Mean offsets of each agent's first start, last end and call length, with errors.

    Errors are plain (not graded like the error table): a start offset near 0 s makes any
    percentage large, so the seconds matter more here.
    """
    measured = runs[reference].stats
    errors = [agent_timing_errors(run.stats, measured) for run in runs]
    rows = []
    for agent in measured.summary["agents"]:
        for timing, key in AGENT_TIMINGS.items():
            cells = [f"{esc(agent)}: {AGENT_TIMING_LABELS[timing]} (s)"]
            for index, run in enumerate(runs):
                own = run.stats.summary["agents"].get(agent)
                cell = number(own[key] if own else None, 3)
                if index != reference and agent in errors[index]:
                    error = errors[index][agent][timing]
                    percent = error["error_pct"]
                    cell += f" ({_signed(error['error_s'], 3)} s, {_signed(percent, 1)} %)"
                cells.append(cell)
            rows.append(cells)
    return table(["agent", *(esc(run.label) for run in runs)], rows, css="numbers")


def _signed(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:+,.{digits}f}"


def engine_section(runs: list[Run]) -> str:
    return "\n".join(
        [
            "<h3>From the trace's call records</h3>",
            _trace_figures_table(runs),
            "<h3>From the server (<code>/metrics</code> after − before the run)</h3>",
            _server_tables(runs),
            _client_overhead(runs),
        ]
    )


def _trace_figures_table(runs: list[Run]) -> str:
    figures = [trace_figures(run.records) for run in runs]
    labels = list(dict.fromkeys(label for f in figures for label in f))
    rows = [[esc(label), *(_figure(label, f.get(label)) for f in figures)] for label in labels]
    return table(["", *(esc(run.label) for run in runs)], rows, css="numbers")


def _server_tables(runs: list[Run]) -> str:
    servers = [
        (run, server, deltas)
        for run in runs
        for server, deltas in server_deltas(run.records).items()
    ]
    if not servers:
        return (
            "<p>None of these traces has server metrics: simulated runs have no server to "
            "ask; live runs record <code>/metrics</code> before and after the run.</p>"
        )
    parts = []
    for run, server, deltas in servers:
        picked = [[esc(k), _figure(k, v)] for k, v in highlights(deltas).items()]
        every = [[esc(name), number(value, 3)] for name, value in sorted(deltas.items())]
        parts += [
            f"<h4>{esc(run.label)} — server {esc(server)}</h4>",
            table(["metric", "value"], picked, css="numbers"),
            f"<details><summary>all {len(every)} metric changes</summary>"
            f"{table(['metric', 'change'], every, css='numbers')}</details>",
        ]
    return "\n".join(parts)


def _client_overhead(runs: list[Run]) -> str:
    """The live runner's own CPU use and event-loop lag: how far its timestamps can be off."""
    overheads = [run.stats.summary.get("client") or {} for run in runs]
    keys = list(dict.fromkeys(key for overhead in overheads for key in overhead))
    if not keys:
        return ""
    rows = [[esc(key), *(_cell(overhead.get(key)) for overhead in overheads)] for key in keys]
    return "<h3>The live runner's own overhead</h3>" + table(
        ["", *(esc(run.label) for run in runs)], rows, css="numbers"
    )


def _cell(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return number(value, 3)
    return "–" if value is None else esc(value)


def _figure(label: str, value: float | None) -> str:
    """Engine figures by their label: a ratio in %, seconds in ms, counts as integers."""
    if value is None:
        return "–"
    if label == HIT_RATE:
        return f"{value:.1%}"
    if label.endswith("(s)"):
        return f"{value * 1e3:,.1f} ms"
    return number(value, 0)


def provenance_section(runs: list[Run]) -> str:
    return "\n".join(_provenance(run) for run in runs)


def _provenance(run: Run) -> str:
    header = run.header
    facts = {"trace file": run.origin} if run.origin else {}
    facts |= {
        key: value for key, value in header.items() if key not in ("type", "scenario", "profiles")
    }
    rows = [[esc(key), esc(_inline(value))] for key, value in facts.items()]
    parts = [f"<h3>{esc(run.label)}</h3>", table(["", ""], rows, css="facts")]
    if "scenario" in header:
        parts.append(_details("scenario", yaml.safe_dump(header["scenario"], sort_keys=False)))
    for server, profile in (header.get("profiles") or {}).items():
        parts.append(_profile(str(server), profile))
    return "\n".join(parts)


def _profile(server: str, profile: Any) -> str:
    if not isinstance(profile, dict):
        return _details(f"profile of server {server}", json.dumps(profile, indent=2))
    origin = profile.get("provenance") or {}
    said = ", ".join(
        f"{key}: {_inline(origin[key])}"
        for key in ("engine", "engine_version", "model", "hardware", "date", "sources", "notes")
        if origin.get(key)
    )
    summary = f"profile {profile.get('name', '?')} ({profile.get('kind', '?')}) on server {server}"
    return (
        f"<p>{esc(summary)}: {esc(profile.get('description', ''))}</p>"
        f'<p class="small">{esc(said)}</p>'
        + _details(f"profile {profile.get('name', '?')} in full", json.dumps(profile, indent=2))
    )


def _details(title: str, text: str) -> str:
    return f"<details><summary>{esc(title)}</summary><pre>{esc(text)}</pre></details>"


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_inline(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_inline(v) for v in value)
    return str(value)
