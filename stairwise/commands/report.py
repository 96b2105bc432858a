"""``stairwise report``: any set of traces, simulated or live, as one HTML file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from stairwise.app import app, guarded


@app.command()
@guarded
def report(
    traces: Annotated[
        list[Path], typer.Argument(help="Trace files (JSON lines) of simulated or live runs.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="The HTML file to write.")],
    reference: Annotated[
        int | None,
        typer.Option(
            help="Which trace (1-based) the others are compared with; "
            "by default the first live trace, else the first."
        ),
    ] = None,
    timeline_requests: Annotated[
        int, typer.Option(min=1, help="How many requests the staircase timeline shows.")
    ] = 10,
    title: Annotated[str | None, typer.Option(help="The page title.")] = None,
) -> None:
    """Timeline, CDFs, error table, engine metrics and provenance of traces, in one HTML file."""
    from reports.html import render_report, write_report
    from reports.runs import load_runs, pick_reference

    runs = load_runs(traces)
    reference_index = pick_reference(runs, reference)
    html_text = render_report(runs, reference_index, title, timeline_requests)
    write_report(output, html_text)
    typer.echo(
        f"wrote {output} ({len(html_text) / 1e6:.1f} MB, {len(runs)} runs, "
        f"compared with {runs[reference_index].label})"
    )
