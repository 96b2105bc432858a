"""One replication of one point — the unit of work every backend runs — and their statistics.

Replication ``r`` of a point runs with a seed derived from (the point's seed, ``r``) and
nothing else, so any backend, worker count or completion order gives the same numbers, and
points share their random streams (common random numbers: differences between points come
from the axes, not from luck).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.scenario import scenario_from_dict
from sim.simulator import Simulator

MetricValues = dict[str, float | None]


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
    summary = Simulator(scenario, profile_dir=profile_dir).run().summary
    return {metric: metric_value(summary, metric) for metric in task.metrics}


def metric_value(summary: dict[str, Any], metric: str) -> float | None:
    node: Any = summary
    for part in metric.split("."):
        node = node[part]
    return None if node is None else float(node)


@dataclass(frozen=True)
class Estimate:
    mean: float | None
    ci_low: float | None
    ci_high: float | None


def estimate(values: list[float | None], confidence: float) -> Estimate:
    """Mean and Student-t confidence interval over replications (no interval from one)."""
    from scipy import stats  # a second to import: kept out of the CLI's and workers' start

    present = np.asarray([v for v in values if v is not None], dtype=float)
    if len(present) == 0:
        return Estimate(None, None, None)
    mean = float(present.mean())
    if len(present) < 2:
        return Estimate(mean, None, None)
    half = float(
        stats.t.ppf((1 + confidence) / 2, len(present) - 1)
        * present.std(ddof=1)
        / np.sqrt(len(present))
    )
    return Estimate(mean, mean - half, mean + half)
