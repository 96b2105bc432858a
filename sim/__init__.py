"""stairwise's model and shared vocabulary: scenarios, agent DAGs, the protocol, traces, metrics.

``sim`` imports nothing from ``live``, ``calibration`` or ``reports``.
"""

from __future__ import annotations

from pathlib import Path

from sim.errors import ConfigError
from sim.intervals import DEFAULT_LEVEL, DEFAULT_REPLICATIONS, IntervalSettings, predict
from sim.metrics import DEFAULT_K, summarize
from sim.scenario import Scenario, load_scenario, scenario_from_dict
from sim.simulator import ProgressCallback, SimResult, Simulator


def resolve_scenario(
    scenario: Scenario | str | Path, overrides: list[str] | None = None
) -> tuple[Scenario, Path | None]:
    """A scenario object or YAML path, with ``--set``-style overrides, and the folder its
    relative profile paths are read from (the YAML file's)."""
    if not isinstance(scenario, Scenario):
        return load_scenario(scenario, overrides), Path(scenario).parent
    if overrides:
        from sim.scenario import apply_overrides

        data = apply_overrides(scenario.model_dump(mode="json"), overrides)
        return scenario_from_dict(data), None
    return scenario, None


def simulate(
    scenario: Scenario | str | Path,
    overrides: list[str] | None = None,
    seed: int | None = None,
    trace: str | Path | None = None,
    replications: int = DEFAULT_REPLICATIONS,
    level: float = DEFAULT_LEVEL,
    progress: ProgressCallback | None = None,
    k: int = DEFAULT_K,
    workers: int | None = 1,
) -> SimResult:
    """Simulate a scenario (an object or a YAML path, with ``--set``-style overrides).

    The summary's headline quantiles carry ``level`` prediction intervals from
    ``replications`` runs (seeds and profile parameter draws; 1: no intervals), see
    :mod:`sim.intervals`; the records and ``trace`` are the prediction's own run. ``k``: the
    summary's time to the k-th answer token. ``workers``: processes for the interval runs (1:
    this one; more: a process pool, so call it under ``if __name__ == "__main__":``; None:
    every core when the runs take long enough to pay for the pool) — the same numbers.
    """
    scenario, profile_dir = resolve_scenario(scenario, overrides)
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    settings = IntervalSettings(replications, level)
    return predict(scenario, profile_dir, settings, trace, progress, k, workers)


__all__ = [
    "ConfigError",
    "Scenario",
    "SimResult",
    "Simulator",
    "load_scenario",
    "resolve_scenario",
    "scenario_from_dict",
    "simulate",
    "summarize",
]
