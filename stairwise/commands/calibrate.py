"""``stairwise calibrate`` (traces -> a profile) and ``stairwise replay`` (a trace through the
simulator on a profile: predicted vs observed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from stairwise.app import JsonFlag, app, guarded, progress_bar

if TYPE_CHECKING:
    from pydantic import BaseModel

    from sim.profile import Profile

ModelT = TypeVar("ModelT", bound="BaseModel")

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
# CalibrationOptions fields whose command-line option has another name
OPTION_NAMES = {
    "params": "fit",
    "max_evaluations": "evaluations",
    "kv_capacity_tokens": "kv-capacity",
}
QUICK_EVALUATIONS = 60  # replay simulations of the batching fit under --quick
ServerOption = Annotated[
    str | None, typer.Option("--server", help="stairwise traces: the server the profile is for.")
]


def _selection(items: list[str] | None) -> dict[str, str]:
    from sim.errors import ConfigError

    selection = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--select {item!r}: expected key=value")
        selection[key.strip()] = value.strip()
    return selection


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
    evaluations: Annotated[int, typer.Option(help="Simulations a replay fit may run.")] = 150,
    metrics: Annotated[
        list[Path] | None,
        typer.Option(help="Prometheus /metrics snapshots around the run (first and last)."),
    ] = None,
    description: Annotated[str, typer.Option(help="One line on what the profile is.")] = "",
    notes: Annotated[str, typer.Option(help="Free text kept in the provenance.")] = "",
) -> None:
    """Fit a profile from traces and write it (parameters, fit quality, provenance)."""
    from calibration import CalibrationOptions, read_tables
    from calibration.calibrate import calibrate as run_calibration
    from calibration.profiling import fit_profiling_run
    from calibration.readers.prometheus import run_totals
    from sim.errors import ConfigError
    from sim.profile import ApiProfile, VllmProfile, load_profile, save_profile, this_machine

    if (sources is None) == (endpoint is None and not local):
        raise ConfigError("give either --from FILE... or --endpoint URL / --local")
    if quick and sources is not None:
        raise ConfigError("--quick shortens a live profiling run: give --endpoint or --local")
    if quick:
        from calibration.profiling import QUICK_GRID

        prompts, concurrency, cached = (
            ",".join(map(str, sizes))
            for sizes in (
                QUICK_GRID.prompt_lengths,
                QUICK_GRID.concurrencies,
                QUICK_GRID.cached_prefixes,
            )
        )
        output_tokens, rounds = QUICK_GRID.output_tokens, QUICK_GRID.rounds
        evaluations = min(evaluations, QUICK_EVALUATIONS)
    if sources is None:
        grid = {"prompts": prompts, "concurrency": concurrency, "cached": cached}
        sources, measured = _profile_live(
            endpoint,
            endpoint_model,
            local,
            grid,
            output_tokens,
            rounds,
            output.with_suffix(".traces"),
        )
        fmt, method, chars_per_token = "stairwise", "profiling", chars_per_token or measured
    if local:
        model, hardware, engine_version, block_size, kv_capacity = _local_facts(
            model, hardware, engine_version, block_size, kv_capacity
        )
    profiling = method == "profiling"
    tables = [] if profiling else read_tables(sources, fmt, _selection(select))
    if metrics:
        totals = run_totals(metrics)
        for table in tables:
            table.server_totals = {**totals, **table.server_totals}
    start = load_profile(initial) if initial else None
    if start is not None and not isinstance(start, VllmProfile):
        raise ConfigError(f"--initial {initial}: a {start.kind} profile cannot start a vllm fit")
    options = _validated(
        CalibrationOptions,
        {
            "name": name or output.stem,
            "kind": kind,
            "method": "replay" if profiling else method,
            "model": model,
            "hardware": hardware,
            "engine": "vllm-cpu" if local else None,
            "engine_version": engine_version,
            "scheduler": scheduler,
            "kv_capacity_tokens": kv_capacity,
            "block_size": block_size,
            "engine_limits": {
                "max_num_seqs": max_num_seqs,
                "max_num_batched_tokens": max_num_batched_tokens,
                "server": server,
            },
            "params": tuple(p.strip() for p in fit.split(",")) if fit else None,
            "initial": start,
            "max_evaluations": evaluations,
            "description": description,
            "notes": notes,
            "chars_per_token": chars_per_token,
            "machine": this_machine() if local or _on_loopback(endpoint) else "",
        },
    )
    with progress_bar("fitting", enabled=True) as update:
        profile: VllmProfile | ApiProfile = (
            fit_profiling_run(sources, options, update)
            if profiling
            else run_calibration(tables, options, update)
        )
    save_profile(profile, output)
    typer.echo(f"wrote {output}")
    _print_fit(profile.fit)
    _print_kv_check(profile)


def _on_loopback(endpoint: str | None) -> bool:
    """An endpoint served by this machine: its speed is this machine's."""
    from urllib.parse import urlparse

    return endpoint is not None and urlparse(endpoint).hostname in ("127.0.0.1", "localhost", "::1")


def _local_facts(
    model: str | None,
    hardware: str | None,
    engine_version: str | None,
    block_size: int | None,
    kv_capacity: int | None,
) -> tuple[str, str, str, int, int]:
    """What the embedded server is, unless the options say otherwise."""
    import os
    import platform
    from importlib.metadata import version

    return (
        model or "SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to bf16)",
        hardware or f"{os.cpu_count()} {platform.machine()} cores, no GPU",
        engine_version or version("vllm-cpu"),
        block_size or 128,  # vLLM's CPU backend
        kv_capacity or 93_184,  # what the server reports for VLLM_CPU_KVCACHE_SPACE=2
    )


def _profile_live(
    endpoint: str | None,
    model: str | None,
    local: bool,
    grid: dict[str, str],
    output_tokens: int,
    rounds: int,
    trace_dir: Path,
) -> tuple[list[Path], float]:
    """Run the designed profiling grid live, one trace per cell (finished cells are kept);
    also measure the tokenizer's characters per token on plain English."""
    from calibration.profiling import cell_scenario, profiling_plan
    from sim.errors import ConfigError
    from sim.scenario import scenario_from_dict
    from stairwise import api

    def ints(option: str) -> tuple[int, ...]:
        try:
            return tuple(int(v) for v in grid[option].split(","))
        except ValueError:
            raise ConfigError(f"--{option}: expected comma-separated integers") from None

    server: dict[str, Any] = {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m"}
    if local:
        from live import local_server

        state = local_server.start(log=typer.echo)
        server |= {"endpoint": state.settings.url, "model": local_server.MODEL_NAME}
    else:
        server |= {"endpoint": endpoint, "model": model}
    chars_per_token = _measure_chars_per_token(server["endpoint"], server["model"])
    cells = profiling_plan(
        ints("prompts"), ints("concurrency"), ints("cached"), output_tokens, rounds
    )
    trace_dir.mkdir(parents=True, exist_ok=True)
    traces = []
    with progress_bar("profiling", enabled=True) as update:
        for done, cell in enumerate(cells):
            update(done, len(cells))
            trace = trace_dir / f"{cell.name}.jsonl"
            traces.append(trace)
            if trace.exists() and '"type":"end"' in trace.read_text()[-300:]:
                continue  # finished in an earlier, interrupted profiling run
            scenario = scenario_from_dict(cell_scenario(cell, server, chars_per_token), cell.name)
            result = api.run(scenario, trace=trace, cold_cache=True, log=typer.echo)
            if result.interrupted:
                raise KeyboardInterrupt
    return traces, chars_per_token


def _measure_chars_per_token(endpoint: str, model: str | None) -> float:
    import asyncio

    import httpx

    from live.texts import measure_chars_per_token
    from sim.errors import ConfigError

    try:
        return asyncio.run(measure_chars_per_token(endpoint, model))
    except (httpx.HTTPError, KeyError, ValueError):
        message = f"{endpoint}: cannot count tokens (a vLLM server has /tokenize)"
        raise ConfigError(message) from None


def _validated(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """Options checked by their pydantic model; a bad one is reported like any bad input."""
    from pydantic import ValidationError

    from sim.errors import ConfigError

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][-1])
        field = OPTION_NAMES.get(name, name.replace("_", "-"))
        message = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--{field}: {message}") from None


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

    from calibration.replay import EngineSettings
    from stairwise import api

    engine = _validated(
        EngineSettings,
        {
            "max_num_seqs": max_num_seqs,
            "max_num_batched_tokens": max_num_batched_tokens,
            "kv_capacity_tokens": kv_capacity,
            "server": server,
        },
    )
    result = api.replay(trace, profile, fmt, _selection(select), **engine.model_dump())
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        _print_comparison(result, str(trace), profile)


def _print_comparison(result: dict[str, Any], trace: str, profile: str) -> None:
    from rich.console import Console
    from rich.table import Table

    observed, predicted = result["observed"], result["predicted"]
    table = Table(
        title=f"{trace} replayed on {profile}: {observed['requests']} requests",
        title_justify="left",
    )
    for column in ("metric", "observed (ms)", "predicted (ms)", "error"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for label, key in (("TTFT", "ttft_s"), ("TPOT", "tpot_s"), ("E2E", "e2e_s")):
        for quantile in ("p50", "p90", "p99"):
            want, got = observed[key][quantile], predicted[key][quantile]
            error = "-" if not want or got is None else f"{100 * (got - want) / want:+.1f} %"
            table.add_row(f"{label} {quantile}", _ms(want), _ms(got), error)
    Console().print(table)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.1f}"
