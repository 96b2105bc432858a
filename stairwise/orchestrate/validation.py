"""The validation loop: one scenario run live, then simulated twice, then compared.

The second simulation is trace-driven — it replays the live run's own send times, prompt
lengths and answer lengths — so its error is the timing model's alone; the first shows what
a user gets from the scenario file before running anything.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibration.probe import drift_pct
from calibration.readers import read_tables
from calibration.replay import EngineSettings, plan, replay
from reports.compare import (
    HEADLINE_ERRORS,
    percentile_errors,
    prompt_accounting,
    run_stats,
    validation_summary,
)
from reports.html import validation_report
from sim.errors import ConfigError, writable_folder
from sim.intervals import IntervalSettings, inside, predict
from sim.profile import load_profile
from sim.scenario import Scenario, VllmServer, scenario_from_dict, workload_digests
from sim.simulator import Simulator
from sim.trace import Record, pool_runs, read_trace, scenario_hash
from stairwise.orchestrate.live import run_live
from stairwise.orchestrate.probe import mean_factors, readings_of, rescaled_profiles, unreliable

INTERVAL_REPLICATIONS = 10  # profile draws behind each predicted interval


@dataclass
class Validation:
    name: str
    summary: dict[str, Any]  # the validate --json object
    live: list[Record]
    sim: list[Record]
    sim_trace_driven: list[Record]
    report: Path | None

    def worst_error(self, keys: tuple[str, ...] = HEADLINE_ERRORS) -> float:
        """The largest headline error in %; infinite when a side completed no request
        (every live request failed is no pass, whatever ``--max-error`` says)."""
        if not self.summary["live"]["requests"] or not self.summary["sim"]["requests"]:
            return math.inf
        values = [abs(v) for k in keys if (v := self.summary["error_pct"].get(k)) is not None]
        return max(values, default=0.0)


def with_profile(scenario: Scenario, profile: str) -> Scenario:
    """Every vLLM server of the scenario simulated on ``profile``."""
    servers = {
        name: server.model_copy(update={"profile": profile})
        if isinstance(server, VllmServer)
        else server
        for name, server in scenario.servers.items()
    }
    return scenario.model_copy(update={"servers": servers})


def validate(
    scenario: Scenario,
    out_dir: Path,
    report: bool = True,
    progress: Callable[[str], None] | None = None,
    live_from: Sequence[Path] = (),
    repeat: int = 1,
    probe: bool = True,
) -> Validation:
    """Run ``scenario`` live ``repeat`` times (its servers must be reachable), simulate it
    from the file and trace-driven, compare — the live runs pooled.

    ``probe``: each live run is bracketed by engine probes; the scenario is then simulated a
    second time on its profiles rescaled to the probed speed (``error_pct_probe_scaled``:
    the model's error without the machine's drift), and runs whose probes disagree are
    flagged ``unreliable``.

    With ``live_from`` folders, the live runs an earlier validate kept there are read
    instead of run again (e.g. to re-validate after recalibrating a profile). Traces go to
    ``out_dir/<name>.live.jsonl`` (``.live-2.jsonl``, … for further runs) and
    ``<name>.sim.jsonl``; the HTML report (if asked) to ``out_dir/<name>.html``. Pooling
    repetitions matters on a shared machine, where one run of a few requests moves its TTFT
    p50 by 10–20 % from the next.
    """
    say = progress or (lambda message: None)
    writable_folder(out_dir, "--out")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / scenario.name.replace("/", "_")
    if live_from:
        live_traces = [t for folder in live_from for t in kept_live_traces(folder, scenario)]
        runs = [read_trace(path) for path in live_traces]
    else:
        live_traces = [live_trace_path(stem, run) for run in range(1, repeat + 1)]
        runs = []
        for run, path in enumerate(live_traces, 1):
            say(f"{scenario.name}: running live" + (f" ({run}/{repeat})" if repeat > 1 else ""))
            live = run_live(scenario, trace=path, probe=probe, log=say)
            if live.interrupted:
                raise KeyboardInterrupt
            runs.append(live.records)
    measured = pool_runs(runs)
    say(f"{scenario.name}: simulating")
    # the live runs share the scenario's seed: the interval varies the profile, not the draws
    settings = IntervalSettings(replications=INTERVAL_REPLICATIONS, vary_seeds=False)
    predicted = predict(scenario, settings=settings, trace=stem.with_suffix(".sim.jsonl"))
    simulated = predicted.records
    replayed = pool_runs([replay_live_trace(path, scenario) for path in live_traces])
    summary = validation_summary(measured, simulated, replayed)
    summary["sim"] = predicted.summary  # the same figures, with their intervals
    summary["inside_interval"] = inside(predicted.summary, summary["live"])
    summary |= live_noise(runs, measured, summary["error_pct"])
    summary["profiles"] = measured[0].get("profiles", {}) if measured else {}
    summary["prompts"] = prompt_accounting(simulated, runs)
    summary |= probe_comparison(scenario, runs, measured)
    html = stem.with_suffix(".html") if report else None
    if html is not None:
        validation_report(html, measured, simulated, replayed)
    return Validation(scenario.name, summary, measured, simulated, replayed, html)


def live_noise(
    runs: list[list[Record]], measured: list[Record], errors: dict[str, float | None]
) -> dict[str, Any]:
    """With two or more live runs: how far each quantile moved between them (the largest
    minus the smallest run's value, in % of the pooled one) and, per error, whether it is
    within that spread — an error smaller than the machine's own noise says nothing."""
    if len(runs) < 2:
        return {}
    pooled = run_stats(measured)
    per_run = [percentile_errors(run_stats(run), pooled) for run in runs]
    spread: dict[str, float | None] = {}
    for key in errors:
        values = [v for e in per_run if (v := e.get(key)) is not None]
        spread[key] = float(max(values) - min(values)) if len(values) == len(runs) else None
    within: dict[str, bool | None] = {}
    for key, error in errors.items():
        noise = spread[key]
        within[key] = None if error is None or noise is None else bool(abs(error) <= noise)
    return {"live_spread_pct": spread, "within_live_noise": within}


def probe_comparison(
    scenario: Scenario, runs: list[list[Record]], measured: list[Record]
) -> dict[str, Any]:
    """``probe`` (per server: the profile, every probe's reading, the drift during each run,
    whether any run is unreliable) and ``error_pct_probe_scaled`` — empty without probes."""
    readings = [readings_of(records) for records in runs]
    probed = [r for pair in readings for r in pair if r]
    if not probed:
        return {}
    scaled = rescaled_profiles(scenario, probed)
    if not scaled:
        return {}
    simulated = Simulator(scenario, profiles=dict(scaled)).run().records
    servers: dict[str, Any] = {}
    for name in scaled:
        pairs = [(b[name], a.get(name)) for b, a in readings if name in b]
        drifts = [drift_pct(b, a) for b, a in pairs if a is not None]
        servers[name] = {
            "profile": pairs[0][0].profile,
            "before": [b.to_dict() for b, _ in pairs],
            "after": [a.to_dict() for _, a in pairs if a is not None],
            "drift_pct": drifts,
            "unreliable": any(unreliable(b, a) for b, a in pairs if a is not None),
            "factors": dict(zip(("prefill", "decode"), mean_factors(probed, name), strict=True)),
        }
    return {
        "probe": servers,
        "unreliable": any(entry["unreliable"] for entry in servers.values()),
        "error_pct_probe_scaled": percentile_errors(run_stats(simulated), run_stats(measured)),
    }


def validate_suite(
    scenarios: Sequence[Scenario],
    out_dir: Path,
    report: Path | None = None,
    progress: Callable[[str], None] | None = None,
    live_from: Sequence[Path] = (),
    repeat: int = 1,
    probe: bool = True,
) -> list[Validation]:
    """Each scenario validated; ``report``: the one scenario's report, or for several the
    suite's summary page (linking theirs)."""
    from reports.suite import suite_report

    results = [
        validate(scenario, out_dir, True, progress, live_from, repeat, probe)
        for scenario in scenarios
    ]
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        if len(results) == 1 and results[0].report is not None:
            shutil.copyfile(results[0].report, report)
        else:
            suite_report(report, results)
    return results


def live_trace_path(stem: Path, run: int) -> Path:
    return stem.with_suffix(".live.jsonl" if run == 1 else f".live-{run}.jsonl")


def kept_live_traces(folder: Path, scenario: Scenario) -> list[Path]:
    """The live runs of ``scenario`` an earlier validate left in ``folder``, in order; each
    must have run this very scenario (its header's, resolved, hashes the same)."""
    stem = folder / scenario.name.replace("/", "_")
    first = live_trace_path(stem, 1)
    if not first.exists():
        raise ConfigError(
            f"--live-from: no {first} for scenario {scenario.name} (run validate without it first)"
        )
    traces = [first]
    while (following := live_trace_path(stem, len(traces) + 1)).exists():
        traces.append(following)
    expected = scenario_hash(scenario.model_dump(mode="json"), workload_digests(scenario.workload))
    for trace in traces:
        if _hash_of_run(trace) != expected:
            raise ConfigError(
                f"--live-from: {trace} ran another scenario than {scenario.name} as resolved "
                "now (its workload, topology or servers differ); run it live again"
            )
    return traces


def _hash_of_run(trace: Path) -> str | None:
    """The hash of the scenario a trace's header holds, resolved by today's schema (so new
    fields with defaults do not set old traces apart), its workload files by the digests it
    recorded — or, in a trace from before it recorded them, by the files as they are now."""
    header = read_trace(trace)[0]
    try:
        scenario = scenario_from_dict(header.get("scenario"), str(trace))
        files = header.get("workload_files") or workload_digests(scenario.workload)
    except ConfigError:
        return None
    return scenario_hash(scenario.model_dump(mode="json"), files)


def replay_live_trace(trace: Path, scenario: Scenario) -> list[Record]:
    """The live run's requests (send times, lengths) replayed in the simulator."""
    (table,) = read_tables([trace], "stairwise")
    server = next(iter(scenario.servers))
    engine = EngineSettings(server=server)
    profile = load_profile(scenario.servers[server].profile)
    return replay(plan(table, profile.kind, engine), profile)
