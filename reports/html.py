"""The HTML report: one self-contained file (plotly.js inline) that opens offline.

Sections: the runs, the error table against a reference run, the staircase timeline, CDFs,
per-agent timing, engine metrics and provenance. Two guards keep data from ever running as
script: every string from a trace is escaped (:mod:`reports.escape`), and the page's
Content-Security-Policy allows exactly the page's own two scripts (by hash) and nothing that
could load from the network.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.offline import get_plotlyjs, get_plotlyjs_version

from reports.cdf import cdf_figure
from reports.escape import esc
from reports.runs import Run
from reports.sections import (
    agent_table,
    engine_section,
    error_table,
    provenance_section,
    runs_table,
)
from reports.timeline import DEFAULT_TIMELINE_REQUESTS, shown_requests, timeline_figure
from sim.errors import ConfigError
from sim.metrics import DEFAULT_K
from sim.trace import Record

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
TIMELINE_ID = "timeline-plot"
CDF_ID = "cdf-plot"
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1400px; padding: 0 16px;
       color: #222; }
h1 { font-size: 22px; margin: 18px 0 4px; } h2 { font-size: 18px; margin-top: 28px; }
nav a { margin-right: 12px; } .small { color: #666; font-size: 12px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { padding: 3px 10px; }
th { background: #f1f1f1; text-align: left; } tr:nth-child(even) td { background: #fafafa; }
table.numbers td:not(:first-child) { text-align: right; white-space: nowrap; }
table.facts td:first-child { color: #666; }
.err { border-radius: 3px; padding: 0 4px; font-size: 12px; }
.err.good { background: #d9f2d9; } .err.fair { background: #fdf0c8; }
.err.bad { background: #f8d2d2; } .err.none { color: #999; }
pre { background: #f7f7f7; padding: 8px; overflow: auto; max-height: 400px; }
.plot { width: 100%; }
"""


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str  # HTML, like the body
    body: str  # HTML, escaped by whoever built it


def render_report(
    runs: list[Run],
    reference: int = 0,
    title: str | None = None,
    max_requests: int = DEFAULT_TIMELINE_REQUESTS,
) -> str:
    if not runs:
        raise ConfigError("a report needs at least one trace")
    figures = {
        TIMELINE_ID: timeline_figure(runs, max_requests),
        CDF_ID: cdf_figure(runs, reference),
    }
    return page(
        title or default_title(runs), report_sections(runs, reference, max_requests), figures
    )


def report_sections(runs: list[Run], reference: int, max_requests: int) -> list[Section]:
    compared = len(runs) > 1
    reference_label = esc(runs[reference].label)
    sections = [Section("runs", "Runs", runs_table(runs, reference))]
    if compared:
        sections.append(
            Section(
                "errors",
                f"Errors against {reference_label}",
                '<p class="small">error % = 100·(run − reference)/reference, on each run\'s own '
                "percentiles; positive = larger than the reference. KS distance: largest gap "
                "between the two empirical CDFs (0 = same, 1 = disjoint).</p>"
                + error_table(runs, reference),
            )
        )
    sections += [
        Section(
            "timeline",
            "Staircase timeline",
            f'<p class="small">Requests {_shown(runs, max_requests)}: each agent\'s calls from '
            "start to end (faded: cancelled or failed), unit releases as ticks, the user's "
            "first answer token as a star. Hover for tokens and status.</p>"
            f'<div id="{TIMELINE_ID}" class="plot"></div>',
        ),
        Section(
            "distributions",
            "Distributions",
            f'<div id="{CDF_ID}" class="plot"></div>',
        ),
        Section("agents", "Per-agent timing", agent_table(runs, reference)),
        Section("engine", "Engine metrics", engine_section(runs)),
        Section("provenance", "Scenario and profile provenance", provenance_section(runs)),
    ]
    return sections


def _shown(runs: list[Run], max_requests: int) -> str:
    shown = shown_requests(runs, max_requests)
    total = len({r["req"] for run in runs for r in run.records if r["type"] == "request"})
    return f"{len(shown)} of {total} (the first by index)"


def default_title(runs: list[Run]) -> str:
    names = list(dict.fromkeys(run.stats.summary["scenario"] or "unnamed" for run in runs))
    return f"stairwise report: {', '.join(names)}"


def page(title: str, sections: list[Section], figures: dict[str, go.Figure]) -> str:
    plotly_js = get_plotlyjs()
    init_js = plot_script(figures)
    nav = " ".join(f'<a href="#{s.anchor}">{s.title}</a>' for s in sections)
    body = "\n".join(
        f'<section id="{s.anchor}"><h2>{s.title}</h2>\n{s.body}\n</section>' for s in sections
    )
    created = datetime.now(UTC).isoformat(timespec="seconds")
    policy = content_security_policy([plotly_js, init_js])
    made = f"made {created} by stairwise {_own_version()} with plotly.js {get_plotlyjs_version()}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{policy}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{STYLE}</style>
<script>{plotly_js}</script>
</head>
<body>
<header>
<h1>{esc(title)}</h1>
<p class="small">{made}; opens offline</p>
<nav>{nav}</nav>
</header>
<main>
{body}
</main>
<script>{init_js}</script>
</body>
</html>
"""


def plot_script(figures: dict[str, go.Figure]) -> str:
    """The script that draws each figure into its div.

    ``pio.to_json`` writes ``<``, ``>`` and ``/`` as ``\\u`` escapes, so no string in the
    data can close the script element.
    """
    entries = ",\n".join(f"{json.dumps(div)}: {pio.to_json(f)}" for div, f in figures.items())
    return (
        f"const figures = {{\n{entries}\n}};\nconst config = {json.dumps(PLOT_CONFIG)};\n"
        "for (const [id, figure] of Object.entries(figures)) {\n"
        "  Plotly.newPlot(id, figure.data, figure.layout, config);\n}\n"
    )


def content_security_policy(scripts: list[str]) -> str:
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in scripts
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "img-src data: blob:; font-src data:"
    )


def _own_version() -> str:
    try:
        return version("stairwise")
    except PackageNotFoundError:
        return "dev"


def write_report(path: Path, html_text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html_text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the report ({exc.strerror})") from None


def validation_report(
    path: Path,
    live: list[Record],
    sim: list[Record],
    sim_trace_driven: list[Record],
    max_requests: int = DEFAULT_TIMELINE_REQUESTS,
    k: int = DEFAULT_K,
) -> None:
    """The report ``validate --report`` writes: live as the reference, both predictions."""
    runs = [
        Run("live", live, k=k),
        Run("sim", sim, k=k),
        Run("sim (trace-driven)", sim_trace_driven, k=k),
    ]
    write_report(path, render_report(runs, reference=0, max_requests=max_requests))
