"""stairwise's model and shared vocabulary: scenarios, agent DAGs, the protocol, traces, metrics.

``sim`` imports nothing from ``live``, ``calibration`` or ``reports``.
"""

from __future__ import annotations

from pathlib import Path

from sim.errors import ConfigError
from sim.metrics import summarize
from sim.scenario import Scenario, load_scenario, scenario_from_dict
from sim.simulator import SimResult, Simulator


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
) -> SimResult:
    """Simulate a scenario (an object or a YAML path, with ``--set``-style overrides)."""
    scenario, profile_dir = resolve_scenario(scenario, overrides)
    if seed is not None:
        scenario = scenario.model_copy(update={"seed": seed})
    return Simulator(scenario, trace_path=trace, profile_dir=profile_dir).run()


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
