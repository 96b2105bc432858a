"""``stairwise simulate`` and ``stairwise profiles``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sim.intervals import DEFAULT_LEVEL, DEFAULT_REPLICATIONS
from stairwise.app import JsonFlag, Overrides, TraceOption, app, emit, guarded, progress_bar


@app.command()
@guarded
def simulate(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    overrides: Overrides = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.")] = None,
    as_json: JsonFlag = False,
    trace: TraceOption = None,
    k: Annotated[int, typer.Option(help="Report the time to the k-th answer token.")] = 32,
    replications: Annotated[
        int,
        typer.Option(
            help="Runs behind the intervals (other seeds, drawn profile parameters); "
            "1: no intervals."
        ),
    ] = DEFAULT_REPLICATIONS,
    level: Annotated[
        float, typer.Option(help="Probability an interval holds one run's quantile.")
    ] = DEFAULT_LEVEL,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes for the interval runs (default: every core when they take more "
            "than a few seconds; the numbers are the same)."
        ),
    ] = None,
) -> None:
    """Predict TTFT, ITL, TPOT, E2E, TPS, stalls, throughput and cost of a scenario, with
    prediction intervals for the p50 and p90 of each latency."""
    from sim import simulate as predict

    with progress_bar("simulating", enabled=not as_json) as update:
        result = predict(
            scenario,
            overrides or [],
            seed,
            trace,
            replications,
            level,
            progress=update,
            k=k,
            workers=workers,
        )
    emit(result.summary, as_json)


@app.command()
def profiles() -> None:
    """List the shipped engine profiles, each file's own hardware, and the variant a name
    resolves to on this machine's processor where that is another file."""
    from sim.profile import load_profile, shipped_profiles

    for name in shipped_profiles():
        profile = load_profile(name, exact=True)
        here = load_profile(name).name
        line = (
            f"{name}\t{profile.kind}\t{profile.provenance.model} on {profile.provenance.hardware}"
        )
        typer.echo(line + (f"\t(here: {here})" if here != name else ""))
