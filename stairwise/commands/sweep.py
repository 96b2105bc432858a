"""``stairwise sweep`` (what-if studies) and ``stairwise plan`` (capacity under SLOs)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from sim.capacity import LEVERS, PlanSettings
from sim.errors import ConfigError
from stairwise.app import JsonFlag, Overrides, app, err_console, guarded, progress_bar

if TYPE_CHECKING:
    from collections.abc import Callable

    from sim.capacity import Assessment, CapacityPlan, RateSearch, ReplicaSearch
    from sim.sweep import SweepResult

BackendOption = Annotated[
    str, typer.Option("--backend", help="local (a process pool) or ray (a Ray cluster).")
]
AddressOption = Annotated[
    str | None, typer.Option("--address", help="Ray cluster address (default: start Ray here).")
]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", help="Parallel workers (default: all CPU cores).")
]
SHOWN_ROWS = 20
SHOWN_METRICS = 3
SHOWN_CANDIDATES = 10
DEFAULTS = PlanSettings()
LIVE_REQUESTS = 20  # per live load level: about a minute each near the local engine's capacity


def _backend_name(backend: str) -> Any:
    if backend not in ("local", "ray"):
        raise ConfigError(f"--backend {backend!r}: expected local or ray")
    return backend


@app.command()
@guarded
def sweep(
    sweep_file: Annotated[Path, typer.Argument(help="Sweep YAML file.")],
    backend: BackendOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Results directory (default: sweeps/<sweep name>)."),
    ] = None,
    report: Annotated[
        bool, typer.Option("--report/--no-report", help="Write report.html beside the results.")
    ] = True,
    as_json: JsonFlag = False,
) -> None:
    """Run a what-if sweep; a rerun resumes, computing only the points not yet stored."""
    from sim.sweep import load_sweep, make_backend, run_sweep

    loaded = load_sweep(sweep_file)
    directory = out or Path("sweeps") / _safe_name(loaded.spec.name)
    with (
        make_backend(_backend_name(backend), workers, address) as running,
        progress_bar("sweeping", enabled=not as_json) as update,
    ):
        result = run_sweep(loaded, running, directory, update)
    if report:
        from reports.sweep import write_sweep_report

        write_sweep_report(result, directory / "report.html")
    if as_json:
        typer.echo(json.dumps(result.rows, indent=2))
    else:
        _print_sweep(result, directory / "report.html" if report else None)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "sweep"


def _print_sweep(result: SweepResult, report: Path | None) -> None:
    console = Console()
    console.print(
        f"{len(result.rows)} points: {result.computed} computed, {result.resumed} resumed"
        + (f", {result.skipped} invalid left out" if result.skipped else "")
        + f" in {result.wall_s:.1f} s",
        highlight=False,
    )
    console.print(f"results: {result.path}" + (f"\nreport:  {report}" if report else ""))
    metrics = result.metrics[:SHOWN_METRICS]
    table = Table(
        title="points: mean over replications (low–high: prediction interval of one run)",
        title_justify="left",
    )
    for column in [*(_short_path(a) for a in result.axes), *metrics]:
        table.add_column(column, justify="right", no_wrap=True)
    for row in result.rows[:SHOWN_ROWS]:
        table.add_row(
            *(json.dumps(row[a]) if not isinstance(row[a], str) else row[a] for a in result.axes),
            *(_estimate(row, m) for m in metrics),
        )
    console.print(table)
    if len(result.rows) > SHOWN_ROWS or len(result.metrics) > SHOWN_METRICS:
        console.print("(more rows and metrics in the results file and the report)")


def _estimate(row: dict[str, Any], metric: str) -> str:
    mean, low, high = row[metric], row[f"{metric}.ci_low"], row[f"{metric}.ci_high"]
    if mean is None:
        return "-"
    return f"{mean:.4g}" if low is None else f"{mean:.4g} ({low:.3g}–{high:.3g})"


def _short_path(path: str) -> str:
    """The last two parts of an axis path: enough to tell axes apart in a narrow table."""
    return ".".join(path.split(".")[-2:])


@app.command()
@guarded
def plan(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML file.")],
    slo: Annotated[
        list[str],
        typer.Option("--slo", help="An SLO, METRIC_STAT=BOUND, e.g. ttft_p90=2s (repeatable)."),
    ],
    target_rate: Annotated[
        float | None,
        typer.Option("--target-rate", help="Requests/s to find the replicas for."),
    ] = None,
    requests: Annotated[
        int | None,
        typer.Option(
            help=f"Requests per load level (default {DEFAULTS.requests}; with --live "
            f"{LIVE_REQUESTS}, for the simulated search too, so both judge the same runs)."
        ),
    ] = None,
    replications: Annotated[
        int, typer.Option(help="Runs per load level; each must pass.")
    ] = DEFAULTS.replications,
    interval_replications: Annotated[
        int,
        typer.Option(
            help="Runs at the maximum rate behind its intervals (other seeds, drawn profile "
            "parameters); 1: no intervals."
        ),
    ] = DEFAULTS.interval_replications,
    level: Annotated[
        float, typer.Option(help="Probability an interval holds one run's value.")
    ] = DEFAULTS.level,
    keep_up_slack: Annotated[
        float, typer.Option(help="How far (a fraction of the arrival span) it may fall behind.")
    ] = DEFAULTS.keep_up_slack,
    rate_tolerance: Annotated[
        float, typer.Option(help="Relative precision of the maximum rate.")
    ] = DEFAULTS.rate_tolerance,
    schedules: Annotated[
        bool,
        typer.Option("--schedules/--no-schedules", help="Search chunk schedules and redundancy."),
    ] = True,
    first_chunk: Annotated[
        list[int] | None,
        typer.Option("--first-chunk", help=f"First chunk sizes to try {DEFAULTS.first_chunks}."),
    ] = None,
    growth: Annotated[
        list[float] | None,
        typer.Option("--growth", help=f"Chunk growth factors to try {DEFAULTS.growths}."),
    ] = None,
    schedule: Annotated[
        list[str] | None,
        typer.Option("--schedule", help="A fixed schedule to try too, e.g. 8,128,256."),
    ] = None,
    lever: Annotated[
        list[str] | None,
        typer.Option(
            "--lever",
            help=f"What the schedule search may change (repeatable; default all): "
            f"{', '.join(LEVERS)}.",
        ),
    ] = None,
    min_first_chunk: Annotated[
        int | None,
        typer.Option(
            "--min-first-chunk",
            help="Try no proposer schedule whose first chunk is shorter (the aggregator's "
            "first round reads that much of each proposer; 8 keeps quality in the staircase "
            "paper, 4 may not).",
        ),
    ] = None,
    max_redundancy: Annotated[
        int | None,
        typer.Option(
            "--max-redundancy",
            help="Try no redundancy above this (a round skips that many inputs, and what "
            "only they knew).",
        ),
    ] = None,
    min_coverage: Annotated[
        float | None,
        typer.Option(
            "--min-coverage",
            help="Keep only candidates whose answer's first token was written with at least "
            "this share (0-1, p50) of the inputs' whole answers read.",
        ),
    ] = None,
    live: Annotated[
        bool,
        typer.Option(
            "--live",
            help="Also measure the maximum sustainable rate for real on the scenario's servers "
            "(the embedded local vLLM unless --no-local), with the same search and rule.",
        ),
    ] = False,
    local: Annotated[
        bool, typer.Option("--local/--no-local", help="--live on the embedded local vLLM.")
    ] = True,
    live_budget: Annotated[
        float,
        typer.Option(
            help="--live: seconds the live search's load levels may take (then it stops); the "
            "engine probes around it add 10-80 s."
        ),
    ] = 900.0,
    live_out: Annotated[
        Path, typer.Option(help="--live: where each live load level's trace goes.")
    ] = Path("out/plan-live"),
    probe: Annotated[
        bool,
        typer.Option(
            "--probe/--no-probe",
            help="--live: probe the engine's speed before and after the search and search the "
            "simulated maximum again at that speed (the model's error without the drift).",
        ),
    ] = True,
    overrides: Overrides = None,
    backend: BackendOption = "local",
    address: AddressOption = None,
    workers: WorkersOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Maximum sustainable rate, replicas for a target rate, cost, best chunk schedule."""
    from stairwise import api

    settings = PlanSettings(
        requests=requests or (LIVE_REQUESTS if live else DEFAULTS.requests),
        replications=replications,
        keep_up_slack=keep_up_slack,
        rate_tolerance=rate_tolerance,
        target_rate=target_rate,
        search_schedules=schedules,
        first_chunks=tuple(first_chunk) if first_chunk else DEFAULTS.first_chunks,
        growths=tuple(growth) if growth else DEFAULTS.growths,
        schedules=tuple(_parse_schedule(text) for text in schedule or []),
        interval_replications=interval_replications,
        level=level,
        levers=tuple(lever) if lever else LEVERS,
        min_first_chunk=min_first_chunk,
        max_redundancy=max_redundancy,
        min_coverage=min_coverage,
    )
    with _phases(enabled=not as_json) as say:
        result = api.plan(
            scenario,
            slo,
            settings,
            overrides=overrides or [],
            live=live,
            local=local,
            live_budget_s=live_budget,
            live_out=live_out,
            probe=probe,
            progress=say,
            log=err_console.print,
            backend=_backend_name(backend),
            workers=workers,
            address=address,
        )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_plan(result)


def _parse_schedule(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"--schedule {text!r}: expected sizes like 8,128,256") from None


@contextmanager
def _phases(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A spinner on stderr naming the search under way."""
    if not enabled or not err_console.is_terminal:
        yield lambda phase: None
        return
    with err_console.status("planning") as status:
        yield lambda phase: status.update(f"planning: {phase}")


def _print_plan(result: CapacityPlan) -> None:
    console = Console()
    slos = ", ".join(
        f"{s.name} ≤ {s.bound_s:.3g} s"
        + (f" ({s.itl_factor:g}× standard ITL)" if s.itl_factor else "")
        for s in result.slos
    )
    console.print(f"[bold]{result.scenario}[/bold] under {slos}", highlight=False)
    if result.reference is not None:
        reference = result.reference
        itl = reference.itl_s.get("p90")
        console.print(
            "standard mode (simulated reference): ITL p90 "
            + ("-" if itl is None else f"{itl * 1e3:.1f} ms")
            + ", answer TPS p50 "
            + ("-" if reference.answer_tps is None else f"{reference.answer_tps:.1f}"),
            highlight=False,
        )
    console.print(_capacity_line("as given", result.capacity, result.settings), highlight=False)
    if result.live_capacity is not None and result.live_search is not None:
        live_line = _capacity_line("as given, live", result.live_capacity, result.settings)
        console.print(live_line, highlight=False)
        search = result.live_search
        error = result.capacity_error_pct
        console.print(
            f"  live search: {search['levels']} levels in {search['elapsed_s']:.0f} s"
            + ("" if search["complete"] else " (stopped by --live-budget)")
            + ("" if error is None else f"; simulated maximum {error:+.1f} % off the live one"),
            highlight=False,
        )
        _print_probes(console, result)
    if result.replicas is not None:
        line = _replicas_line("as given", result, result.replicas, result.capacity)
        console.print(line, highlight=False)
    if result.schedules:
        _print_candidates(console, result)
    if result.best is not None and result.best_capacity is not None:
        best = f"best ({result.best.label}, redundancy {result.best.redundancy})"
        console.print(_capacity_line(best, result.best_capacity, result.settings), highlight=False)
        if result.best_replicas is not None:
            line = _replicas_line(best, result, result.best_replicas, result.best_capacity)
            console.print(line, highlight=False)


def _print_probes(console: Console, result: CapacityPlan) -> None:
    """The engine's probed speed around the live search, and the capacity simulated at it."""
    for name, entry in (result.live_probe or {}).items():
        readings = [entry[when] for when in ("before", "after") if when in entry]
        speeds = ", ".join(
            f"prefill ×{r['prefill_factor']:.2f} decode ×{r['decode_factor']:.2f}" for r in readings
        )
        drift = entry.get("drift_pct")
        unreliable = entry.get("unreliable")
        console.print(
            f"  engine probe {name} (× the profile's costs, before / after): {speeds}"
            + ("" if drift is None else f"; drift {drift:.0f} %")
            + (" — unreliable: the engine changed speed during the search" if unreliable else ""),
            highlight=False,
        )
    if result.capacity_probe_scaled is not None:
        line = _capacity_line("at the probed speed", result.capacity_probe_scaled, result.settings)
        error = result.capacity_error_pct_probe_scaled
        console.print(
            line + ("" if error is None else f"; {error:+.1f} % off the live one"), highlight=False
        )


def _replicas_line(
    what: str, result: CapacityPlan, replicas: ReplicaSearch, capacity: RateSearch
) -> str:
    if capacity.max_rate is None:
        needed = "no number of replicas helps (the SLOs fail even at the lowest rate)"
    elif replicas.servers is None:
        needed = f"more than {result.settings.max_replicas} replicas of a server"
    else:
        servers = ", ".join(f"{n}: {k}" for n, k in replicas.servers.items())
        grown = ", ".join(dict.fromkeys(replicas.scaled)) or "none"
        needed = f"replicas {servers} (scaled: {grown}){_cost(replicas.at_target)}"
    return f"{what}, for {replicas.target_rate:g} requests/s: {needed}"


def _capacity_line(what: str, search: RateSearch, settings: PlanSettings) -> str:
    if search.max_rate is None:
        failing = search.at_failing
        why = f" ({_why(failing)})" if failing is not None else ""
        return f"{what}: no rate is sustainable, not even {search.first_failing:.3g}/s{why}"
    ceiling = (
        f" (fails at {search.first_failing:.4g}: {_why(search.at_failing)})"
        if search.first_failing is not None and search.at_failing is not None
        else " (nothing saturated up to the search limit)"
    )
    return (
        f"{what}: max sustainable rate {search.max_rate:.4g} requests/s"
        f"{_cost(search.at_max)}{ceiling}{_intervals(search, settings)}"
    )


def _intervals(search: RateSearch, settings: PlanSettings) -> str:
    """The SLO metrics at the maximum rate with their intervals, and how often it held."""
    if search.at_max is None or search.held_share is None:
        return ""
    values = []
    for name, value in search.at_max.values.items():
        interval = search.at_max.intervals.get(name)
        if value is not None and interval is not None:
            values.append(f"{name} {value:.3g} s ({interval[0]:.3g}–{interval[1]:.3g})")
    return (
        f"\n  at that rate: {', '.join(values)}; sustainable in {search.held_share:.0%} of "
        f"{settings.interval_replications} runs with other seeds (and parameter draws where a "
        f"profile states their uncertainty); (low–high): {settings.level:.0%} prediction "
        "interval of one run's value"
    )


def _why(assessment: Assessment) -> str:
    reasons = [
        f"{name} {value:.3g} s" for name, value in assessment.values.items() if value is not None
    ]
    if not assessment.keeps_up:
        reasons.append("falls behind the arrivals")
    if assessment.failed_requests:
        reasons.append(f"{assessment.failed_requests} failed requests")
    return ", ".join(reasons)


def _cost(assessment: Assessment | None) -> str:
    """$/request, and when GPU-hours are priced, its per-token and per-GPU-hour parts."""
    if assessment is None:
        return ""
    cost = f", ${assessment.cost_per_request:.6f}/request"
    if assessment.cost_gpu_per_request:
        cost += (
            f" (tokens ${assessment.cost_tokens_per_request:.6f} + GPU-hours "
            f"${assessment.cost_gpu_per_request:.6f})"
        )
    return cost


def _print_candidates(console: Console, result: CapacityPlan) -> None:
    table = Table(
        title=f"chunk schedule (first×growth) and redundancy r, best "
        f"{min(SHOWN_CANDIDATES, len(result.schedules))} of {len(result.schedules)}; "
        "score = worst value / bound; seconds",
        title_justify="left",
    )
    table.add_column("schedule", no_wrap=True)
    table.add_column("r", justify="right")
    table.add_column("ok")
    table.add_column("score", justify="right")
    for slo in result.slos:
        table.add_column(slo.name, justify="right")
    table.add_column("answer TPS p50", justify="right")
    table.add_column("vs standard", justify="right")
    table.add_column("read at token 1", justify="right")
    table.add_column("$/request", justify="right")
    for candidate in result.schedules[:SHOWN_CANDIDATES]:
        a = candidate.assessment
        values = [f"{v:.3f}" if v is not None else "-" for v in a.values.values()]
        ratio = candidate.tps_ratio
        table.add_row(
            candidate.label,
            str(candidate.redundancy),
            "yes" if a.sustainable else "no",
            f"{a.score:.2f}",
            *values,
            "-" if a.answer_tps is None else f"{a.answer_tps:.1f}",
            "-" if not ratio or not math.isfinite(ratio) else f"{1 / ratio:.2f}×",
            "-" if a.coverage is None else f"{a.coverage:.1%}",
            f"{a.cost_per_request:.6f}",
        )
    console.print(table)
