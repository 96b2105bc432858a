"""``stairwise calibrate`` (traces -> a profile), ``stairwise speed-spread`` (kept live runs'
engine probes -> how much a profile's engine speed moves from run to run) and
``stairwise replay`` (a trace through the simulator on a profile: predicted vs observed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stairwise.app import JsonFlag, app, guarded, progress_bar

if TYPE_CHECKING:
    from sim.profile import Profile


FORMAT_HELP = (
    "Trace format: auto, stairwise, vllm-bench, distserve, distserve-profile, llmservingsim, "
    "llmservingsim-profile, splitwise, argonne."
)
FormatOption = Annotated[str, typer.Option("--format", help=FORMAT_HELP)]
SelectOption = Annotated[
    list[str] | None,
    typer.Option("--select", help="Pick rows of a multi-setup file: key=value (repeatable)."),
]
MaxSeqs = Annotated[int | None, typer.Option(help="The replayed server's max_num_seqs.")]
MaxBatched = Annotated[
    int | None, typer.Option(help="The replayed server's max_num_batched_tokens.")
]
QUICK_EVALUATIONS = 60  # replay simulations of the batching fit under --quick
ServerOption = Annotated[
    str | None, typer.Option("--server", help="stairwise traces: the server the profile is for.")
]


def _selection(items: list[str] | None, option: str = "--select") -> dict[str, str]:
    from sim.errors import ConfigError

    selection = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} {item!r}: expected key=value")
        selection[key.strip()] = value.strip()
    return selection


def _floors(items: list[str] | None) -> dict[str, float]:
    from sim.errors import ConfigError

    floors = {}
    for key, value in _selection(items, "--floor").items():
        try:
            floors[key] = float(value)
        except ValueError:
            raise ConfigError(f"--floor {key}={value}: not a number") from None
    return floors


@app.command()
@guarded
def calibrate(
    output: Annotated[Path, typer.Option("--output", "-o", help="Profile JSON to write.")],
    sources: Annotated[
        list[Path] | None, typer.Option("--from", help="Trace files to fit (repeatable).")
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option(
            help="Profile this vLLM endpoint live (a designed grid of single-agent runs), then "
            "fit its traces."
        ),
    ] = None,
    local: Annotated[
        bool, typer.Option("--local", help="Profile the embedded local vLLM (started if needed).")
    ] = False,
    endpoint_model: Annotated[
        str | None, typer.Option(help="With --endpoint: the served model name.")
    ] = None,
    prompts: Annotated[
        str, typer.Option(help="Profiling grid: prompt lengths (tokens), comma-separated.")
    ] = "32,128,512,1024,1536",
    concurrency: Annotated[
        str, typer.Option(help="Profiling grid: concurrent users, comma-separated.")
    ] = "1,4,16",
    cached: Annotated[
        str, typer.Option(help="Profiling grid: shared cached prefixes (tokens), comma-separated.")
    ] = "0,512",
    output_tokens: Annotated[int, typer.Option(help="Profiling grid: answer length.")] = 128,
    rounds: Annotated[int, typer.Option(help="Profiling grid: requests per user.")] = 3,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="A short profiling grid (about 3 minutes on the local CPU engine) in place of "
            "the grid options, and a shorter fit.",
        ),
    ] = False,
    fmt: FormatOption = "auto",
    select: SelectOption = None,
    name: Annotated[str | None, typer.Option(help="Profile name (default: the file's).")] = None,
    kind: Annotated[str, typer.Option(help="Profile kind: vllm or api.")] = "vllm",
    method: Annotated[
        str,
        typer.Option(
            help="auto, direct (step rows), replay (simulation-based) or profiling (traces of "
            "a designed profiling run; what --endpoint/--local use)."
        ),
    ] = "auto",
    chars_per_token: Annotated[
        float | None,
        typer.Option(help="Characters per token of the model's tokenizer (measured by --local)."),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Model served (if the trace does not say).")
    ] = None,
    hardware: Annotated[str | None, typer.Option(help="Hardware it ran on.")] = None,
    engine_version: Annotated[str | None, typer.Option(help="Serving engine version.")] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="mixed (vLLM V1) or prefill_first (vLLM <= 0.4).")
    ] = None,
    prompt_padding: Annotated[
        int | None,
        typer.Option(
            help="prefill_first only: pad prompt batches to their longest prompt, at most this "
            "many padding tokens (vLLM 0.2's --max-paddings, 256; default: what the source says)."
        ),
    ] = None,
    serial_api: Annotated[
        bool | None,
        typer.Option(
            "--serial-api/--parallel-api",
            help="The server's API process prepares one request at a time (vLLM's single API "
            "server), so a burst reaches the engine spread out (default: on with --local, else "
            "what --initial says, else off).",
        ),
    ] = None,
    kv_capacity: Annotated[int | None, typer.Option(help="KV-cache capacity in tokens.")] = None,
    block_size: Annotated[int | None, typer.Option(help="KV block size in tokens.")] = None,
    max_num_seqs: MaxSeqs = None,
    max_num_batched_tokens: MaxBatched = None,
    server: ServerOption = None,
    fit: Annotated[
        str | None, typer.Option(help="Step coefficients to fit, comma-separated (default: all).")
    ] = None,
    initial: Annotated[
        str | None, typer.Option(help="Start from this profile (name or path); others stay fixed.")
    ] = None,
    floor: Annotated[
        list[str] | None,
        typer.Option(
            help="A lower bound from the hardware for a step coefficient the data may not "
            "identify, e.g. prefill_token_s=1.6e-5 (2 x parameters FLOPs / peak FLOP/s); "
            "repeatable."
        ),
    ] = None,
    floors_from: Annotated[
        str | None,
        typer.Option(
            help="Floors from a sibling profile (name or path): its measured step coefficients "
            "bound ours from below (e.g. a kernel-timing profile of the same model and GPU); "
            "--floor overrides one."
        ),
    ] = None,
    evaluations: Annotated[int, typer.Option(help="Simulations a replay fit may run.")] = 150,
    operator_tables: Annotated[
        bool,
        typer.Option(
            "--tables",
            help="Operator profiles: price steps with the measured tables (written beside the "
            "profile as .npz) instead of a fitted formula; a request trace given with --from "
            "fits the serving run's correction.",
        ),
    ] = False,
    metrics: Annotated[
        list[Path] | None,
        typer.Option(help="Prometheus /metrics snapshots around the run (first and last)."),
    ] = None,
    description: Annotated[str, typer.Option(help="One line on what the profile is.")] = "",
    notes: Annotated[str, typer.Option(help="Free text kept in the provenance.")] = "",
) -> None:
    """Fit a profile from traces and write it (parameters, fit quality, provenance)."""
    from calibration.profiling import QUICK_GRID, ProfilingGrid
    from sim.errors import ConfigError
    from sim.profile import VllmProfile
    from stairwise import api

    if quick and sources is not None:
        raise ConfigError("--quick shortens a live profiling run: give --endpoint or --local")
    grid = (
        QUICK_GRID
        if quick
        else ProfilingGrid(
            _ints("prompts", prompts),
            _ints("concurrency", concurrency),
            _ints("cached", cached),
            output_tokens,
            rounds,
        )
    )
    with progress_bar("calibrating", enabled=True) as update:
        profile = api.calibrate(
            sources or (),
            output,
            fmt,
            _selection(select),
            update,
            endpoint=endpoint,
            local=local,
            endpoint_model=endpoint_model,
            grid=grid,
            metrics=metrics or (),
            log=typer.echo,
            name=name or output.stem,
            kind=kind,
            method=method,
            model=model,
            hardware=hardware,
            engine_version=engine_version,
            scheduler=scheduler,
            prompt_padding=prompt_padding,
            request_overhead_serial=serial_api,
            kv_capacity_tokens=kv_capacity,
            block_size=block_size,
            engine_limits={
                "max_num_seqs": max_num_seqs,
                "max_num_batched_tokens": max_num_batched_tokens,
                "server": server,
            },
            params=tuple(p.strip() for p in fit.split(",")) if fit else None,
            initial=initial,
            floors=_floors(floor),
            floors_from=floors_from,
            max_evaluations=min(evaluations, QUICK_EVALUATIONS) if quick else evaluations,
            description=description,
            notes=notes,
            chars_per_token=chars_per_token,
            operator_tables=operator_tables,
        )
    typer.echo(f"wrote {output}")
    _print_fit(profile.fit)
    if isinstance(profile, VllmProfile) and profile.step_rel_sd:
        shown = ", ".join(f"{k} ±{v:.0%}" for k, v in profile.step_rel_sd.items())
        typer.echo(f"1-sigma relative uncertainty: {shown}")
    _print_kv_check(profile)


@app.command("speed-spread")
@guarded
def speed_spread(
    profile: Annotated[str, typer.Argument(help="The vLLM profile (name or path) run against.")],
    sources: Annotated[
        list[Path],
        typer.Option(
            "--from", help="Kept live traces, or folders of them (validate's --out; repeatable)."
        ),
    ],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the profile with the spread.")
    ] = None,
    speed_log: Annotated[
        Path | None, typer.Option("--log", help="Write the runs used, one JSON line each.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """How far a run's engine speed strays from its profile: the engine probes of kept live
    runs (at least 5), as the profile's speed_rel_sd, which interval runs draw from."""
    import json
    from dataclasses import asdict

    from stairwise import api

    result = api.speed_spread(profile, sources, output, speed_log)
    spread = result.profile.speed_rel_sd
    if as_json:
        runs = [asdict(run) for run in result.runs]
        found = {"profile": result.profile.name, "speed_rel_sd": spread, "runs": runs}
        typer.echo(json.dumps(found))
        return
    for run in result.runs:
        typer.echo(
            f"{run.created[:16]}  {run.trace}  {run.server}: "
            f"prefill ×{run.prefill:.2f}, decode ×{run.decode:.2f}"
        )
    shown = ", ".join(f"{phase} ±{sd:.1%}" for phase, sd in spread.items())
    typer.echo(f"{len(result.runs)} runs against {result.profile.name}: speed spread {shown}")
    if output is not None:
        typer.echo(f"wrote {output}")


def _ints(option: str, values: str) -> tuple[int, ...]:
    from sim.errors import ConfigError

    try:
        return tuple(int(v) for v in values.split(","))
    except ValueError:
        raise ConfigError(f"--{option}: expected comma-separated integers") from None


def _print_fit(fit: dict[str, Any]) -> None:
    typer.echo(f"method: {fit.get('method')}; fitted: {', '.join(fit.get('fitted', [])) or '-'}")
    if fit.get("not_identifiable"):
        typer.echo(f"not identifiable from these data: {', '.join(fit['not_identifiable'])}")
    if "steps" in fit:
        s = fit["steps"]
        r2 = "-" if s["r2"] is None else f"{s['r2']:.4f}"
        typer.echo(
            f"step rows: {s['rows']}, R² {r2}, |relative error| p50 {s['rel_err_p50']:.1%}, "
            f"p90 {s['rel_err_p90']:.1%}, max {s['rel_err_max']:.1%}"
        )
    if "replay" in fit:
        r = fit["replay"]
        typer.echo(
            f"replay fit: {r['evaluations']} simulations, worst quantile error "
            f"{r['max_abs_err_pct']:.1f} %"
        )
    if "tables_alone" in fit:
        typer.echo(
            "operator tables alone, replayed: worst quantile error "
            f"{fit['tables_alone']['max_abs_err_pct']:.1f} %"
        )
    if "correction" in fit:
        c = fit["correction"]
        typer.echo(
            f"serving-run correction: compute × {c['compute_scale']:.3f} + "
            f"{c['step_overhead_s'] * 1e3:.2f} ms per step, "
            f"{c['request_overhead_s'] * 1e3:.1f} ms per request ({c['evaluations']} simulations); "
            f"worst quantile error {c['max_abs_err_pct']:.1f} % on the run it was fitted on"
        )
    if "network" in fit:
        typer.echo(f"network: {fit['network'].get('chosen', 'fixed')} ({fit['network']['source']})")


def _print_kv_check(profile: Profile) -> None:
    peak = profile.fit.get("kv_occupancy_peak_tokens")
    if peak is None:
        return
    line = (
        f"KV cache: the requests held up to {peak:,} tokens at once (reconstructed); "
        f"the profile has {profile.kv_capacity_tokens:,}"
    )
    if profile.kv_capacity_tokens < peak:
        line += " — fewer than the server held: set --kv-capacity to the server's (its log says)"
    typer.echo(line)


@app.command()
@guarded
def replay(
    trace: Annotated[Path, typer.Argument(help="A request-level trace.")],
    profile: Annotated[str, typer.Option("--profile", help="Profile name or path.")],
    fmt: FormatOption = "auto",
    select: SelectOption = None,
    max_num_seqs: MaxSeqs = None,
    max_num_batched_tokens: MaxBatched = None,
    kv_capacity: Annotated[
        int | None, typer.Option(help="The replayed server's KV capacity (tokens).")
    ] = None,
    server: ServerOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Replay a trace's requests in the simulator; print predicted vs observed latencies."""
    import json

    from stairwise import api

    result = api.replay(
        trace,
        profile,
        fmt,
        _selection(select),
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        kv_capacity_tokens=kv_capacity,
        server=server,
    )
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print_comparison(result, str(trace), profile)


def _print_comparison(result: dict[str, Any], trace: str, profile: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from sim.metrics import METRICS, error_pct

    observed, predicted = result["observed"], result["predicted"]
    table = Table(
        title=f"{trace} replayed on {profile}: {observed['requests']} requests",
        title_justify="left",
    )
    for column in ("metric", "observed (ms)", "predicted (ms)", "error"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for metric in (METRICS[name] for name in ("ttft", "tpot", "e2e")):
        for quantile in ("p50", "p90", "p99"):
            want, got = observed[metric.key][quantile], predicted[metric.key][quantile]
            error = error_pct(got, want)
            shown = "-" if error is None else f"{error:+.1f} %"
            table.add_row(f"{metric.label} {quantile}", _ms(want), _ms(got), shown)
    Console().print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.1f}"
