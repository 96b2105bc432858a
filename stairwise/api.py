"""The Python API of what needs the live runner, calibration or reports: ``run``, ``validate``,
``calibrate``, ``speed_spread``, ``replay`` and ``report`` — the CLI commands of the same
names call these.

Scenarios are objects or YAML paths with ``--set``-style overrides, as for ``simulate``.
Bad input raises :class:`sim.errors.ConfigError` (the CLI turns it into one line, exit 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from pydantic import BaseModel

from sim import resolve_scenario
from sim.errors import ConfigError, writable_file, writable_folder
from sim.scenario import Scenario

if TYPE_CHECKING:
    from calibration import CalibrationOptions
    from calibration.profiling import ProfilingGrid
    from calibration.speed import RunSpeed
    from live.runner import LiveResult
    from sim.capacity import CapacityPlan, PlanSettings
    from sim.profile import Profile, VllmProfile
    from stairwise.orchestrate.validation import Validation

Progress = Callable[[int, int], None]
ModelT = TypeVar("ModelT", bound=BaseModel)


def run(
    scenario: Scenario | str | Path,
    overrides: list[str] | None = None,
    trace: str | Path | None = None,
    local: bool = False,
    threads: int | None = None,
    isolate: bool | None = None,
    cold_cache: bool = False,
    inject_network: bool = False,
    progress: Progress | None = None,
    log: Callable[[str], None] = print,
    probe: bool = True,
    keep_text: bool = False,
) -> LiveResult:
    """Execute a scenario for real against its servers (``local``: the embedded vLLM, started
    if needed, with an empty prefix cache); ``inject_network`` routes every server through a
    proxy that adds the scenario's network latency. ``result.interrupted`` says whether Ctrl-C
    ended it early (the summary then covers the requests that completed). ``probe``: measure
    each vLLM server's speed right before and after, kept in the trace. ``keep_text``: the
    trace keeps the user prompts and every call's prompt and text (never keys or headers),
    which :func:`compare` reads."""
    from stairwise.orchestrate.live import prepared, run_live

    if trace is not None:
        writable_file(trace, "--trace")
    loaded, profile_dir = resolve_scenario(scenario, overrides)
    loaded = _live_servable(loaded)
    loaded = prepared(loaded, local, threads, cold_cache, log, isolate)
    return run_live(loaded, trace, inject_network, progress, probe, profile_dir, log, keep_text)


def validate(
    scenario: Scenario | str | Path,
    overrides: list[str] | None = None,
    out: str | Path = "out/validate",
    profile: str | None = None,
    local: bool = True,
    threads: int | None = None,
    isolate: bool | None = None,
    repeat: int = 1,
    live_from: Sequence[str | Path] = (),
    report: bool = True,
    log: Callable[[str], None] = print,
    probe: bool = True,
) -> Validation:
    """Run a scenario live ``repeat`` times (or read the runs kept in the ``live_from``
    folders, which must have run this scenario), simulate it from the file and trace-driven,
    compare. ``profile``: simulate every vLLM server on this one. Traces and the HTML report
    go to ``out``."""
    from stairwise.orchestrate.validation import validate as validate_scenario

    (loaded,) = _validation_scenarios(
        [scenario], overrides, profile, local, threads, isolate, repeat, live_from, out, None, log
    )
    return validate_scenario(loaded, Path(out), report, log, _folders(live_from), repeat, probe)


def validate_suite(
    scenarios: Sequence[Scenario | str | Path],
    overrides: list[str] | None = None,
    out: str | Path = "out/validate",
    profile: str | None = None,
    local: bool = True,
    threads: int | None = None,
    isolate: bool | None = None,
    repeat: int = 1,
    live_from: Sequence[str | Path] = (),
    report: str | Path | None = None,
    log: Callable[[str], None] = print,
    probe: bool = True,
) -> list[Validation]:
    """:func:`validate` for each scenario; ``report``: the one scenario's HTML report, or the
    suite's summary page for several (``stairwise validate``)."""
    from stairwise.orchestrate.validation import validate_suite as validate_all

    loaded = _validation_scenarios(
        scenarios, overrides, profile, local, threads, isolate, repeat, live_from, out, report, log
    )
    page = None if report is None else Path(report)
    return validate_all(loaded, Path(out), page, log, _folders(live_from), repeat, probe)


def _validation_scenarios(
    scenarios: Sequence[Scenario | str | Path],
    overrides: list[str] | None,
    profile: str | None,
    local: bool,
    threads: int | None,
    isolate: bool | None,
    repeat: int,
    live_from: Sequence[str | Path],
    out: str | Path,
    report: str | Path | None,
    log: Callable[[str], None],
) -> list[Scenario]:
    """Scenarios resolved (``profile`` on every vLLM server), on the local server unless
    their live runs are read from kept traces; the options checked before any long work."""
    from stairwise.orchestrate.live import prepared
    from stairwise.orchestrate.validation import with_profile

    if live_from and repeat > 1:
        raise ConfigError("--repeat runs the scenarios live; --live-from reads kept runs: not both")
    writable_folder(out, "--out")
    if report is not None:
        writable_file(report, "--report")
    resolved = [_live_servable(resolve_scenario(s, overrides)[0]) for s in scenarios]
    if profile is not None:
        resolved = [with_profile(s, profile) for s in resolved]
    if live_from or not local:
        return resolved
    return [prepared(s, local=True, threads=threads, log=log, isolate=isolate) for s in resolved]


def _folders(live_from: Sequence[str | Path]) -> list[Path]:
    return [Path(folder) for folder in live_from]


def _live_servable(scenario: Scenario) -> Scenario:
    """The scenario, if a real server can execute it; simulator-only what-ifs are refused."""
    if scenario.topology.mode == "multistream":
        raise ConfigError(
            f"{scenario.name}: topology.mode multistream is a simulator-only what-if: no engine "
            "serves multi-stream decoding yet (use `stairwise simulate`)"
        )
    return scenario


# option fields named by their command-line option in errors
OPTION_NAMES = {
    "params": "fit",
    "max_evaluations": "evaluations",
    "kv_capacity_tokens": "kv-capacity",
    "operator_tables": "tables",
    "floors": "floor",
}


def calibrate(
    sources: Sequence[str | Path] = (),
    output: str | Path | None = None,
    format: str = "auto",
    select: dict[str, str] | None = None,
    progress: Progress | None = None,
    endpoint: str | None = None,
    local: bool = False,
    endpoint_model: str | None = None,
    grid: ProfilingGrid | None = None,
    metrics: Sequence[str | Path] = (),
    log: Callable[[str], None] = print,
    **options: Any,
) -> Profile:
    """Fit a profile from trace files (``format``: see ``stairwise calibrate --format``), or
    profile a live vLLM — ``endpoint`` (serving ``endpoint_model``) or ``local``, the embedded
    one — with a designed ``grid`` of runs (traces kept beside ``output``) and fit those.
    ``options`` are :class:`calibration.CalibrationOptions` fields (``name``, ``model``,
    ``hardware``, ``kv_capacity_tokens``, ``method``, ``params``, ``initial`` (a profile name
    or path), ``floors`` (lower bounds by coefficient), ``floors_from`` (a profile name or
    path whose measured coefficients are floors), ``max_evaluations``, ``operator_tables``,
    …); ``metrics``: Prometheus snapshots around the traced run. Written to ``output`` if
    given (checked first; operator tables beside it, as .npz)."""
    from calibration import read_tables
    from calibration.calibrate import calibrate as fit
    from calibration.profiling import fit_profiling_run
    from calibration.readers.prometheus import run_totals
    from sim.profile import save_profile, this_machine
    from stairwise.orchestrate.profiling import (
        DEFAULT_GRID,
        local_facts,
        on_this_machine,
        profile_live,
        with_local_speed_spread,
    )

    if (not sources) == (endpoint is None and not local):
        raise ConfigError("give either --from FILE... or --endpoint URL / --local")
    if output is not None:
        output = writable_file(output, "--output")
    if not sources:
        traces = output.with_suffix(".traces") if output else Path("profiling.traces")
        grid = grid or DEFAULT_GRID
        sources, measured = profile_live(
            endpoint, endpoint_model, local, grid, traces, progress, log
        )
        format, options["method"] = "stairwise", "profiling"
        options["chars_per_token"] = options.get("chars_per_token") or measured
    if local:
        given = {key: value for key, value in options.items() if value is not None}
        options = local_facts() | given
    if local or on_this_machine(endpoint):  # the profile then measured this machine's speed
        options.setdefault("machine", this_machine())
    profiling = options.get("method") == "profiling"
    name = options.pop("name", None) or (output.stem if output else "calibrated")
    method = "replay" if profiling else options.get("method", "auto")  # how profiling is fitted
    settings = _calibration_options({"name": name, **options, "method": method})
    tables = [] if profiling else read_tables([Path(s) for s in sources], format, select or {})
    if metrics:
        totals = run_totals([Path(m) for m in metrics])
        for table in tables:
            table.server_totals = {**totals, **table.server_totals}
    paths = [Path(s) for s in sources]
    profile = (
        fit_profiling_run(paths, settings, progress)
        if profiling
        else fit(tables, settings, progress)
    )
    if local:
        profile = with_local_speed_spread(profile)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        save_profile(profile, output)
    return profile


def _calibration_options(values: dict[str, Any]) -> CalibrationOptions:
    from calibration import CalibrationOptions
    from sim.profile import VllmProfile, load_profile

    initial = values.get("initial")
    if isinstance(initial, str):
        values["initial"] = load_profile(initial)
        if not isinstance(values["initial"], VllmProfile):
            kind = values["initial"].kind
            raise ConfigError(f"--initial {initial}: a {kind} profile cannot start a vllm fit")
    sibling = values.pop("floors_from", None)
    if sibling is not None:  # a sibling profile's measured coefficients; floors= override
        from calibration.calibrate import step_floors

        bound = load_profile(sibling)
        if not isinstance(bound, VllmProfile):
            raise ConfigError(f"--floors-from {sibling}: an api profile has no step costs")
        values["floors"] = {**step_floors(bound), **(values.get("floors") or {})}
    return _checked(CalibrationOptions, values)


def _checked(model: type[ModelT], values: dict[str, Any]) -> ModelT:
    """Options checked by their pydantic model; a bad one is named by its CLI option."""
    from pydantic import ValidationError

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][-1])
        option = OPTION_NAMES.get(name, name.replace("_", "-"))
        message = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--{option}: {message}") from None


def replay(
    trace: str | Path,
    profile: str,
    format: str = "auto",
    select: dict[str, str] | None = None,
    **engine: Any,
) -> dict[str, Any]:
    """A request-level trace's requests replayed on ``profile``: ``{"predicted", "observed",
    "error_pct"}`` (``replay --json``). ``engine``: the replayed server's ``max_num_seqs``,
    ``max_num_batched_tokens``, ``kv_capacity_tokens``, ``server`` (of a multi-server trace)."""
    from calibration import read_tables
    from calibration.replay import EngineSettings, compare
    from sim.profile import load_profile

    (table,) = read_tables([Path(trace)], format, select or {})
    if not table.requests:
        raise ConfigError(f"{trace}: has step measurements only; replay needs requests")
    settings = _checked(EngineSettings, engine)
    return compare(table, load_profile(profile), settings)


class SpeedSpread(NamedTuple):
    profile: VllmProfile  # with the spread (written to ``output`` if one was given)
    runs: list[RunSpeed]  # the probed runs it was taken from, oldest first


def speed_spread(
    profile: str,
    sources: Sequence[str | Path],
    output: str | Path | None = None,
    speed_log: str | Path | None = None,
) -> SpeedSpread:
    """How much the engine's speed moves from run to run against ``profile`` (a vLLM
    profile's name or path): the probes of the kept live traces under ``sources`` (files or
    folders) that read it, as the profile's ``speed_rel_sd``, from which interval runs draw
    each run's speed. ``output``: write the profile with it; ``speed_log``: the runs used,
    one JSON line each."""
    from calibration.speed import speed_spread as spread_of
    from calibration.speed import write_speed_log
    from sim.profile import VllmProfile, load_profile, save_profile
    from stairwise.orchestrate.probe import run_speeds

    if output is not None:
        output = writable_file(output, "--output")
    if speed_log is not None:
        speed_log = writable_file(speed_log, "--log")
    base = load_profile(profile)
    if not isinstance(base, VllmProfile) or base.operator_tables is not None:
        raise ConfigError(f"{profile}: a speed spread scales a vLLM profile's step formula")
    runs = run_speeds([Path(s) for s in sources], base.name)
    spread = spread_of(runs)
    note = f"speed_rel_sd from the engine probes of {len(runs)} live runs"
    provenance = base.provenance.model_copy(
        update={"notes": f"{base.provenance.notes}; {note}".lstrip("; ")}
    )
    result = base.model_copy(update={"speed_rel_sd": spread, "provenance": provenance})
    if output is not None:
        save_profile(result, output)
    if speed_log is not None:
        write_speed_log(runs, speed_log)
    return SpeedSpread(result, runs)


class WrittenReport(NamedTuple):
    path: Path
    size_bytes: int
    runs: int
    reference: str  # the label of the run the others are compared with


def report(
    traces: Sequence[str | Path],
    output: str | Path,
    reference: int | None = None,
    timeline_requests: int = 10,
    title: str | None = None,
) -> WrittenReport:
    """One self-contained HTML file of simulated and live traces: staircase timeline, CDFs,
    errors against the ``reference`` trace (1-based; default the first live one), engine
    metrics, provenance."""
    from reports.html import render_report, write_report
    from reports.runs import load_runs, pick_reference

    runs = load_runs([Path(t) for t in traces])
    index = pick_reference(runs, reference)
    html_text = render_report(runs, index, title, timeline_requests)
    path = Path(output)
    write_report(path, html_text)
    return WrittenReport(path, path.stat().st_size, len(runs), runs[index].label)


def compare(base: str | Path, other: str | Path) -> dict[str, Any]:
    """How similar ``other``'s answers are to ``base``'s, paired by prompt: ROUGE-L F1 of
    whole answers and of their first 64 words and the words shared from the start, each with
    its distribution, and the latency deltas of the same requests (``stairwise compare``).
    Both traces must keep their text (:func:`run` with ``keep_text``)."""
    from reports.answers import compare_answers
    from sim.trace import read_trace

    return compare_answers(read_trace(base), read_trace(other), str(base), str(other))


def plan(
    scenario: Scenario | str | Path,
    slos: Sequence[str] | dict[str, float | str],
    settings: PlanSettings | None = None,
    overrides: list[str] | None = None,
    live: bool = False,
    local: bool = True,
    threads: int | None = None,
    isolate: bool | None = None,
    live_budget_s: float = 900.0,
    live_out: str | Path = "out/plan-live",
    probe: bool = True,
    progress: Callable[[str], None] | None = None,
    log: Callable[[str], None] = print,
    **backend: Any,
) -> CapacityPlan:
    """Capacity under SLOs (:func:`sim.capacity.plan`); ``live`` also searches the real
    maximum sustainable rate on the scenario's servers (``local``: the embedded vLLM) with the
    same search and rule, starting from the simulated one, within ``live_budget_s`` seconds;
    each live level's trace goes to ``live_out``; ``probe``: probe the engine before and after
    the live search and search the simulated maximum again at its probed speed. ``backend``:
    ``backend``, ``workers``, ``address`` of the simulated searches."""
    from sim.capacity import plan as simulated_plan

    if live_budget_s <= 0:
        raise ConfigError("--live-budget must be positive")
    result = simulated_plan(
        scenario, slos, settings, overrides=overrides, progress=progress, **backend
    )
    if not live:
        return result
    from live.endpoints import on_local_server
    from stairwise.orchestrate.capacity import live_capacity, probe_scaled_capacity

    loaded, profile_dir = resolve_scenario(scenario, overrides)
    if local:
        loaded = on_local_server(loaded, threads, log=log, isolate=isolate)
    if progress is not None:
        progress("maximum sustainable rate, live")
    start = result.capacity.max_rate or result.capacity.first_failing
    measured = live_capacity(
        loaded,
        result.slos,  # relative bounds resolved against the simulated standard mode
        result.settings,
        start,
        live_budget_s,
        Path(live_out),
        profile_dir,
        log,
        probe,
    )
    result.live_capacity = measured.search
    result.live_search = {
        "levels": measured.levels,
        "elapsed_s": measured.elapsed_s,
        "complete": measured.complete,
        "traces": str(live_out),
    }
    if measured.probes:
        if progress is not None:
            progress("maximum sustainable rate, simulated at the probed engine speed")
        result.live_probe = measured.probe_record()
        result.capacity_probe_scaled = probe_scaled_capacity(
            loaded, result.slos, result.settings, measured.probes, profile_dir
        )
    return result
