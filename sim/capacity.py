"""Capacity planning with the simulator in the loop: rates, replicas and chunk schedules.

Answers a planner's questions about one scenario under latency SLOs:

* the maximum sustainable request rate (a search over the arrival rate);
* how many replicas of each server a target rate needs (the bottleneck is scaled: the
  server whose doubling brings the load closest to sustainable, until it is, then each
  count is cut back to the fewest that still sustain it);
* the cost per request at those loads, per token and per GPU-hour;
* the levers that best meet the SLOs — a search over geometric chunk schedules (first chunk
  f, growth g: f, f·g, f·g², …) and fixed lists for the proposers, the aggregator's schedule
  (the proposers' shifted by an offset, or any of the family), redundancy, the aggregator's
  scheduler priority, and the standard mode.

A load is **sustainable** when every request succeeds, every SLO holds, and the system
keeps up: the last request finishes no later than ``(1 + keep_up_slack) × arrival span +
the first request's E2E`` after the first arrival. A system that keeps up finishes one
request's latency after the last arrival; an overloaded one falls behind by a time that
grows with the number of requests. The slack absorbs the backlog that random (Poisson)
arrivals leave at the end of a run of a stable system.

SLOs are bounds on percentiles of TTFT, TPOT, stall (the longest pause of an answer), E2E
or ITL, in seconds or relative to the stream: ``stall_p90=2xitl`` is twice the standard
mode's ITL p90 on the same servers (simulated once as the reference). Candidates are ranked
by their ratios to their targets, worst first: each SLO's value / bound (≤ 1: met) and the
standard mode's answer TPS / the candidate's (≤ 1: the stream is as fast as standard's), so
TTFT, stall and answer speed are traded against each other on one scale: a schedule that
shows 8 tokens at once and then pauses for 4 s loses to one that starts a little later and
never stalls.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sim import resolve_scenario
from sim.dag import build_dag, unit_boundaries
from sim.errors import ConfigError
from sim.intervals import DEFAULT_LEVEL, DEFAULT_REPLICATIONS, IntervalSettings
from sim.metrics import request_metrics
from sim.scenario import ClosedArrival, DebateTopology, GraphTopology, MoaTopology, Scenario
from sim.simulator import Simulator
from sim.sweep.backends import Backend, BackendName, make_backend
from sim.sweep.points import scenario_at
from sim.sweep.replicate import (
    metric_value,
    prediction_interval,
    replication_profiles,
    replication_seed,
)
from sim.trace import Record

SLO_METRICS = {
    "ttft": "ttft_s",
    "tpot": "tpot_s",
    "stall": "stall_s",
    "e2e": "e2e_s",
    "itl": "itl_s",
}
SLO_STATS = ("p50", "p90", "p99", "mean")
HIGHEST_RATE = 1e6  # requests/s; sustaining this means nothing in the scenario saturates
LOWEST_RATE = 1e-6
SLO_PATTERN = re.compile(
    r"(?P<metric>[a-z0-9]+)_(?P<stat>p\d+|mean)=(?P<value>[0-9.eE+-]+)(?P<unit>ms|s|x[a-z]+)?"
)
RELATIVE_METRICS = ("stall", "itl")  # bounds that may be multiples of the standard mode's ITL
ANSWER_TPS_PATH = "tps.p50"  # what the ranking compares with the standard mode's
# what --min-coverage bounds: the share of the inputs' answers read behind the first token
COVERAGE_PATH = "coverage.first_token.p50"
LEVERS = ("schedule", "offset", "aggregator", "redundancy", "priority", "pace")
AGGREGATOR_OFFSETS = (1,)  # aggregator chunk j = proposer chunk j + offset (0: the same)
# an aggregator writing its whole answer in one round from the proposers' first chunk is a
# staircase in name only: the search keeps it out
MIN_AGGREGATOR_ROUNDS = 2
STAGE_TWO_FINALISTS = 3  # best schedules that redundancy and priority are tried on


# --- SLOs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slo:
    metric: str  # ttft | tpot | stall | e2e | itl
    stat: str  # p50 | p90 | p99 | mean
    bound_s: float  # nan until a relative bound is resolved against the reference
    itl_factor: float | None = None  # the bound is this × the standard mode's ITL (same stat)

    def resolved(self, reference: Reference) -> Slo:
        """The bound in seconds: a relative one from the standard mode's ITL."""
        if self.itl_factor is None:
            return self
        itl = reference.itl_s.get(self.stat)
        if itl is None or not itl > 0:
            raise ConfigError(
                f"--slo {self.name}={self.itl_factor:g}xitl: the standard mode's answer has no "
                "inter-token gaps to be relative to"
            )
        return Slo(self.metric, self.stat, self.itl_factor * itl, self.itl_factor)

    @property
    def name(self) -> str:
        return f"{self.metric}_{self.stat}"

    @property
    def summary_path(self) -> str:
        return f"{SLO_METRICS[self.metric]}.{self.stat}"


def parse_slo(text: str) -> Slo:
    """``ttft_p90=2s``, ``stall_p99=1500ms``, ``tpot_p50=0.05`` (seconds) or ``stall_p90=2xitl``
    (twice the standard mode's ITL p90)."""
    match = SLO_PATTERN.fullmatch(text.strip().replace(" ", ""))
    if match is None:
        raise ConfigError(f"--slo {text!r}: expected METRIC_STAT=VALUE, e.g. ttft_p90=2s")
    metric, stat = match["metric"], match["stat"]
    if metric not in SLO_METRICS:
        raise ConfigError(f"--slo {text!r}: metric must be one of {', '.join(SLO_METRICS)}")
    if stat not in SLO_STATS:
        raise ConfigError(f"--slo {text!r}: statistic must be one of {', '.join(SLO_STATS)}")
    try:
        value = float(match["value"])
    except ValueError:
        raise ConfigError(f"--slo {text!r}: {match['value']!r} is not a number") from None
    unit = match["unit"] or "s"
    if not value > 0:
        raise ConfigError(f"--slo {text!r}: the bound must be positive")
    if unit.startswith("x"):
        if unit != "xitl":
            raise ConfigError(
                f"--slo {text!r}: a relative bound is a multiple of the standard mode's ITL, "
                f"e.g. {metric}_{stat}=2xitl"
            )
        if metric not in RELATIVE_METRICS:
            raise ConfigError(
                f"--slo {text!r}: only {' and '.join(RELATIVE_METRICS)} bounds can be relative "
                "to the ITL"
            )
        return Slo(metric, stat, math.nan, value)
    return Slo(metric, stat, value / 1e3 if unit == "ms" else value)


def parse_slos(slos: Iterable[str] | Mapping[str, float | str]) -> list[Slo]:
    texts = (
        [f"{name}={value}" for name, value in slos.items()]
        if isinstance(slos, Mapping)
        else list(slos)
    )
    parsed = [parse_slo(text) for text in texts]
    if not parsed:
        raise ConfigError("plan needs at least one --slo, e.g. --slo ttft_p90=2s")
    names = [slo.name for slo in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(f"--slo: {', '.join(names)} names one SLO twice")
    return parsed


# --- settings and results -----------------------------------------------------------------------


@dataclass(frozen=True)
class PlanSettings:
    requests: int = 100  # per simulated load: enough for a queue to show
    replications: int = 1  # a load passes only if every replication does
    keep_up_slack: float = 0.05  # fraction of the arrival span the system may fall behind
    rate_tolerance: float = 0.01  # stop when the highest passing / lowest failing rate > 1/(1+t)
    target_rate: float | None = None  # find the replicas this rate needs
    search_schedules: bool = True
    first_chunks: tuple[int, ...] = (4, 8, 16, 32, 64)
    # growth 1 (fixed chunks) is left out by default: its rounds, and so its cost in calls
    # and re-prefill, grow with the answer length; geometric growth keeps them logarithmic
    growths: tuple[float, ...] = (1.5, 2.0, 4.0)
    schedules: tuple[tuple[int, ...], ...] = ()  # fixed schedules to try as well
    levers: tuple[str, ...] = LEVERS  # what the schedule search may change
    max_replicas: int = 256
    # the intervals of the SLO metrics at the maximum rate (sim/intervals.py)
    interval_replications: int = DEFAULT_REPLICATIONS
    level: float = DEFAULT_LEVEL
    # quality floors the schedule search keeps (the simulator cannot score answers; these
    # bound what staircase streaming is known to risk): the proposers' first chunk, the
    # inputs a round may skip, and the share of the inputs' answers read behind token 1
    min_first_chunk: int | None = None
    max_redundancy: int | None = None
    min_coverage: float | None = None

    def check(self) -> None:
        IntervalSettings(self.interval_replications, self.level).check("--interval-replications")
        if self.requests < 2:
            raise ConfigError("--requests must be at least 2 (a rate needs two arrivals)")
        if self.replications < 1:
            raise ConfigError("--replications must be at least 1")
        if self.keep_up_slack < 0:
            raise ConfigError("--keep-up-slack must be >= 0")
        if not 0 < self.rate_tolerance < 1:
            raise ConfigError("--rate-tolerance must be between 0 and 1")
        if self.target_rate is not None and self.target_rate <= 0:
            raise ConfigError("--target-rate must be positive")
        if any(size < 1 for size in self.first_chunks) or any(g < 1 for g in self.growths):
            raise ConfigError("first chunks must be >= 1 token and growths >= 1")
        if any(not s or min(s) < 1 for s in self.schedules):
            raise ConfigError("a --schedule must list chunk sizes >= 1, e.g. 8,128,256")
        if self.min_first_chunk is not None and self.min_first_chunk < 1:
            raise ConfigError("--min-first-chunk must be at least 1 token")
        if self.max_redundancy is not None and self.max_redundancy < 0:
            raise ConfigError("--max-redundancy must be >= 0")
        if self.min_coverage is not None and not 0 <= self.min_coverage <= 1:
            raise ConfigError("--min-coverage is a share of the inputs' answers, 0 to 1")
        unknown = [lever for lever in self.levers if lever not in LEVERS]
        if unknown:
            raise ConfigError(f"--lever {unknown[0]!r}: unknown lever (known: {', '.join(LEVERS)})")


@dataclass(frozen=True)
class Reference:
    """The standard mode on the same servers and load, simulated once: what relative SLOs and
    the ranking's answer-speed ratio are measured against."""

    itl_s: dict[str, float | None]  # statistic -> the answer's inter-token latency
    answer_tps: float | None  # p50 of tokens / (E2E − TTFT)


@dataclass(frozen=True)
class Assessment:
    """One load level, simulated: the SLO metrics and whether it is sustainable."""

    rate: float | None  # None: the scenario's own arrivals
    replicas: dict[str, int]  # server -> its replicas at this level
    values: dict[str, float | None]  # SLO name -> value (mean over replications)
    ratios: tuple[float, ...]  # value / bound per SLO, worst first; inf for a missing value
    keeps_up: bool
    failed_requests: int
    cost_per_request: float  # $: tokens + GPU-hours over the run, per request sent
    cost_tokens_per_request: float = 0.0  # the part priced per token
    cost_gpu_per_request: float = 0.0  # the part priced per GPU-hour (replicas × duration)
    behind: float = 0.0  # makespan / what keeping up allows, worst replication (> 1: behind)
    # SLO name -> prediction interval of one run's value (at the answers of a rate search)
    intervals: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    answer_tps: float | None = None  # p50, mean over replications
    coverage: float | None = None  # inputs' answers read behind the first token, p50 (mean)
    score: float = field(init=False)  # the worst ratio: <= 1 when every SLO holds
    sustainable: bool = field(init=False)

    def __post_init__(self) -> None:
        score = self.ratios[0]
        object.__setattr__(self, "score", score)
        sustainable = score <= 1 and self.keeps_up and self.failed_requests == 0
        object.__setattr__(self, "sustainable", sustainable)


@dataclass(frozen=True)
class RateSearch:
    max_rate: float | None  # the highest rate found sustainable; None: not even the lowest
    first_failing: float | None  # the lowest rate found unsustainable; None: none up to the cap
    at_max: Assessment | None
    at_failing: Assessment | None  # what breaks just above the maximum
    # of the interval runs at max_rate (other seeds, drawn parameters), the share sustainable
    held_share: float | None = None


@dataclass(frozen=True)
class ReplicaSearch:
    target_rate: float
    servers: dict[str, int] | None  # server -> replicas needed; None: none found
    at_target: Assessment | None  # there (or the last level tried, when none was found)
    scaled: list[str] = field(default_factory=list)  # the bottlenecks, in the order scaled
    # why none was found: "unsustainable" (no rate at all) or "max_replicas"
    missing: str | None = None


@dataclass(frozen=True)
class Candidate:
    label: str  # the schedule
    values: dict[str, Any]  # scenario path -> value, the redundancy among them
    assessment: Assessment
    tps_ratio: float | None = None  # the standard mode's answer TPS p50 / this one's

    @property
    def redundancy(self) -> int:
        return int(self.values["topology.redundancy"])


@dataclass
class CapacityPlan:
    scenario: str
    slos: list[Slo]
    settings: PlanSettings
    capacity: RateSearch
    replicas: ReplicaSearch | None = None
    schedules: list[Candidate] = field(default_factory=list)  # best first
    best_capacity: RateSearch | None = None  # the best schedule's maximum rate
    best_replicas: ReplicaSearch | None = None  # and the replicas it needs for the target
    live_capacity: RateSearch | None = None  # the same search with every level run for real
    live_search: dict[str, Any] | None = None  # levels run, seconds, whether it converged
    live_probe: dict[str, Any] | None = None  # engine probes before and after the live search
    # the simulated search again on the profiles rescaled to the probed engine speed
    capacity_probe_scaled: RateSearch | None = None
    reference: Reference | None = None  # the standard mode, for relative SLOs and TPS

    @property
    def capacity_error_pct(self) -> float | None:
        """The simulated maximum rate's error against the live one."""
        return self._error_pct(self.capacity)

    @property
    def capacity_error_pct_probe_scaled(self) -> float | None:
        """The same error at the engine's probed speed: the model's own, without the drift."""
        scaled = self.capacity_probe_scaled
        return None if scaled is None else self._error_pct(scaled)

    def _error_pct(self, simulated: RateSearch) -> float | None:
        live = self.live_capacity.max_rate if self.live_capacity is not None else None
        if live is None or simulated.max_rate is None:
            return None
        return 100 * (simulated.max_rate - live) / live

    @property
    def best(self) -> Candidate | None:
        return self.schedules[0] if self.schedules else None

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON; an infinite ratio (a metric with no value) becomes None."""
        data = asdict(self)
        data["slos"] = {slo.name: slo.bound_s for slo in self.slos}
        data["slos_relative"] = {
            slo.name: f"{slo.itl_factor:g}xitl" for slo in self.slos if slo.itl_factor
        }
        data["best"] = asdict(self.best) if self.best is not None else None
        if self.live_capacity is None:
            for key in ("live_capacity", "live_search", "live_probe", "capacity_probe_scaled"):
                del data[key]
        else:
            data["capacity_error_pct"] = self.capacity_error_pct
            data["capacity_error_pct_probe_scaled"] = self.capacity_error_pct_probe_scaled
        finite: dict[str, Any] = _finite(data)
        return finite


def _finite(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    if isinstance(data, float) and not math.isfinite(data):
        return None
    return data


# --- simulating one load level ---------------------------------------------------------------


@dataclass(frozen=True)
class LoadTask:
    scenario: dict[str, Any]  # with the replication's seed
    profile_dir: str | None
    slo_paths: tuple[str, ...]
    replication: int  # > 0: the profiles' parameters are drawn (sim/sweep/replicate.py)


@dataclass(frozen=True)
class LoadMeasure:
    values: dict[str, float | None]  # summary path -> value
    failed_requests: int
    arrival_span_s: float  # first arrival -> last arrival
    makespan_s: float  # first arrival -> last finish
    first_e2e_s: float | None  # the first request's E2E: it arrives at an empty system
    cost_per_request: float
    cost_tokens_per_request: float = 0.0
    cost_gpu_per_request: float = 0.0


MeasureLoad = Callable[[LoadTask], LoadMeasure]


def measure_load(task: LoadTask) -> LoadMeasure:
    """Simulate one load level (runs in a backend worker)."""
    scenario = Scenario.model_validate(task.scenario)
    profile_dir = Path(task.profile_dir) if task.profile_dir is not None else None
    profiles = replication_profiles(scenario, profile_dir, task.replication)
    result = Simulator(scenario, profile_dir=profile_dir, profiles=profiles).run()
    return load_measure(result.records, result.summary, task.slo_paths)


def load_measure(
    records: list[Record], summary: dict[str, Any], slo_paths: tuple[str, ...]
) -> LoadMeasure:
    """What the sustainability rule reads of one load level's trace, simulated or live."""
    per_request = request_metrics(records)
    sent = [m.sent for m in per_request]
    finished = [m.sent + m.e2e for m in per_request if m.ok and m.e2e is not None]
    first = min(per_request, key=lambda m: m.sent)
    cost = summary["cost_usd"]
    return LoadMeasure(
        values={path: metric_value(summary, path) for path in slo_paths},
        failed_requests=summary["failed_requests"],
        arrival_span_s=max(sent) - min(sent),
        makespan_s=(max(finished) - min(sent)) if finished else math.inf,
        first_e2e_s=first.e2e if first.ok else None,
        cost_per_request=cost["per_request"],
        cost_tokens_per_request=cost["tokens"] / len(per_request),
        cost_gpu_per_request=cost["gpu"] / len(per_request),
    )


def keeps_up(measure: LoadMeasure, slack: float) -> bool:
    return behind(measure, slack) <= 1 + 1e-9  # float rounding is not falling behind


def behind(measure: LoadMeasure, slack: float) -> float:
    """The makespan over what keeping up allows: ≤ 1 keeps up; how far above 1 says how far
    an overloaded system falls behind (so two overloaded levels can be told apart)."""
    if measure.first_e2e_s is None:
        return math.inf
    allowed = (1 + slack) * measure.arrival_span_s + measure.first_e2e_s
    return measure.makespan_s / allowed if allowed > 0 else math.inf


# --- the planner ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """A change of the base scenario: arrival rate, servers' replicas, other fields."""

    rate: float | None = None
    replicas: tuple[tuple[str, int], ...] = ()  # (server, replicas) instead of the scenario's
    values: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        return json.dumps([self.rate, self.replicas, self.values], sort_keys=True)


class Planner:
    """Runs the searches; assessments are cached, so no load level is simulated twice.

    ``measure`` runs one load level: the simulator by default; the live capacity search
    gives it one that runs the level for real, so both searches share every rule here.
    """

    def __init__(
        self,
        scenario: Scenario,
        slos: list[Slo],
        settings: PlanSettings,
        backend: Backend,
        profile_dir: Path | None = None,
        measure: MeasureLoad = measure_load,
        reference: Reference | None = None,
    ) -> None:
        settings.check()
        self.reference = reference
        self.measure = measure
        self.scenario = scenario
        self.slos = slos
        self.settings = settings
        self.backend = backend
        self.profile_dir = str(profile_dir) if profile_dir is not None else None
        self.base = scenario.model_dump(mode="json")
        self.base["workload"]["requests"] = settings.requests
        self._cache: dict[str, Assessment] = {}  # by Variant.key

    # --- assessing --------------------------------------------------------------------------

    def assess(self, variants: list[Variant]) -> list[Assessment]:
        """Simulate the variants not seen before, all replications in parallel."""
        new = list({v.key: v for v in variants if v.key not in self._cache}.values())
        replications = self.settings.replications
        tasks = [self._task(v, r) for v in new for r in range(replications)]
        measures: dict[int, LoadMeasure] = dict(self.backend.imap_unordered(self.measure, tasks))
        for i, variant in enumerate(new):
            runs = [measures[i * replications + r] for r in range(replications)]
            self._cache[variant.key] = self._combine(variant, runs)
        return [self._cache[v.key] for v in variants]

    def _task(self, variant: Variant, replication: int) -> LoadTask:
        values = dict(variant.values)
        if variant.rate is not None:
            values["workload.arrival"] = self._arrival(variant.rate)
        for name, count in variant.replicas:
            values[f"servers.{name}.replicas"] = count
        scenario = scenario_at(self.base, values, "plan") if values else copy.deepcopy(self.base)
        scenario["seed"] = replication_seed(self.scenario.seed, replication)
        paths = (*(s.summary_path for s in self.slos), ANSWER_TPS_PATH, COVERAGE_PATH)
        return LoadTask(scenario, self.profile_dir, paths, replication)

    def _arrival(self, rate: float) -> dict[str, Any]:
        """The scenario's own open-loop process at another rate; closed loops become Poisson."""
        arrival = self.scenario.workload.arrival
        kind = "poisson" if isinstance(arrival, ClosedArrival) else arrival.kind
        return {"kind": kind, "rate_per_s": rate}

    def _combine(self, variant: Variant, runs: list[LoadMeasure]) -> Assessment:
        values = {slo.name: _mean_of_all(runs, slo.summary_path) for slo in self.slos}
        ratios = [
            math.inf if value is None else value / slo.bound_s
            for slo, value in zip(self.slos, values.values(), strict=True)
        ]
        return Assessment(
            rate=variant.rate,
            replicas=self.replica_counts(variant),
            values=values,
            ratios=tuple(sorted(ratios, reverse=True)),
            keeps_up=all(keeps_up(run, self.settings.keep_up_slack) for run in runs),
            failed_requests=sum(run.failed_requests for run in runs),
            cost_per_request=float(np.mean([run.cost_per_request for run in runs])),
            cost_tokens_per_request=float(np.mean([r.cost_tokens_per_request for r in runs])),
            cost_gpu_per_request=float(np.mean([r.cost_gpu_per_request for r in runs])),
            behind=max(behind(run, self.settings.keep_up_slack) for run in runs),
            answer_tps=_mean_of_all(runs, ANSWER_TPS_PATH),
            coverage=_mean_of_all(runs, COVERAGE_PATH),
        )

    def replica_counts(self, variant: Variant) -> dict[str, int]:
        """Every server's replicas at a variant."""
        given = dict(variant.replicas)
        return {name: given.get(name, s.replicas) for name, s in self.scenario.servers.items()}

    # --- the maximum sustainable rate --------------------------------------------------------

    def max_rate(
        self,
        values: tuple[tuple[str, Any], ...] = (),
        start: float | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> RateSearch:
        """Bracket the highest sustainable rate, then narrow the bracket.

        Each round simulates as many rates as the backend has workers, spread evenly (in
        log scale) over the bracket, so two workers cut it in three per round. ``start``:
        the first rate tried (default: the scenario's); ``stop`` ends the search early with
        the bracket found so far (a time budget).
        """
        start = start or self._start_rate()
        stopped = stop or (lambda: False)
        passing: float | None = None
        failing: float | None = None
        if self._passes(Variant(start, (), values)):
            passing = start
        else:
            failing = start
        while (passing is None or failing is None) and not stopped():
            probes = self._expansion(passing, failing)
            if not probes:
                break
            passing, failing = self._narrow(probes, passing, failing, values)
        while passing is not None and failing is not None and not stopped():
            if failing / passing <= 1 + self.settings.rate_tolerance:
                break
            probes = list(np.geomspace(passing, failing, self.backend.workers + 2)[1:-1])
            passing, failing = self._narrow([float(p) for p in probes], passing, failing, values)
        return RateSearch(passing, failing, self._at(passing, values), self._at(failing, values))

    def with_intervals(
        self, search: RateSearch, values: tuple[tuple[str, Any], ...] = ()
    ) -> RateSearch:
        """The search with intervals for its answer: the SLO metrics at the maximum rate over
        ``interval_replications`` runs (seeds and parameter draws), and how many of those
        runs the rate held in."""
        count = self.settings.interval_replications
        if search.max_rate is None or search.at_max is None or count < 2:
            return search
        variant = Variant(search.max_rate, (), values)
        tasks = [self._task(variant, r) for r in range(count)]
        runs = [measure for _, measure in sorted(self.backend.imap_unordered(self.measure, tasks))]
        intervals = {
            slo.name: prediction_interval(
                [run.values[slo.summary_path] for run in runs],
                self.settings.level,
                search.at_max.values[slo.name],
            )
            for slo in self.slos
        }
        held = sum(self._combine(variant, [run]).sustainable for run in runs) / count
        return replace(search, at_max=replace(search.at_max, intervals=intervals), held_share=held)

    def _at(self, rate: float | None, values: tuple[tuple[str, Any], ...]) -> Assessment | None:
        return self.assess([Variant(rate, (), values)])[0] if rate is not None else None

    def _start_rate(self) -> float:
        rate = getattr(self.scenario.workload.arrival, "rate_per_s", None)
        return float(rate) if rate is not None else 1.0

    def _expansion(self, passing: float | None, failing: float | None) -> list[float]:
        """Rates beyond the known one, doubling, one per worker, within the search limits."""
        steps = range(1, self.backend.workers + 1)
        if failing is None:
            assert passing is not None
            return [r for r in (passing * 2.0**i for i in steps) if r <= HIGHEST_RATE]
        return [r for r in (failing / 2.0**i for i in steps) if r >= LOWEST_RATE]

    def _narrow(
        self,
        probes: list[float],
        passing: float | None,
        failing: float | None,
        values: tuple[tuple[str, Any], ...],
    ) -> tuple[float | None, float | None]:
        results = self.assess([Variant(rate, (), values) for rate in probes])
        for rate, result in sorted(zip(probes, results, strict=True)):
            if not result.sustainable and (failing is None or rate < failing):
                failing = rate
        for rate, result in zip(probes, results, strict=True):
            below_failing = failing is None or rate < failing
            if result.sustainable and below_failing and (passing is None or rate > passing):
                passing = rate
        return passing, failing

    def _passes(self, variant: Variant) -> bool:
        return self.assess([variant])[0].sustainable

    # --- replicas for a target rate ---------------------------------------------------------

    def replicas_for(
        self, target: float, capacity: RateSearch, values: tuple[tuple[str, Any], ...] = ()
    ) -> ReplicaSearch:
        """The fewest replicas of each server that sustain ``target``: scale the bottleneck.

        While the target fails, each server's replicas are doubled in turn (simulated in
        parallel) and the doubling that brings the load closest to sustainable is kept —
        the bottleneck, whether it is an engine's batch, an endpoint's rate limit or its
        concurrency; if no single server's doubling helps, all double together. Once the
        target holds, each server that grew is cut back (bisection, the others fixed) to
        the fewest replicas that still hold it. So a server that keeps up is never paid for
        twice. If no rate at all is sustainable, the SLOs fail for a lone request and no
        replica count helps.
        """
        if capacity.max_rate is None:
            return ReplicaSearch(target, None, None, missing="unsustainable")
        counts = {name: s.replicas for name, s in self.scenario.servers.items()}
        scaled: list[str] = []
        current = self._at_counts(target, counts, values)
        while not current.sustainable:
            growable = [n for n, k in counts.items() if k < self.settings.max_replicas]
            if not growable:
                return ReplicaSearch(target, None, current, scaled, "max_replicas")
            options = [
                {**counts, name: min(2 * counts[name], self.settings.max_replicas)}
                for name in growable
            ]
            results = self.assess([self._variant(target, o, values) for o in options])
            best = min(range(len(options)), key=lambda i: _shortfall(results[i]))
            if _shortfall(results[best]) < _shortfall(current):
                counts, current = options[best], results[best]
                scaled.append(growable[best])
            else:  # a joint bottleneck: no server alone helps
                counts = {
                    n: min(2 * k, self.settings.max_replicas) if n in growable else k
                    for n, k in counts.items()
                }
                current = self._at_counts(target, counts, values)
                scaled += growable
        for name in dict.fromkeys(scaled):
            counts[name] = self._fewest(target, counts, name, values)
        return ReplicaSearch(target, counts, self._at_counts(target, counts, values), scaled)

    def _fewest(
        self,
        target: float,
        counts: dict[str, int],
        name: str,
        values: tuple[tuple[str, Any], ...],
    ) -> int:
        """The fewest replicas of ``name`` that sustain ``target``, the others as in ``counts``
        (which sustain it)."""
        failing, passing = 0, counts[name]
        while passing - failing > 1:
            tries = _integers_between(failing, passing, self.backend.workers)
            results = self.assess(
                [self._variant(target, {**counts, name: k}, values) for k in tries]
            )
            for k, result in zip(tries, results, strict=True):
                if result.sustainable:
                    passing = min(passing, k)
                else:
                    failing = max(failing, k)
        return passing

    def _variant(
        self, rate: float, counts: dict[str, int], values: tuple[tuple[str, Any], ...]
    ) -> Variant:
        changed = tuple(
            (name, k) for name, k in counts.items() if k != self.scenario.servers[name].replicas
        )
        return Variant(rate, changed, values)

    def _at_counts(
        self, rate: float, counts: dict[str, int], values: tuple[tuple[str, Any], ...]
    ) -> Assessment:
        return self.assess([self._variant(rate, counts, values)])[0]

    # --- the best levers -----------------------------------------------------------------

    def best_schedules(self, target: ReplicaSearch | None) -> list[Candidate]:
        """Every candidate at the planning load, best first (sustainable, then by ratios).

        Four stages keep the count bounded: schedules (proposers' × the aggregator's offset);
        every aggregator schedule of the family under the best proposer schedule; redundancy
        and aggregator priority on the best few; a display pace on the best few after that.
        """
        rate: float | None = None
        replicas: tuple[tuple[str, int], ...] = ()
        if target is not None and target.servers is not None:
            rate, replicas = target.target_rate, tuple(sorted(target.servers.items()))
        ranked = self._ranked(schedule_candidates(self.scenario, self.settings), rate, replicas)
        if ranked and "aggregator" in self.settings.levers:
            shapes = aggregator_candidates(self.scenario, self.settings, ranked[0].values)
            ranked = self._ranked(shapes, rate, replicas, ranked)
        best_values = [c.values for c in ranked if c.label != STANDARD_LABEL]
        labels = {_ident(c.values): c.label for c in ranked}
        shapes = lever_candidates(
            self.scenario, self.settings, best_values[:STAGE_TWO_FINALISTS], labels
        )
        ranked = self._ranked(shapes, rate, replicas, ranked)
        if "pace" not in self.settings.levers or self.reference is None:
            return ranked
        finalists = [c for c in ranked if c.label != STANDARD_LABEL][:STAGE_TWO_FINALISTS]
        return self._ranked(paced_candidates(finalists, self.reference), rate, replicas, ranked)

    def _ranked(
        self,
        shapes: list[tuple[str, dict[str, Any]]],
        rate: float | None,
        replicas: tuple[tuple[str, int], ...],
        known: list[Candidate] | None = None,
    ) -> list[Candidate]:
        """The shapes not assessed yet, assessed, ranked together with ``known``."""
        known = known or []
        seen = {_ident(c.values) for c in known}
        shapes = [
            (label, values)
            for label, values in shapes
            if _ident(values) not in seen and self._allowed(values)
        ]
        unique = list({_ident(values): (label, values) for label, values in shapes}.values())
        variants = [Variant(rate, replicas, _key(values)) for _, values in unique]
        results = self.assess(variants)
        reference_tps = self.reference.answer_tps if self.reference is not None else None
        fresh = [
            Candidate(label, values, result, _tps_ratio(reference_tps, result.answer_tps))
            for (label, values), result in zip(unique, results, strict=True)
            if self._covered(result)
        ]
        return sorted([*known, *fresh], key=_rank)

    def _allowed(self, values: dict[str, Any]) -> bool:
        """Within the quality floors a candidate's fields show: the proposers' first chunk
        and the redundancy (the standard mode reads whole answers: any first chunk)."""
        settings = self.settings
        redundancy = values.get("topology.redundancy", self.scenario.topology.redundancy)
        if settings.max_redundancy is not None and redundancy > settings.max_redundancy:
            return False
        if settings.min_first_chunk is None or values.get("topology.mode") == "standard":
            return True
        return first_chunk(self.scenario, values) >= settings.min_first_chunk

    def _covered(self, assessment: Assessment) -> bool:
        """Meets ``min_coverage`` (an answer that reads no other agent has nothing to miss)."""
        floor = self.settings.min_coverage
        return floor is None or assessment.coverage is None or assessment.coverage >= floor


def _key(values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Field values in one order, so equal changes make one cached variant."""
    return tuple(sorted(values.items()))


def _ident(values: dict[str, Any]) -> str:
    return json.dumps(_key(values))


def _tps_ratio(reference: float | None, answer_tps: float | None) -> float | None:
    if reference is None:
        return None
    return reference / answer_tps if answer_tps else math.inf


def _rank(candidate: Candidate) -> tuple[bool, bool, tuple[float, ...], float]:
    """Sustainable first; then the smallest worst ratio to a target (SLO bounds and the
    standard mode's answer speed), ties going to the smaller next-worst (a schedule as fast
    to the first token but with shorter pauses wins); then cost."""
    a = candidate.assessment
    ratios = (*a.ratios, *([candidate.tps_ratio] if candidate.tps_ratio is not None else []))
    return (
        not a.sustainable,
        not a.keeps_up,
        tuple(sorted(ratios, reverse=True)),
        a.cost_per_request,
    )


def _mean_of_all(runs: list[LoadMeasure], path: str) -> float | None:
    """The mean over replications, or None if any replication has no value."""
    observed = [run.values[path] for run in runs]
    present = [v for v in observed if v is not None]
    return float(np.mean(present)) if present and len(present) == len(observed) else None


def _shortfall(assessment: Assessment) -> tuple[int, float]:
    """How far a load is from sustainable (smaller is closer): failed requests first, then
    the worse of its worst SLO ratio and how far it falls behind."""
    return assessment.failed_requests, max(assessment.score, assessment.behind)


def _integers_between(low: int, high: int, count: int) -> list[int]:
    """Up to ``count`` distinct integers strictly between low and high, evenly spread."""
    spread = np.linspace(low, high, count + 2)[1:-1]
    return sorted({min(high - 1, max(low + 1, round(float(x)))) for x in spread})


# --- the candidates -----------------------------------------------------------------------------

STANDARD_LABEL = "standard mode"


def geometric_schedule(first: int, growth: float, total: int) -> list[int]:
    """``first, first·growth, …`` until the chunks cover ``total`` tokens (the last repeats)."""
    sizes = [first]
    while sum(sizes) < total and growth > 1:
        sizes.append(max(sizes[-1] + 1, round(first * growth ** len(sizes))))
    return sizes


def shifted(sizes: tuple[int, ...], offset: int) -> tuple[int, ...]:
    """The schedule from its chunk ``offset + 1`` on (the last chunk repeats).

    An aggregator whose chunk j is the proposers' chunk j + 1 never waits when every agent
    decodes at the same pace: while it writes chunk j (the proposers' chunk j + 1 in size),
    the proposers write their chunk j + 1, which its next round reads.
    """
    return sizes[min(offset, len(sizes) - 1) :]


def schedule_family(scenario: Scenario, settings: PlanSettings) -> dict[tuple[int, ...], str]:
    """Chunk schedules to try (sizes -> label): geometric ones and the fixed lists."""
    total = max(agent.max_tokens for agent in build_dag(scenario).agents)
    family: dict[tuple[int, ...], str] = {}
    if "schedule" in settings.levers:
        for first in settings.first_chunks:
            for growth in settings.growths:
                sizes = tuple(geometric_schedule(first, growth, total))
                family.setdefault(sizes, f"{first}×{growth:g}")
    for sizes in settings.schedules:
        family.setdefault(tuple(sizes), "fixed")
    return family


def first_chunk(scenario: Scenario, values: dict[str, Any]) -> int:
    """The first chunk of the upstream agents' schedule with ``values`` applied: what an
    aggregating agent's first round reads of each input (graphs: the step size)."""
    topology = scenario.topology
    if isinstance(topology, MoaTopology):
        return int(values.get("topology.chunks.proposer", topology.chunks.proposer)[0])
    if isinstance(topology, DebateTopology):
        return int(values.get("topology.chunks", topology.chunks)[0])
    return topology.unit.tokens


def _schedule_fields(scenario: Scenario) -> tuple[list[str], int] | None:
    """The fields a schedule sets and the inputs an agent reads (for redundancy)."""
    topology = scenario.topology
    if isinstance(topology, MoaTopology):
        return ["topology.chunks.proposer", "topology.chunks.aggregator"], topology.proposers
    if isinstance(topology, DebateTopology):
        return ["topology.chunks"], topology.agents
    return None  # graphs forward fixed steps and have no schedule to choose


def schedule_candidates(
    scenario: Scenario, settings: PlanSettings
) -> list[tuple[str, dict[str, Any]]]:
    """Stage one, (label, field values): every schedule, for MoA with the aggregator's schedule
    shifted by each offset (if it still reads the proposers in two rounds at least), at the
    scenario's redundancy; the scenario as given; the standard mode."""
    found = _schedule_fields(scenario)
    if found is None:
        return []
    fields, _ = found
    redundancy = {"topology.redundancy": scenario.topology.redundancy}
    offsets = (0, *AGGREGATOR_OFFSETS) if "offset" in settings.levers and len(fields) == 2 else (0,)
    dag = build_dag(scenario)
    answer = dag.agent(dag.output).max_tokens  # the tokens the aggregator's schedule cuts
    shapes: list[tuple[str, dict[str, Any]]] = [("as given", dict(redundancy))]
    for sizes, label in schedule_family(scenario, settings).items():
        for offset in offsets:
            values = {name: list(sizes) for name in fields}
            if offset:
                values[fields[1]] = list(shifted(sizes, offset))
                if len(unit_boundaries(shifted(sizes, offset), answer)) < MIN_AGGREGATOR_ROUNDS:
                    continue
            shown = f"{label} {_short(sizes)}" + (f" / aggregator +{offset}" if offset else "")
            shapes.append((shown, {**values, **redundancy}))
    shapes.append((STANDARD_LABEL, {"topology.mode": "standard", **redundancy}))
    return shapes


def aggregator_candidates(
    scenario: Scenario, settings: PlanSettings, best: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """Stage two: the family's schedules for the aggregator of the best candidate, those that
    read the proposers in as many rounds as the proposers' schedule shifted by one (and two)
    at least.

    An aggregator that writes its whole answer from the proposers' first chunk never waits,
    but is a Mixture-of-Agents in name only; the simulator cannot see answer quality, so the
    search keeps such schedules out.
    """
    if not isinstance(scenario.topology, MoaTopology) or "topology.mode" in best:
        return []
    proposer = tuple(best.get("topology.chunks.proposer", scenario.topology.chunks.proposer))
    answer = build_dag(scenario).agent("aggregator").max_tokens
    least_rounds = max(MIN_AGGREGATOR_ROUNDS, len(unit_boundaries(shifted(proposer, 1), answer)))
    return [
        (
            f"proposers {_short(proposer)} / aggregator {label} {_short(sizes)}",
            {**best, "topology.chunks.proposer": list(proposer),
             "topology.chunks.aggregator": list(sizes)},
        )
        for sizes, label in schedule_family(scenario, settings).items()
        if len(unit_boundaries(sizes, answer)) >= least_rounds
    ]  # fmt: skip


def lever_candidates(
    scenario: Scenario,
    settings: PlanSettings,
    finalists: list[dict[str, Any]],
    labels: dict[str, str],
) -> list[tuple[str, dict[str, Any]]]:
    """Stage three: every redundancy and, on a vLLM aggregator, scheduler priority for it,
    on each finalist."""
    found = _schedule_fields(scenario)
    if found is None:
        return []
    width = found[1]
    redundancies = range(width) if "redundancy" in settings.levers else (None,)
    priorities = (False, True) if "priority" in settings.levers else (False,)
    priority_values = _aggregator_priority(scenario)
    shapes = []
    for values in finalists:
        label = labels[_ident(values)]
        for redundancy in redundancies:
            for prioritised in priorities:
                if prioritised and priority_values is None:
                    continue
                changed = dict(values)
                if redundancy is not None:
                    changed["topology.redundancy"] = redundancy
                if prioritised:
                    changed.update(priority_values or {})
                shown = label + (", aggregator first" if prioritised else "")
                shapes.append((shown, changed))
    return shapes


def paced_candidates(
    finalists: list[Candidate], reference: Reference
) -> list[tuple[str, dict[str, Any]]]:
    """Stage four: each finalist shown through a display buffer at the standard mode's answer
    speed. A stream that arrives faster fills the buffer, which then covers the pauses at
    round boundaries, and the answer still flows as fast as the standard mode's."""
    if not reference.answer_tps:
        return []
    pace = math.ceil(reference.answer_tps * 10) / 10  # tokens/s, never below the standard's
    return [
        (f"{c.label}, shown at {pace:g} tok/s", {**c.values, "display.pace_tokens_per_s": pace})
        for c in finalists
    ]


def _aggregator_priority(scenario: Scenario) -> dict[str, Any] | None:
    """The fields that serve a MoA aggregator's calls first on a vLLM server."""
    topology = scenario.topology
    if not isinstance(topology, MoaTopology):
        return None
    name = topology.aggregator.server or topology.agent.server or next(iter(scenario.servers))
    if scenario.servers[name].kind != "vllm":
        return None
    return {"topology.aggregator.priority": -1, f"servers.{name}.scheduling_policy": "priority"}


def _short(sizes: tuple[int, ...]) -> str:
    shown = ",".join(str(s) for s in sizes[:3])
    return f"[{shown}{',…' if len(sizes) > 3 else ''}]"


def standard_reference(
    scenario: Scenario, settings: PlanSettings, profile_dir: Path | None
) -> Reference:
    """Simulate the scenario's standard mode (a graph's serial mode) once."""
    base = scenario.model_dump(mode="json")
    base["workload"]["requests"] = settings.requests
    standard = "serial" if isinstance(scenario.topology, GraphTopology) else "standard"
    data = scenario_at(base, {"topology.mode": standard}, "plan: standard mode")
    paths = (*(f"itl_s.{stat}" for stat in SLO_STATS), ANSWER_TPS_PATH)
    directory = str(profile_dir) if profile_dir is not None else None
    measured = measure_load(LoadTask(data, directory, paths, replication=0))
    itl = {stat: measured.values[f"itl_s.{stat}"] for stat in SLO_STATS}
    return Reference(itl_s=itl, answer_tps=measured.values[ANSWER_TPS_PATH])


# --- the entry point ---------------------------------------------------------------------------


def plan(
    scenario: Scenario | str | Path,
    slos: Iterable[str] | Mapping[str, float | str],
    settings: PlanSettings | None = None,
    *,
    overrides: list[str] | None = None,
    backend: BackendName = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> CapacityPlan:
    """Plan capacity for a scenario (an object or a YAML path) under SLOs.

    ``slos`` are strings like ``"ttft_p90=2s"`` or a mapping ``{"ttft_p90": 2.0}``.
    ``progress`` hears the name of each phase as it starts.
    """
    settings = settings or PlanSettings()
    parsed = parse_slos(slos)
    scenario, profile_dir = resolve_scenario(scenario, overrides)
    say = progress or (lambda phase: None)
    settings.check()
    reference = None
    if settings.search_schedules or any(slo.itl_factor for slo in parsed):
        say("the standard mode, for reference")
        reference = standard_reference(scenario, settings, profile_dir)
        parsed = [slo.resolved(reference) for slo in parsed]
    with make_backend(backend, workers, address) as running:
        planner = Planner(scenario, parsed, settings, running, profile_dir, reference=reference)
        say("maximum sustainable rate")
        capacity = planner.with_intervals(planner.max_rate())
        result = CapacityPlan(scenario.name, parsed, settings, capacity)
        result.reference = reference
        if settings.target_rate is not None:
            say(f"replicas for {settings.target_rate:g} requests/s")
            result.replicas = planner.replicas_for(settings.target_rate, result.capacity)
        if settings.search_schedules:
            say("chunk schedules, redundancy and priority")
            result.schedules = planner.best_schedules(result.replicas)
            if result.best is not None and result.best.assessment.sustainable:
                say("maximum rate of the best schedule")
                values = _key(result.best.values)
                result.best_capacity = planner.with_intervals(planner.max_rate(values), values)
                if settings.target_rate is not None:
                    say(f"replicas for {settings.target_rate:g} requests/s, best schedule")
                    result.best_replicas = planner.replicas_for(
                        settings.target_rate, result.best_capacity, values
                    )
    return result
