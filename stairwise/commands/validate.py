"""``stairwise validate``: scenarios run live and simulated, side by side."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer

from stairwise.app import JsonFlag, Overrides, app, err_console, guarded
from stairwise.commands.run import Isolate, Threads


@app.command()
@guarded
def validate(
    scenarios: Annotated[
        list[Path], typer.Argument(help="Scenario YAML files (several: a validation suite).")
    ],
    overrides: Overrides = None,
    profile: Annotated[
        str | None, typer.Option(help="Simulate every vLLM server on this profile (name/path).")
    ] = None,
    as_json: JsonFlag = False,
    report: Annotated[
        Path | None,
        typer.Option(help="HTML report (with several scenarios: the suite's summary page)."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Where traces and per-scenario reports go.")] = Path(
        "out/validate"
    ),
    local: Annotated[
        bool,
        typer.Option("--local/--no-local", help="Run on the embedded local vLLM (default)."),
    ] = True,
    threads: Threads = None,
    isolate: Isolate = None,
    repeat: Annotated[
        int,
        typer.Option(
            min=1,
            help="Run each scenario live this many times and pool the runs (a shared "
            "machine's runs of a few requests differ by 10–20 %).",
        ),
    ] = 1,
    live_from: Annotated[
        list[Path] | None,
        typer.Option(
            help="Compare with the live traces (<name>.live.jsonl, .live-2.jsonl, …) an earlier "
            "validate left in this folder instead of running the scenarios again (e.g. after "
            "recalibrating); repeat to pool several folders' runs."
        ),
    ] = None,
    probe: Annotated[
        bool,
        typer.Option(
            "--probe/--no-probe",
            help="Measure each vLLM server's speed right before and after each live run (5-40 s "
            "each on the local engine) and compare also on the profile rescaled to it.",
        ),
    ] = True,
    max_error: Annotated[
        float | None,
        typer.Option(
            help="Exit 1 if a headline error (TTFT p50/p90, TPS p50, E2E p50, stall p50) of the "
            "scenario-only simulation exceeds this many percent."
        ),
    ] = None,
) -> None:
    """Run scenarios live, simulate them (from the file, and trace-driven), compare."""
    from reports.table import print_validation, recalibration_hint
    from stairwise import api

    results = api.validate_suite(
        scenarios,
        overrides,
        out,
        profile,
        local=local,
        threads=threads,
        isolate=isolate,
        repeat=repeat,
        live_from=live_from or (),
        report=report,
        log=err_console.print,
        probe=probe,
    )
    if report is not None:
        err_console.print(f"report: {report}")
    if as_json:
        payload = [r.summary for r in results]
        typer.echo(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2))
    else:
        for result in results:
            print_validation(result.name, result.summary)
        hints = {h for r in results if (h := recalibration_hint(r.summary)) is not None}
        for hint in sorted(hints):
            err_console.print(hint)
    if max_error is not None and any(r.worst_error() > max_error for r in results):
        worst = max(results, key=lambda r: r.worst_error())
        if math.isinf(worst.worst_error()):
            side = "live" if worst.summary["live"]["requests"] == 0 else "simulated"
            err_console.print(f"{worst.name}: every {side} request failed")
        else:
            err_console.print(
                f"{worst.name}: an error of {worst.worst_error():.1f} % > {max_error} %"
            )
        raise typer.Exit(1)
