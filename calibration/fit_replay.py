"""The simulation-based route: fit the step cost that makes a replay reproduce a trace.

Any request-level trace (a ``vllm bench`` run, DistServe's, LLMServingSim's, a stairwise run)
is replayed in the simulator — same send times, prompt and output lengths, same scheduler
generation — and the step-cost coefficients are adjusted until the replay's TTFT and TPOT
quantiles match the measured ones. Coefficients are searched as log-multipliers of a start
(so they stay positive and scale-free), with a weak pull towards the start for directions
the quantiles cannot see. A replay's quantiles jump a little as events reorder, so the search
is derivative-free (Nelder–Mead, restarted from its result while that still improves).
Each evaluation is one simulation; a fit takes a few dozen to a few hundred.

The uncertainty of the result comes from the Jacobian of the quantile errors at the optimum
(central differences, two simulations per coefficient) and from how much each measured
quantile moves when the trace's requests are resampled (bootstrap), plus the misfit the
model leaves; a coefficient the quantiles do not pin down is flagged.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from calibration.fit_steps import fit_step_cost
from calibration.replay import EngineSettings, ReplayPlan, plan, replay
from calibration.table import STEP_FEATURES, STEP_PARAMS, RequestRow, StepRow, TraceTable
from calibration.uncertainty import (
    UNIDENTIFIED_REL_SD,
    Uncertainty,
    bootstrap_sd,
    choice_sd,
    correlations,
    held_by_floor,
    judged,
    linearised_cov,
    merged,
)
from sim.errors import ConfigError
from sim.metrics import request_metrics
from sim.profile import StepCorrection, StepCost, VllmProfile

OVERALL_LEVELS = (0.1, 0.5, 0.9)
GROUP_LEVELS = (0.5, 0.9)
METRICS = ("ttft_s", "tpot_s")
MISSING_PENALTY = 3.0  # a quantile the replay did not produce: a log-error of 3 (×20)
# Those the start sets to 0 stay 0. The exponent makes the cost non-linear in the batch, so
# only a replay (which prices every step) can fit it, never a direct fit of summed steps; it
# is chosen among a few values, which a continuous search wandered away from (it traded the
# exponent against the per-context-token cost and stopped in a worse optimum).
EXPONENT = "decode_seq_exponent"
REPLAY_PARAMS = (*STEP_PARAMS, EXPONENT)
EXPONENT_CANDIDATES = (1.0, 0.8, 0.6, 0.4)
PRIOR_WEIGHT = 0.01  # a ×e move costs what one 1 % quantile error does
SEARCH_RANGE = 6.0  # log-multipliers within ±6 (×0.0025 … ×400)
FIRST_MOVE = 0.3  # the initial simplex tries each coefficient ×1.35
RESTART_GAIN = 0.01  # Nelder–Mead restarts from its result while that gains >= 1 %
START_SHARE = 0.05  # a negligible start coefficient starts at 5 % of a typical step's time
NEGLIGIBLE = 0.005  # … where negligible is under 0.5 % of it
JACOBIAN_STEP = 0.1  # ±10 % per coefficient: beyond the jumps of event reordering

Progress = Callable[[int, int], None]


@dataclass
class ReplayFit:
    profile: VllmProfile
    fitted: list[str]
    quality: dict[str, Any] = field(default_factory=dict)
    uncertainty: Uncertainty = field(default_factory=lambda: Uncertainty({}, []))


class _BudgetSpent(Exception):
    pass


def fit_by_replay(
    tables: list[TraceTable],
    start: VllmProfile,
    engine: EngineSettings,
    params: tuple[str, ...] = REPLAY_PARAMS,
    max_evaluations: int = 150,
    progress: Progress | None = None,
    floors: dict[str, float] | None = None,
    exponents: tuple[float, ...] = EXPONENT_CANDIDATES,
    per_run_speed: bool = False,
    sent_before_s: float | None = None,
) -> ReplayFit:
    """Fit ``params`` (none below its floor); the exponent, if among them, by trying each of
    ``exponents`` with a full search of the others (so a fit with it costs that many times
    the budget). ``per_run_speed``: replay each trace at its own engine speed (see
    :func:`run_speed`), so a run that was slower as a whole does not bend the step's form;
    the speeds are read at the start, then again at the fit, which is then searched once more
    from where it stopped (up to twice the budget).
    ``sent_before_s``: fit only the requests sent before it; the later ones are replayed (they
    load the server) but their latencies stay unseen (held out)."""
    plans = [plan(t, "vllm", engine) for t in tables]
    targets = [Target(t, p, sent_before_s) for t, p in zip(tables, plans, strict=True)]
    names = [p for p in params if p != EXPONENT and getattr(start.step, p) > 0]
    floors = floors or {}
    raised = {p: max(getattr(start.step, p), f) for p, f in floors.items()}  # unfitted too
    start = start.model_copy(update={"step": start.step.model_copy(update=raised)})
    if per_run_speed:
        for target, speed in zip(targets, relative_speeds(plans, start), strict=True):
            target.speed = speed
    if not names:
        raise ConfigError("nothing to fit: every chosen step parameter starts at 0")
    starts = [start]
    if EXPONENT in params and start.step.decode_seq_s > 0:
        load = float(np.nanmedian(np.concatenate([_decode_load(p.rows) for p in plans])))
        starts = [_with_exponent(start, exponent, load) for exponent in exponents]
    total = max_evaluations * len(starts)
    best: _Search | None = None
    searches: list[_Search] = []
    spent = 0
    for index, candidate in enumerate(starts):
        shown = None if progress is None else _shifted(progress, index * max_evaluations, total)
        search = _search(plans, targets, candidate, names, max_evaluations, shown, floors)
        spent += search.evaluations
        searches.append(search)
        if best is None or search.cost < best.cost:
            best = search
    assert best is not None
    if per_run_speed:  # the speeds read again at the fit, and the search resumed from it
        speeds = relative_speeds(plans, best.profile)
        if max(abs(np.log(s / t.speed)) for s, t in zip(speeds, targets, strict=True)) > 0.005:
            for target, speed in zip(targets, speeds, strict=True):
                target.speed = speed
            best = _search(plans, targets, best.profile, names, max_evaluations, progress, floors)
            spent += best.evaluations
    uncertainty = replay_uncertainty(plans, targets, best.profile, names, floors)
    if len(starts) > 1:
        exponent = choice_sd(
            EXPONENT,
            best.profile.step.decode_seq_exponent,
            {s.profile.step.decode_seq_exponent: s.cost for s in searches},
            sum(len(t.observed) for t in targets),
            min(abs(a - b) for a, b in itertools.pairwise(sorted(exponents))),
        )
        uncertainty = merged(uncertainty, exponent)
    return ReplayFit(
        profile=best.profile,
        fitted=names + ([EXPONENT] if len(starts) > 1 else []),
        quality={
            "evaluations": spent,
            **replay_quality(plans, targets, best.profile),
            **({"run_speed": run_speed_record(targets)} if per_run_speed else {}),
        },
        uncertainty=uncertainty,
    )


def _shifted(progress: Progress, offset: int, total: int) -> Progress:
    """One search's progress as part of several searches'."""
    return lambda done, _: progress(offset + done, total)


def _with_exponent(start: VllmProfile, exponent: float, load: float) -> VllmProfile:
    """``start`` with another exponent, its per-sequence cost rescaled to price the trace's
    typical decode load as before."""
    step = start.step
    scale = max(load, 1.0) ** (step.decode_seq_exponent - exponent)
    update = {EXPONENT: exponent, "decode_seq_s": step.decode_seq_s * scale}
    return start.model_copy(update={"step": step.model_copy(update=update)})


@dataclass
class _Search:
    profile: VllmProfile
    cost: float
    evaluations: int


def _search(
    plans: list[ReplayPlan],
    targets: list[Target],
    start: VllmProfile,
    names: list[str],
    max_evaluations: int,
    progress: Progress | None,
    floors: dict[str, float],
) -> _Search:
    """Nelder–Mead over log-multipliers of the step coefficients ``names`` (none below its
    floor)."""
    profile_at = _scaled(start, names, floors)

    def residuals(x: np.ndarray) -> np.ndarray:
        return _log_errors(plans, targets, profile_at(x))

    x, cost, evaluations = _nelder_mead(residuals, len(names), max_evaluations, progress)
    return _Search(profile_at(x), cost, evaluations)


def _nelder_mead(
    residuals: Callable[[np.ndarray], np.ndarray],
    dimensions: int,
    max_evaluations: int,
    progress: Progress | None,
) -> tuple[np.ndarray, float, int]:
    """Nelder–Mead over ``x`` (0 = the start, pulled weakly back to it) on the squared
    ``residuals(x)`` (one simulation each), restarted while it still gains: (x, cost,
    evaluations)."""
    best: dict[str, Any] = {"cost": np.inf, "x": np.zeros(dimensions), "evaluations": 0}

    def objective(x: np.ndarray) -> float:
        if best["evaluations"] >= max_evaluations:
            raise _BudgetSpent
        best["evaluations"] += 1
        if progress is not None:
            progress(best["evaluations"], max_evaluations)
        result = np.concatenate([residuals(x), PRIOR_WEIGHT * x])
        cost = float(result @ result)
        if cost < best["cost"]:
            best.update(cost=cost, x=x.copy())
        return cost

    try:
        objective(best["x"])
        previous = np.inf
        while best["cost"] < previous * (1 - RESTART_GAIN):  # restart where the last run stopped
            previous = best["cost"]
            start_x = best["x"].copy()
            simplex = np.vstack([start_x, start_x + FIRST_MOVE * np.eye(dimensions)])
            minimize(
                objective,
                start_x,
                method="Nelder-Mead",
                bounds=[(-SEARCH_RANGE, SEARCH_RANGE)] * dimensions,
                options={
                    "initial_simplex": simplex,
                    "maxfev": max_evaluations,
                    "xatol": 0.01,
                    "fatol": 1e-5,
                },
            )
    except _BudgetSpent:
        pass
    return best["x"], best["cost"], best["evaluations"]


# --- the serving run's correction to an operator profile -----------------------------------------

MAX_OVERHEAD_SHARE = 0.9  # of a typical step


def fit_table_correction(
    tables: list[TraceTable],
    start: VllmProfile,
    engine: EngineSettings,
    max_evaluations: int = 150,
    progress: Progress | None = None,
    sent_before_s: float | None = None,
) -> ReplayFit:
    """Fit what a serving run adds to an operator profile by replaying request traces,
    starting from the profile alone: its ``correction`` (a scale of the eager table times and
    a per-step overhead) and the API server's time per request before queueing
    (``request_overhead_s``, which no operator profile sees).

    Scale and overhead trade against each other along a valley (a typical step can be made
    of either), so the search moves across it instead: ``x0`` scales the typical step time
    (log), ``x1²`` is the overhead's share of it — a typical step of ``T`` table seconds costs
    ``T·e^x0``, of which ``x1²·T·e^x0`` is overhead (a square: no flat side at 0 for the simplex
    to stall on). The request overhead needs no simulation: it delays every request alike, so
    it adds itself to every TTFT and changes nothing else; each replay gets the best one.
    ``sent_before_s``: fit only the requests sent before it (see Target)."""
    spec = start.operator_tables
    if spec is None:
        raise ConfigError("a table correction needs a profile with operator tables")
    plans = [plan(t, "vllm", engine) for t in tables]
    targets = [Target(t, p, sent_before_s) for t, p in zip(tables, plans, strict=True)]
    start = start.model_copy(update={"request_overhead_s": 0.0})
    typical = _typical_step_s(plans, start)

    def profile_at(x: np.ndarray) -> VllmProfile:
        share = min(float(x[1]) ** 2, MAX_OVERHEAD_SHARE)
        step = float(np.exp(x[0]))
        correction = StepCorrection(
            compute_scale=step * (1 - share), step_overhead_s=typical * step * share
        )
        return start.model_copy(
            update={"operator_tables": spec.model_copy(update={"correction": correction})}
        )

    def predicted(x: np.ndarray) -> list[np.ndarray]:
        profile = profile_at(x)
        return [
            t.predicted(replay(p, profile), len(p.specs))
            for p, t in zip(plans, targets, strict=True)
        ]

    def residuals(x: np.ndarray) -> np.ndarray:
        vectors = predicted(x)
        return _shifted_errors(targets, vectors, _best_ttft_shift(targets, vectors))

    x, _, evaluations = _nelder_mead(residuals, 2, max_evaluations, progress)
    overhead = _best_ttft_shift(targets, predicted(x))
    profile = profile_at(x).model_copy(update={"request_overhead_s": overhead})
    return ReplayFit(
        profile=profile,
        fitted=["compute_scale", "step_overhead_s", "request_overhead_s"],
        quality={"evaluations": evaluations, **replay_quality(plans, targets, profile)},
    )


def _shifted_errors(targets: list[Target], vectors: list[np.ndarray], shift: float) -> np.ndarray:
    """Log errors of predicted quantile vectors with every TTFT ``shift`` seconds later."""
    errors = []
    for target, vector in zip(targets, vectors, strict=True):
        moved = vector.copy()
        moved[target.ttft_entries] += shift
        error = np.log(np.maximum(moved, 1e-9) / target.observed)
        errors.append(np.where(np.isfinite(error), error, MISSING_PENALTY))
    return np.concatenate(errors)


def _best_ttft_shift(targets: list[Target], vectors: list[np.ndarray]) -> float:
    """The per-request delay (>= 0) that best fits the measured TTFT quantiles."""
    ceiling = max(float(t.observed[t.ttft_entries].max()) for t in targets)
    found = minimize_scalar(
        lambda r: float(np.sum(_shifted_errors(targets, vectors, r) ** 2)),
        bounds=(0.0, ceiling),
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(found.x)


def _typical_step_s(plans: list[ReplayPlan], profile: VllmProfile) -> float:
    """The median time per output token of the replays on ``profile``: a typical step."""
    tpots = [m.tpot for p in plans for m in request_metrics(replay(p, profile)) if m.ok and m.tpot]
    return float(np.median(tpots)) if tpots else 0.01


def _scaled(
    start: VllmProfile, names: list[str], floors: dict[str, float]
) -> Callable[[np.ndarray], VllmProfile]:
    """``start`` with ``names`` scaled by the exponentials of a vector (none below its floor)."""
    origin = np.array([getattr(start.step, p) for p in names])
    lowest = np.array([floors.get(p, 0.0) for p in names])

    def profile_at(x: np.ndarray) -> VllmProfile:
        values = np.maximum(origin * np.exp(x), lowest)
        update = {n: float(v) for n, v in zip(names, values, strict=True)}
        return start.model_copy(update={"step": start.step.model_copy(update=update)})

    return profile_at


def _log_errors(plans: list[ReplayPlan], targets: list[Target], profile: VllmProfile) -> np.ndarray:
    return np.concatenate(
        [
            target.log_errors(replay(p, at_speed(profile, target.speed)), len(p.specs))
            for p, target in zip(plans, targets, strict=True)
        ]
    )


def replay_uncertainty(
    plans: list[ReplayPlan],
    targets: list[Target],
    profile: VllmProfile,
    names: list[str],
    floors: dict[str, float] | None = None,
) -> Uncertainty:
    """Relative sds of ``names`` at ``profile`` (2·len(names) + 1 simulations): the Jacobian
    of the log quantile errors by central differences of the log coefficients, the residual
    covariance from resampling each trace's requests plus the misfit left at the optimum.
    A coefficient held up by its floor is not varied (and not identified by the data)."""
    floors = floors or {}
    at_floor = [p for p in names if held_by_floor(getattr(profile.step, p), floors.get(p, 0.0))]
    varied = [p for p in names if p not in at_floor]
    at = _scaled(profile, varied, {})
    centre = _log_errors(plans, targets, profile)
    columns = []
    for i in range(len(varied)):
        step = np.zeros(len(varied))
        step[i] = JACOBIAN_STEP
        up, down = _log_errors(plans, targets, at(step)), _log_errors(plans, targets, at(-step))
        columns.append((up - down) / (2 * JACOBIAN_STEP))
    jacobian = np.column_stack(columns) if columns else np.zeros((len(centre), 0))
    misfit = float(centre @ centre) / max(1, len(centre) - len(varied))
    sampling = np.concatenate([bootstrap_sd(t.resampled) for t in targets])
    cov = linearised_cov(jacobian, np.diag(sampling**2 + misfit))
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    result = judged(varied, np.ones(len(varied)), sd)  # log units: sd is already relative
    return Uncertainty(
        {**result.rel_sd, **{p: UNIDENTIFIED_REL_SD for p in at_floor}},
        at_floor + result.not_identifiable,
        correlations(varied, cov),
    )


class Target:
    """The measured quantiles a replay must reproduce, and how to take the same ones from a
    replay: TTFT and TPOT overall (p10/p50/p90), and p50/p90 within terciles of prompt length
    (TTFT) and of load during the decode (TPOT) — so the fit sees how latency grows with
    length and with load, not only its overall spread."""

    def __init__(
        self,
        table: TraceTable,
        replay_plan: ReplayPlan,
        sent_before_s: float | None = None,
        speed: float = 1.0,
    ) -> None:
        """``sent_before_s``: only requests sent before it are fitted; the later ones are
        replayed (they load the server) but their latencies stay unseen (held out).
        ``speed``: the run's engine speed against the profile (see :func:`run_speed`); the
        trace is replayed at it."""
        self.source = table.source
        self.speed = speed
        rows = replay_plan.rows
        seen = np.array(
            [sent_before_s is None or (r.arrival_s or 0.0) < sent_before_s for r in rows]
        )
        lengths = np.array([r.prompt_tokens for r in rows], dtype=float)
        self.seen = np.flatnonzero(seen)
        self.groups = {
            "ttft_s": _terciles(np.where(seen, lengths, np.nan)),
            "tpot_s": _terciles(np.where(seen, _decode_load(rows), np.nan)),
        }
        self.measured = {
            "ttft_s": np.array([_value(r.ttft_s if r.ok else None) for r in rows]),
            "tpot_s": np.array([_value(r.tpot_s if r.ok else None) for r in rows]),
        }
        self.observed = self.vector(self.measured)
        # the TTFT quantiles come first in the vector: 3 overall, 2 per prompt-length group
        self.ttft_entries = slice(
            0, len(OVERALL_LEVELS) + len(GROUP_LEVELS) * len(self.groups["ttft_s"])
        )
        if np.any(~np.isfinite(self.observed)) or np.any(self.observed <= 0):
            raise ConfigError(f"{table.source}: too few served requests with TTFT and TPOT to fit")

    def vector(self, values: dict[str, np.ndarray]) -> np.ndarray:
        parts = []
        for metric in METRICS:
            column = values[metric]
            seen = np.concatenate([np.empty(0, dtype=int), *self.groups[metric]])
            parts.append(_quantiles(column[seen], OVERALL_LEVELS))
            for members in self.groups[metric]:
                parts.append(_quantiles(column[members], GROUP_LEVELS))
        return np.concatenate(parts)

    def resampled(self, rng: np.random.Generator) -> np.ndarray:
        """The log of the target quantiles on a bootstrap resample of the requests (each
        keeps its length and load group); only the fitted (seen) requests."""
        rows = self.seen[rng.integers(0, len(self.seen), len(self.seen))]
        parts = []
        for metric in METRICS:
            column = self.measured[metric]
            parts.append(_quantiles(column[rows], OVERALL_LEVELS))
            for members in self.groups[metric]:
                inside = rows[np.isin(rows, members)]
                parts.append(_quantiles(column[inside], GROUP_LEVELS))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.concatenate(parts))

    def labels(self) -> list[str]:
        names = []
        for metric in METRICS:
            short = metric.removesuffix("_s")
            names += [f"{short}_p{round(q * 100)}" for q in OVERALL_LEVELS]
            for group, _ in enumerate(self.groups[metric], 1):
                names += [f"{short}_g{group}_p{round(q * 100)}" for q in GROUP_LEVELS]
        return names

    def predicted(self, records: list[dict[str, Any]], count: int) -> np.ndarray:
        ttft = np.full(count, np.nan)
        tpot = np.full(count, np.nan)
        for m in request_metrics(records):
            if m.ok:
                ttft[m.req] = _value(m.ttft)
                tpot[m.req] = _value(m.tpot)
        return self.vector({"ttft_s": ttft, "tpot_s": tpot})

    def log_errors(self, records: list[dict[str, Any]], count: int) -> np.ndarray:
        predicted = self.predicted(records, count)
        errors = np.log(np.maximum(predicted, 1e-9) / self.observed)
        return np.where(np.isfinite(errors), errors, MISSING_PENALTY)


def _value(x: float | None) -> float:
    return np.nan if x is None else float(x)


def _quantiles(values: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    present = values[np.isfinite(values)]
    return np.quantile(present, levels) if len(present) else np.full(len(levels), np.nan)


def _terciles(key: np.ndarray) -> list[np.ndarray]:
    """Index sets of the lower, middle and upper third by ``key`` (NaN keys left out)."""
    known = np.isfinite(key)
    low, high = np.quantile(key[known], [1 / 3, 2 / 3]) if known.any() else (0.0, 0.0)
    groups = [
        np.flatnonzero(known & (key <= low)),
        np.flatnonzero(known & (key > low) & (key <= high)),
        np.flatnonzero(known & (key > high)),
    ]
    return [g for g in groups if len(g)]  # equal keys (one prompt length) leave one group


def _decode_load(rows: list[RequestRow]) -> np.ndarray:
    """Per request: how many requests were in flight, on average, while it decoded."""
    spans = np.array([(r.arrival_s or 0.0, (r.arrival_s or 0.0) + (r.e2e_s or 0.0)) for r in rows])
    load = np.full(len(rows), np.nan)
    for i, row in enumerate(rows):
        if row.tpot_s is None or row.ttft_s is None or not row.ok:
            continue
        begin, end = spans[i, 0] + row.ttft_s, spans[i, 1]
        overlap = np.clip(np.minimum(spans[:, 1], end) - np.maximum(spans[:, 0], begin), 0, None)
        load[i] = overlap.sum() / (end - begin) if end > begin else 1.0
    return load


def replay_quality(
    plans: list[ReplayPlan], targets: list[Target], profile: VllmProfile
) -> dict[str, Any]:
    """Per trace: the replay's percent error at each fitted quantile."""
    per_trace = []
    for replay_plan, target in zip(plans, targets, strict=True):
        replayed = replay(replay_plan, at_speed(profile, target.speed))
        predicted = target.predicted(replayed, len(replay_plan.specs))
        errors = 100 * (predicted - target.observed) / target.observed
        per_trace.append(
            {
                "trace": target.source,
                **{
                    f"{label}_err_pct": _rounded(e)
                    for label, e in zip(target.labels(), errors, strict=True)
                },
            }
        )
    worst = max(
        (abs(v) for entry in per_trace for v in entry.values() if isinstance(v, float)),
        default=None,
    )
    return {"quantile_errors": per_trace, "max_abs_err_pct": worst}


def _rounded(value: float) -> float | None:
    return round(float(value), 2) if np.isfinite(value) else None


# --- a run's own engine speed ------------------------------------------------------------------

LOW_LOAD_REQUESTS = 20  # a run's first requests: sent before any queue forms
SPEED_TOLERANCE = 0.002  # |log| of the summed TTFTs' ratio at which a speed is found
SPEED_ITERATIONS = 6


def at_speed(profile: VllmProfile, factor: float) -> VllmProfile:
    """``profile`` with every step cost × ``factor``: the same engine, ``factor`` times slower
    (what an engine probe's equal prefill and decode factors describe)."""
    if factor == 1.0:
        return profile
    scaled = {p: getattr(profile.step, p) * factor for p in STEP_PARAMS}
    return profile.model_copy(update={"step": profile.step.model_copy(update=scaled)})


def run_speed(
    replay_plan: ReplayPlan, profile: VllmProfile, first: int = LOW_LOAD_REQUESTS
) -> float:
    """How much slower (> 1) the engine ran in this trace than ``profile`` says, read only
    from the TTFTs of its ``first`` requests by arrival — sent before a queue forms, so each
    waits at most for the step in progress and then prefills, and its TTFT scales with the
    step costs — never from the run's latencies under load. Their summed measured TTFT over
    their summed replayed TTFT (long prompts weigh most: the step-in-progress wait matters
    least to them) is matched by a secant search on the factor (a few simulations; where
    these requests queue after all, their TTFT grows faster than the factor)."""
    order = sorted(range(len(replay_plan.rows)), key=lambda i: replay_plan.rows[i].arrival_s or 0)
    early = [i for i in order if replay_plan.rows[i].ttft_s][:first]
    if not early:
        raise ConfigError("a run's speed needs requests with a measured TTFT")
    measured = sum(_value(replay_plan.rows[i].ttft_s) for i in early)

    def gap(log_factor: float) -> float:
        records = replay(replay_plan, at_speed(profile, float(np.exp(log_factor))))
        ttft = {m.req: m.ttft for m in request_metrics(records)}
        return float(np.log(sum(_value(ttft.get(i)) for i in early) / measured))

    x0, g0 = 0.0, gap(0.0)
    x1 = -g0  # as if the TTFTs scaled with the factor
    g1 = gap(x1)
    for _ in range(SPEED_ITERATIONS):
        if abs(g1) < SPEED_TOLERANCE or g1 == g0:
            break
        x0, x1, g0 = x1, x1 - g1 * (x1 - x0) / (g1 - g0), g1
        g1 = gap(x1)
    return float(np.exp(x1))


def relative_speeds(plans: list[ReplayPlan], profile: VllmProfile) -> list[float]:
    """Each run's speed (:func:`run_speed`) relative to their geometric mean: the profile a
    fit at these speeds finds describes the runs' mean engine."""
    speeds = np.array([run_speed(p, profile) for p in plans])
    return [float(s) for s in speeds / np.exp(np.mean(np.log(speeds)))]


def run_speed_record(targets: list[Target]) -> dict[str, Any]:
    """What a fit at per-run speeds records: each trace's factor and where it was read."""
    return {
        "read_from": f"summed TTFT of each run's first {LOW_LOAD_REQUESTS} requests (no queue "
        "yet), measured over replayed; relative to the runs' geometric mean",
        "factors": {t.source: t.speed for t in targets},  # unrounded: replays are exact
    }


# --- a start from the trace itself ---------------------------------------------------------------


def initial_step_cost(tables: list[TraceTable], params: tuple[str, ...] = STEP_PARAMS) -> StepCost:
    """A first estimate from the requests that ran alone (their TTFT is one prefill, their
    decode a run of one-sequence steps); all requests if too few did. Coefficients it cannot
    see start at a small positive share, so the replay fit can still move them."""
    rows = [r for t in tables for r in t.served]
    alone = [r for t in tables for r in _isolated(t.served)]
    steps = [s for r in (alone if len(alone) >= 3 else rows) for s in request_steps(r)]
    cost = fit_step_cost(steps, params).cost
    typical_step = float(np.median([s.duration_s / s.steps for s in steps]))
    update = {}
    for param in params:
        feature = STEP_FEATURES[param]
        per_step = [getattr(s, feature) / s.steps for s in steps if getattr(s, feature) > 0]
        if not per_step or param == "prefill_step_s":
            continue
        typical_feature = float(np.median(per_step))
        if getattr(cost, param) * typical_feature < NEGLIGIBLE * typical_step:
            update[param] = START_SHARE * typical_step / typical_feature
    return cost.model_copy(update=update)


def _isolated(rows: list[RequestRow]) -> list[RequestRow]:
    """Requests that overlapped no other request in time."""
    spans = sorted(
        ((r.arrival_s, r.arrival_s + (r.e2e_s or 0.0), r) for r in rows if r.arrival_s is not None),
        key=lambda span: span[0],
    )
    alone = []
    latest_end = -np.inf
    for i, (begin, end, row) in enumerate(spans):
        next_begin = spans[i + 1][0] if i + 1 < len(spans) else np.inf
        if latest_end <= begin and end <= next_begin:
            alone.append(row)
        latest_end = max(latest_end, end)
    return alone


def request_steps(row: RequestRow) -> list[StepRow]:
    """A request served alone as steps: its TTFT is one prefill step (with the cached prefix as
    context), its decode ``output − 1`` one-sequence steps at growing context."""
    assert row.ttft_s is not None and row.e2e_s is not None
    cached = row.cached_tokens or 0
    computed = max(1, row.prompt_tokens - cached)
    steps = [
        StepRow(
            row.ttft_s,
            prefill_steps=1,
            prefill_tokens=computed,
            prefill_attention=computed * (cached + computed),
        )
    ]
    decodes = row.output_tokens - 1
    if decodes > 0 and row.e2e_s > row.ttft_s:
        steps.append(
            StepRow(
                row.e2e_s - row.ttft_s,
                steps=decodes,
                decode_seqs=decodes,
                context_tokens=decodes * row.prompt_tokens + decodes * (decodes + 1) / 2,
            )
        )
    return steps
