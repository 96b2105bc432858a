"""One replication of one point — the unit of work every backend runs — and their statistics.

Replication ``r`` of a point runs with a seed derived from (the point's seed, ``r``) and
nothing else, so any backend, worker count or completion order gives the same numbers, and
points share their random streams (common random numbers: differences between points come
from the axes, not from luck).

Replication 0 is the prediction itself: the scenario's seed, the profiles' fitted
parameters. Every other replication also draws the step-cost parameters from the
uncertainty their profile states (``step_rel_sd``) and the engine's speed that run from the
spread its profile states (``speed_rel_sd``), so the spread of the replications is the spread
of one run given what the workload draws, what the fit could not pin down and how the
machine's speed moves between runs. A profile without either is used as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import ConfigError
from sim.profile import SPEED_PHASES, ApiProfile, StepCost, VllmProfile, load_profile
from sim.scenario import Scenario, scenario_from_dict
from sim.simulator import Simulator

MetricValues = dict[str, float | None]
DEFAULT_LEVEL = 0.9  # of every interval stairwise reports
PARAMETER_STREAM = 1  # keeps the parameter draws apart from the simulator's random streams


@dataclass(frozen=True)
class Replication:
    point: int
    replication: int
    scenario: dict[str, Any]  # the point's scenario with the replication's seed
    profile_dir: str | None
    metrics: tuple[str, ...]


def replication_seed(base_seed: int, replication: int) -> int:
    """Replication 0 keeps the scenario's own seed (it equals ``simulate``); the rest derive."""
    if replication == 0:
        return base_seed
    state = np.random.SeedSequence([base_seed % 2**63, replication]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def replications(
    point: int, scenario: dict[str, Any], count: int, profile_dir: Path | None, metrics: list[str]
) -> list[Replication]:
    directory = str(profile_dir) if profile_dir is not None else None
    return [
        Replication(
            point,
            r,
            {**scenario, "seed": replication_seed(scenario["seed"], r)},
            directory,
            tuple(metrics),
        )
        for r in range(count)
    ]


def run_replication(task: Replication) -> MetricValues:
    scenario = scenario_from_dict(task.scenario)
    profile_dir = Path(task.profile_dir) if task.profile_dir is not None else None
    profiles = replication_profiles(scenario, profile_dir, task.replication)
    summary = Simulator(scenario, profile_dir=profile_dir, profiles=profiles).run().summary
    return {metric: metric_value(summary, metric) for metric in task.metrics}


def replication_profiles(
    scenario: Scenario, profile_dir: Path | None, replication: int
) -> dict[str, VllmProfile | ApiProfile] | None:
    """The servers' profiles a replication runs on: ``None`` (the fitted ones) for
    replication 0, parameters drawn from (the replication's seed, its number) for the others.

    Servers naming the same profile share one draw: one machine has one true cost.
    """
    if replication == 0:
        return None
    rng = np.random.default_rng([scenario.seed, PARAMETER_STREAM, replication])
    drawn: dict[str, VllmProfile | ApiProfile] = {}
    for server in scenario.servers.values():
        if server.profile not in drawn:
            drawn[server.profile] = draw_profile(load_profile(server.profile, profile_dir), rng)
    return {name: drawn[server.profile] for name, server in scenario.servers.items()}


def draw_profile(
    profile: VllmProfile | ApiProfile, rng: np.random.Generator
) -> VllmProfile | ApiProfile:
    """The profile with each uncertain step-cost parameter drawn from a lognormal: median the
    fitted value, relative sd the profile's ``step_rel_sd``. Parameters are drawn
    independently (a fit's correlations are not kept); an integer parameter is rounded and the
    batch exponent kept at most 1, as the step cost requires. Then the run's speed: a factor
    per phase, lognormal with relative sd ``speed_rel_sd``, scales that phase's parameters
    together (the machine runs slower or faster as a whole, not one coefficient)."""
    if not isinstance(profile, VllmProfile) or not (profile.step_rel_sd or profile.speed_rel_sd):
        return profile
    values = profile.step.model_dump()
    for name, rel_sd in sorted(profile.step_rel_sd.items()):
        if name not in values:
            raise ConfigError(
                f"profile {profile.name}: step_rel_sd names {name!r}, not a step-cost parameter "
                f"(one of: {', '.join(values)})"
            )
        if not rel_sd >= 0:
            raise ConfigError(f"profile {profile.name}: step_rel_sd.{name} must be >= 0")
        values[name] *= _lognormal_factor(rel_sd, rng)
    values["decode_seqs_free"] = round(values["decode_seqs_free"])
    values["decode_seq_exponent"] = min(1.0, values["decode_seq_exponent"])
    step = StepCost(**values)
    if profile.speed_rel_sd:
        prefill, decode = (
            _lognormal_factor(profile.speed_rel_sd.get(phase, 0.0), rng) for phase in SPEED_PHASES
        )
        step = step.rescaled(prefill, decode)
    return profile.model_copy(update={"step": step})


def _lognormal_factor(rel_sd: float, rng: np.random.Generator) -> float:
    """A factor of median 1 and relative sd ``rel_sd``."""
    sigma = np.sqrt(np.log1p(rel_sd**2))  # a lognormal with this sigma has sd = rel_sd
    return float(np.exp(sigma * rng.standard_normal()))


def metric_value(summary: dict[str, Any], metric: str) -> float | None:
    node: Any = summary
    for part in metric.split("."):
        if node is None:  # a section the run has none of (e.g. coverage of a single agent)
            return None
        node = node[part]
    return None if node is None else float(node)


@dataclass(frozen=True)
class Estimate:
    mean: float | None
    ci_low: float | None
    ci_high: float | None


def estimate(values: list[float | None], level: float) -> Estimate:
    """Mean over replications and their prediction interval (none from one replication)."""
    present = [v for v in values if v is not None]
    if not present:
        return Estimate(None, None, None)
    interval = prediction_interval(present, level)
    low, high = interval if interval is not None else (None, None)
    return Estimate(float(np.mean(present)), low, high)


def prediction_interval(
    values: Sequence[float | None], level: float, point: float | None = None
) -> tuple[float, float] | None:
    """Where one more replication's value falls with probability ``level``.

    Student-t prediction interval ``m ± t((1+level)/2, R−1) · s · √(1 + 1/R)`` of the R
    replications, exact for normal values at any R. Latencies are positive and their
    uncertainty multiplicative (a lognormal parameter scales them), so positive values are
    taken in log scale (the interval is then asymmetric); a value ≤ 0 keeps the linear scale.
    ``point``, the reported prediction, is always inside (the interval widens if needed).
    """
    present = np.asarray([v for v in values if v is not None], dtype=float)
    if len(present) < 2:
        return None
    from scipy.special import stdtrit  # t quantiles; scipy.stats would add a second's import

    logarithmic = bool((present > 0).all())
    scaled = np.log(present) if logarithmic else present
    count = len(scaled)
    half = stdtrit(count - 1, (1 + level) / 2) * scaled.std(ddof=1) * np.sqrt(1 + 1 / count)
    low, high = scaled.mean() - half, scaled.mean() + half
    if logarithmic:
        low, high = np.exp(low), np.exp(high)
    if point is not None:
        low, high = min(low, point), max(high, point)
    return float(low), float(high)
