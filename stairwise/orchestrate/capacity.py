"""The maximum sustainable rate measured for real, to hold the simulated one against.

The capacity planner's own rate search (:class:`sim.capacity.Planner`) with each load level
run live on the scenario's servers instead of simulated: the same arrivals (same seed), the
same sustainability rule (every request succeeds, every SLO holds, the system keeps up), the
same bracketing. It starts at the simulated maximum, so a good prediction is confirmed in a
few levels, and it stops when its time budget is spent, with the bracket found so far. Every
level's trace is kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sim.capacity import LoadMeasure, LoadTask, Planner, PlanSettings, RateSearch, Slo, load_measure
from sim.scenario import Scenario
from sim.sweep.backends import LocalBackend

LIVE_RATE_TOLERANCE = 0.05  # a live level costs a minute; 5 % resolves a 10 % error


@dataclass(frozen=True)
class LiveCapacity:
    search: RateSearch
    levels: int  # load levels run live
    elapsed_s: float
    complete: bool  # False: the time budget ended the search before its tolerance was met


def live_capacity(
    scenario: Scenario,
    slos: list[Slo],
    settings: PlanSettings,
    start_rate: float | None,
    budget_s: float,
    trace_dir: Path,
    profile_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> LiveCapacity:
    """Search the real maximum sustainable rate (``scenario``'s servers must be reachable)."""
    from live.endpoints import with_cold_cache
    from stairwise.orchestrate.live import run_live

    trace_dir.mkdir(parents=True, exist_ok=True)
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
    return LiveCapacity(search, levels, time.monotonic() - started, not budget_spent)
