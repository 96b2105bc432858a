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
    from stairwise import api

    written = api.report(traces, output, reference, timeline_requests, title)
    typer.echo(
        f"wrote {written.path} ({written.size_bytes / 1e6:.1f} MB, {written.runs} runs, "
        f"compared with {written.reference})"
    )
