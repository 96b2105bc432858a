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
from sim.trace import Record, read_trace

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
    live_trace: Path | None = None,
) -> Validation:
    """Run ``scenario`` live (its servers must be reachable), simulate it twice, compare.

    With ``live_trace`` the live run is read from that trace instead of run again (e.g. to
    re-validate after recalibrating a profile). Traces go to
    ``out_dir/<name>.{live,sim}.jsonl``; the HTML report (if asked) to ``out_dir/<name>.html``.
    """
    say = progress or (lambda message: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / scenario.name.replace("/", "_")
    if live_trace is None:
        live_trace = stem.with_suffix(".live.jsonl")
        say(f"{scenario.name}: running live")
        live = asyncio.run(LiveRunner(scenario, trace_path=live_trace).run())
        if live.interrupted:
            raise KeyboardInterrupt
        measured = live.records
    else:
        measured = read_trace(live_trace)
    say(f"{scenario.name}: simulating")
    simulated = Simulator(scenario, trace_path=stem.with_suffix(".sim.jsonl")).run().records
    replayed = replay_live_trace(live_trace, scenario)
    summary = validation_summary(measured, simulated, replayed)
    html = stem.with_suffix(".html") if report else None
    if html is not None:
        validation_report(html, measured, simulated, replayed)
    return Validation(scenario.name, summary, measured, simulated, replayed, html)


def replay_live_trace(trace: Path, scenario: Scenario) -> list[Record]:
    """The live run's requests (send times, lengths) replayed in the simulator."""
    (table,) = read_tables([trace], "stairwise")
    server = next(iter(scenario.servers))
    engine = EngineSettings(server=server)
    profile = load_profile(scenario.servers[server].profile)
    return replay(plan(table, profile.kind, engine), profile)
