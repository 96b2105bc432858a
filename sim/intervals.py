"""Predictions with intervals: how far one run's quantiles may fall from the prediction.

``predict`` simulates a scenario once as it is (the prediction: its seed, the fitted
profiles) and ``replications − 1`` more times, each with its own seed (other arrivals,
lengths, jitter) and step-cost parameters drawn from their profile's uncertainty (see
:mod:`sim.sweep.replicate`, the one replication mechanism sweeps and plans use too). Each
headline quantile then gets a prediction interval over those runs: the range in which the
quantile of one run of this scenario — simulated, or live if the model and its parameter
uncertainty are right — falls with probability ``level``. With a profile that states no
uncertainty only the seeds count; with one replication there is no interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sim.errors import ConfigError
from sim.metrics import DEFAULT_K, summarize
from sim.profile import VllmProfile
from sim.scenario import Scenario
from sim.simulator import SimResult, Simulator
from sim.sweep.backends import check_workers, default_workers, make_backend
from sim.sweep.replicate import (
    DEFAULT_LEVEL,
    MetricValues,
    Replication,
    metric_value,
    prediction_interval,
    replications,
    run_replication,
)

# the summary's distributions that get intervals, and the quantiles that do
HEADLINE_METRICS = ("ttft_s", "itl_s", "tpot_s", "e2e_s", "tps", "stall_s")
INTERVAL_QUANTILES = ("p50", "p90")
# 10 runs of any example scenario take 0.5–1 s, less than the CLI's start
# (benchmarks/intervals.py); the t interval stays exact at few runs, only wider
DEFAULT_REPLICATIONS = 10
# a process pool's start (spawned workers importing stairwise) costs 1–2 s: ``workers=None``
# uses one only when the interval runs would take longer than this in one process
POOL_WORTH_S = 4.0

ProgressCallback = Callable[[int, int], None]  # (requests simulated, requests in all runs)


@dataclass(frozen=True)
class IntervalSettings:
    replications: int = DEFAULT_REPLICATIONS  # runs in all, the prediction's own among them
    level: float = DEFAULT_LEVEL
    # False: every run keeps the scenario's seed and only the parameters vary — the interval
    # for a live run of that seed, which draws the same arrivals and lengths as the prediction
    vary_seeds: bool = True

    def check(self, replications_option: str = "--replications") -> None:
        if self.replications < 1:
            raise ConfigError(
                f"{replications_option} must be at least 1 (1: no intervals), "
                f"got {self.replications}"
            )
        if not 0 < self.level < 1:
            raise ConfigError(f"--level must be between 0 and 1 (e.g. 0.9), got {self.level}")


def interval_paths() -> list[str]:
    """The summary paths of every quantile that gets an interval, e.g. ``ttft_s.p50``."""
    return [f"{metric}.{q}" for metric in HEADLINE_METRICS for q in INTERVAL_QUANTILES]


def predict(
    scenario: Scenario,
    profile_dir: Path | None = None,
    settings: IntervalSettings | None = None,
    trace: str | Path | None = None,
    progress: ProgressCallback | None = None,
    k: int = DEFAULT_K,
    workers: int | None = 1,
) -> SimResult:
    """Simulate ``scenario`` with intervals: the result is the prediction's own run (its
    records, the ``trace`` written), its summary with ``p50_ci`` and ``p90_ci`` (``[low,
    high]``, ``None`` without replications) beside ``p50`` and ``p90`` of each headline
    metric, and an ``intervals`` entry saying what they mean. ``k``: the summary's time to the
    k-th answer token. ``workers``: processes for the interval runs — 1 runs them here, more
    on a local process pool (a script must then call this under ``if __name__ ==
    "__main__":``), ``None`` every core when they would outlast the pool's start; the
    numbers are the same either way."""
    settings = settings or IntervalSettings()
    settings.check()
    check_workers(workers)  # before the prediction's run, not after it
    count = settings.replications
    report = progress or (lambda done, total: None)
    total = scenario.workload.requests * count
    simulator = Simulator(scenario, trace_path=trace, profile_dir=profile_dir)
    started = time.perf_counter()
    result = simulator.run(progress=lambda done, _: report(done, total))
    one_run_s = time.perf_counter() - started
    if k != DEFAULT_K:
        result.summary = summarize(result.records, k=k)
    paths = interval_paths()
    runs: list[MetricValues] = [{path: metric_value(result.summary, path) for path in paths}]
    data = scenario.model_dump(mode="json")
    tasks = replications(0, data, count, profile_dir, paths)[1:]
    if not settings.vary_seeds:
        tasks = [replace(task, scenario=data) for task in tasks]

    finished = 1

    def one_more() -> None:
        nonlocal finished
        finished += 1
        report(scenario.workload.requests * finished, total)

    runs += _run_replications(tasks, pool_size(workers, one_run_s * len(tasks)), one_more)
    vllm = {n: p for n, p in simulator.profiles.items() if isinstance(p, VllmProfile)}
    uncertain = [name for name, profile in vllm.items() if profile.step_rel_sd]
    drifting = [name for name, profile in vllm.items() if profile.speed_rel_sd]
    result.summary = with_intervals(result.summary, runs, settings, uncertain, drifting)
    return result


def pool_size(workers: int | None, serial_s: float) -> int:
    """``workers`` as asked; ``None``: every core when runs that would take ``serial_s`` in
    one process outlast a pool's start, else 1."""
    if workers is not None:
        return workers
    return default_workers() if serial_s > POOL_WORTH_S else 1


def _run_replications(
    tasks: list[Replication], workers: int, on_each: Callable[[], None]
) -> list[MetricValues]:
    """Each task's values, in task order whichever finishes first: the intervals' floats
    (a mean, a standard deviation) must not depend on it."""
    done: dict[int, MetricValues] = {}
    with make_backend("local", max(1, min(workers, len(tasks)))) as backend:
        for index, values in backend.imap_unordered(run_replication, tasks):
            done[index] = values
            on_each()
    return [done[index] for index in range(len(tasks))]


def with_intervals(
    summary: dict[str, Any],
    runs: list[MetricValues],
    settings: IntervalSettings,
    uncertain_servers: list[str],
    drifting_servers: list[str],
) -> dict[str, Any]:
    """The summary with each headline quantile's interval beside it (``p50`` → ``p50_ci``)."""
    decorated = dict(summary)
    for metric in HEADLINE_METRICS:
        stats: dict[str, Any] = {}
        for key, value in summary[metric].items():
            stats[key] = value
            if key in INTERVAL_QUANTILES:
                path = f"{metric}.{key}"
                interval = prediction_interval([run[path] for run in runs], settings.level, value)
                stats[f"{key}_ci"] = list(interval) if interval is not None else None
        decorated[metric] = stats
    decorated["intervals"] = {
        "level": settings.level,
        "replications": len(runs),
        "seeds_vary": settings.vary_seeds,
        "parameter_uncertainty": uncertain_servers,
        "speed_spread": drifting_servers,
        "meaning": "where a quantile of one run of this scenario falls with probability level, "
        + (
            "given the workload's random draws, "
            if settings.vary_seeds
            else "run with this seed (these arrivals and lengths), given "
        )
        + "the profiles' parameter uncertainty and their engines' speed from run to run",
    }
    return decorated


def inside(predicted: dict[str, Any], observed: dict[str, Any]) -> dict[str, bool | None]:
    """For each headline quantile (``ttft_s.p50``, …): does the observed run's value — a live
    run's summary, say — lie in the predicted interval? ``None`` where either side has no
    value or the prediction no interval."""
    verdicts: dict[str, bool | None] = {}
    for path in interval_paths():
        metric, quantile = path.split(".")
        interval = predicted[metric].get(f"{quantile}_ci")
        value = observed[metric][quantile]
        verdicts[path] = (
            None if interval is None or value is None else interval[0] <= value <= interval[1]
        )
    return verdicts
