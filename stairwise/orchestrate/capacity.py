"""The maximum sustainable rate measured for real, to hold the simulated one against.

The capacity planner's own rate search (:class:`sim.capacity.Planner`) with each load level
run live on the scenario's servers instead of simulated: the same arrivals (same seed), the
same sustainability rule (every request succeeds, every SLO holds, the system keeps up), the
same bracketing. It starts at the simulated maximum, so a good prediction is confirmed in a
few levels, and it stops when its time budget is spent, with the bracket found so far. Every
level's trace is kept.

The search is bracketed by engine probes (:mod:`stairwise.orchestrate.probe`): the local CPU
engine's speed drifts by tens of percent within an hour, so a capacity error mixes the model's
error with the machine's speed that hour. :func:`probe_scaled_capacity` searches the simulated
maximum again on the profiles rescaled to the probed speed — the model's own error.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.capacity import LoadMeasure, LoadTask, Planner, PlanSettings, RateSearch, Slo, load_measure
from sim.scenario import Scenario
from sim.sweep.backends import LocalBackend
from stairwise.orchestrate.probe import Readings, probe_record, probe_servers, rescaled_profiles

LIVE_RATE_TOLERANCE = 0.05  # a live level costs a minute; 5 % resolves a 10 % error


@dataclass(frozen=True)
class LiveCapacity:
    search: RateSearch
    levels: int  # load levels run live
    elapsed_s: float
    complete: bool  # False: the time budget ended the search before its tolerance was met
    probes: list[Readings] = field(default_factory=list)  # before the search, and after it

    def probe_record(self) -> dict[str, Any]:
        """Per server: the probes before and after the search and the drift between them."""
        if not self.probes:
            return {}
        return probe_record(self.probes[0], self.probes[1] if len(self.probes) > 1 else None)


def live_capacity(
    scenario: Scenario,
    slos: list[Slo],
    settings: PlanSettings,
    start_rate: float | None,
    budget_s: float,
    trace_dir: Path,
    profile_dir: Path | None = None,
    log: Callable[[str], None] = print,
    probe: bool = True,
) -> LiveCapacity:
    """Search the real maximum sustainable rate (``scenario``'s servers must be reachable)
    within ``budget_s``; ``probe``: probe every vLLM server right before and right after the
    search (outside the budget: 5-40 s each on the local engine)."""
    from live.endpoints import with_cold_cache
    from stairwise.orchestrate.live import run_live

    trace_dir.mkdir(parents=True, exist_ok=True)
    probes = [probe_servers(scenario, profile_dir, "before the search", log)] if probe else []
    started = time.monotonic()
    levels = 0

    def measure(task: LoadTask) -> LoadMeasure:
        nonlocal levels
        levels += 1
        level = with_cold_cache(Scenario.model_validate(task.scenario))
        rate = getattr(level.workload.arrival, "rate_per_s", None)
        log(f"live load level {levels}: {rate:.4g} requests/s, {level.workload.requests} requests")
        trace = trace_dir / f"{scenario.name}.rate-{rate:.4g}.jsonl"
        result = run_live(level, trace)
        if result.interrupted:
            raise KeyboardInterrupt
        return load_measure(result.records, result.summary, task.slo_paths)

    live_settings = PlanSettings(
        **{
            **settings.__dict__,
            "rate_tolerance": max(settings.rate_tolerance, LIVE_RATE_TOLERANCE),
            "replications": 1,
        }
    )
    budget_spent = False

    def out_of_time() -> bool:
        nonlocal budget_spent
        budget_spent = time.monotonic() - started > budget_s
        return budget_spent

    with LocalBackend(1) as serial:
        planner = Planner(scenario, slos, live_settings, serial, profile_dir, measure=measure)
        search = planner.max_rate(start=start_rate, stop=out_of_time)
    elapsed_s = time.monotonic() - started
    if probe:
        probes.append(probe_servers(scenario, profile_dir, "after the search", log))
    return LiveCapacity(search, levels, elapsed_s, not budget_spent, probes)


def probe_scaled_capacity(
    scenario: Scenario,
    slos: list[Slo],
    settings: PlanSettings,
    probes: list[Readings],
    profile_dir: Path | None = None,
) -> RateSearch | None:
    """The simulated maximum rate on the scenario's profiles rescaled to the engine's speed
    during the live search (the mean of the probes around it); None without probes."""
    scaled = rescaled_profiles(scenario, [r for r in probes if r], profile_dir)
    if not scaled:
        return None
    with tempfile.TemporaryDirectory(prefix="stairwise-probed-") as folder:
        servers = {}
        for name, server in scenario.servers.items():
            if name in scaled:
                path = Path(folder) / f"{name}.json"
                path.write_text(scaled[name].model_dump_json())
                server = server.model_copy(update={"profile": str(path)})
            servers[name] = server
        probed = scenario.model_copy(update={"servers": servers})
        with LocalBackend(1) as serial:
            return Planner(probed, slos, settings, serial, profile_dir).max_rate()
