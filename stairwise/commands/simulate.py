"""``stairwise simulate`` and ``stairwise profiles``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

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
) -> None:
    """Predict TTFT, ITL, TPOT, E2E, TPS, stalls, throughput and cost of a scenario."""
    from sim import Simulator, load_scenario
    from sim.metrics import summarize

    loaded = load_scenario(scenario, overrides or [])
    if seed is not None:
        loaded = loaded.model_copy(update={"seed": seed})
    simulator = Simulator(loaded, trace_path=trace, profile_dir=scenario.parent)
    with progress_bar("simulating", enabled=not as_json) as update:
        result = simulator.run(progress=update)
    emit(summarize(result.records, k=k), as_json)


@app.command()
def profiles() -> None:
    """List the shipped engine profiles."""
    from sim.profile import load_profile, shipped_profiles

    for name in shipped_profiles():
        profile = load_profile(name)
        typer.echo(
            f"{name}\t{profile.kind}\t{profile.provenance.model} on {profile.provenance.hardware}"
        )
