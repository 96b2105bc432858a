"""The validation loop: one scenario run live, then simulated twice, then compared.

The second simulation is trace-driven — it replays the live run's own send times, prompt
lengths and answer lengths — so its error is the timing model's alone; the first shows what
a user gets from the scenario file before running anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibration.readers import read_tables
from calibration.replay import EngineSettings, plan, replay
from live.runner import LiveRunner
from reports.compare import validation_summary
from reports.html import validation_report
from sim.profile import load_profile
from sim.scenario import Scenario, VllmServer
from sim.simulator import Simulator
from sim.trace import Record, pool_runs, read_trace

# the errors --max-error judges, and the suite table shows
HEADLINE_ERRORS = ("ttft_p50", "ttft_p90", "tps_p50", "e2e_p50", "stall_p50")


@dataclass
class Validation:
    name: str
    summary: dict[str, Any]  # the validate --json object
    live: list[Record]
    sim: list[Record]
    sim_trace_driven: list[Record]
    report: Path | None

    def worst_error(self, keys: tuple[str, ...] = HEADLINE_ERRORS) -> float:
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
    live_traces: list[Path] | None = None,
    repeat: int = 1,
) -> Validation:
    """Run ``scenario`` live ``repeat`` times (its servers must be reachable), simulate it
    from the file and trace-driven, compare — the live runs pooled.

    With ``live_traces`` the live runs are read from those traces instead of run again (e.g.
    to re-validate after recalibrating a profile). Traces go to ``out_dir/<name>.live.jsonl``
    (``.live-2.jsonl``, … for further runs) and ``<name>.sim.jsonl``; the HTML report (if
    asked) to ``out_dir/<name>.html``. Pooling repetitions matters on a shared machine, where
    one run of a few requests moves its TTFT p50 by 10–20 % from the next.
    """
    say = progress or (lambda message: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / scenario.name.replace("/", "_")
    if live_traces is None:
        live_traces = [live_trace_path(stem, run) for run in range(1, repeat + 1)]
        runs = []
        for run, path in enumerate(live_traces, 1):
            say(f"{scenario.name}: running live" + (f" ({run}/{repeat})" if repeat > 1 else ""))
            live = asyncio.run(LiveRunner(scenario, trace_path=path).run())
            if live.interrupted:
                raise KeyboardInterrupt
            runs.append(live.records)
    else:
        runs = [read_trace(path) for path in live_traces]
    measured = pool_runs(runs)
    say(f"{scenario.name}: simulating")
    simulated = Simulator(scenario, trace_path=stem.with_suffix(".sim.jsonl")).run().records
    replayed = pool_runs([replay_live_trace(path, scenario) for path in live_traces])
    summary = validation_summary(measured, simulated, replayed)
    html = stem.with_suffix(".html") if report else None
    if html is not None:
        validation_report(html, measured, simulated, replayed)
    return Validation(scenario.name, summary, measured, simulated, replayed, html)


def live_trace_path(stem: Path, run: int) -> Path:
    return stem.with_suffix(".live.jsonl" if run == 1 else f".live-{run}.jsonl")


def kept_live_traces(folder: Path, name: str) -> list[Path]:
    """The live runs of scenario ``name`` an earlier validate left in ``folder``, in order."""
    stem = folder / name.replace("/", "_")
    first = live_trace_path(stem, 1)
    if not first.exists():
        return []
    traces = [first]
    while (following := live_trace_path(stem, len(traces) + 1)).exists():
        traces.append(following)
    return traces


def replay_live_trace(trace: Path, scenario: Scenario) -> list[Record]:
    """The live run's requests (send times, lengths) replayed in the simulator."""
    (table,) = read_tables([trace], "stairwise")
    server = next(iter(scenario.servers))
    engine = EngineSettings(server=server)
    profile = load_profile(scenario.servers[server].profile)
    return replay(plan(table, profile.kind, engine), profile)
