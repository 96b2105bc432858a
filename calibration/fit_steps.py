"""The direct route: fit the vLLM step cost to isolating step measurements.

The cost is linear in its six coefficients, so each step row is one linear equation. The fit
minimises *relative* error (a 5 ms decode step matters as much as a 2 s prefill), robustly
(soft-L1, so a few outliers do not drag it), with every coefficient >= 0 or >= a floor the
hardware sets (e.g. the FLOPs of a prefill token at the chip's peak). A coefficient the
measurements cannot tell apart from the others at all (e.g. ``decode_seq_s`` when every step
decoded one sequence) keeps its starting value; every fitted one gets a relative sd from the
fit's Jacobian, and those the data do not pin down are reported as not identifiable
(:mod:`calibration.uncertainty`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares, lsq_linear

from calibration.table import STEP_PARAMS, StepRow, predicted_seconds
from calibration.uncertainty import (
    UNIDENTIFIED_REL_SD,
    Uncertainty,
    correlations,
    held_by_floor,
    judged,
    linearised_cov,
    typical_shares,
)
from sim.errors import ConfigError
from sim.profile import StepCost

RELATIVE_OUTLIER = 0.05  # soft-L1 scale: residuals beyond 5 % count linearly, not squared
RANK_TOLERANCE = 1e-7
# Which coefficient gives way when measurements cannot separate them: the per-sequence cost
# needs steps of different batch sizes, so it goes first (a run of one-sequence decode steps
# and its prefill then still tell base_s and prefill_step_s apart).
KEEP_ORDER = (
    "base_s",
    "prefill_token_s",
    "prefill_attention_s",
    "context_token_s",
    "prefill_step_s",
    "decode_seq_s",
)


@dataclass
class StepFit:
    cost: StepCost
    fitted: list[str]
    not_identifiable: list[str]
    quality: dict[str, Any] = field(default_factory=dict)
    rel_sd: dict[str, float] = field(default_factory=dict)  # 1 sigma, per parameter in params
    correlation: dict[str, dict[str, float]] = field(default_factory=dict)
    at_floor: list[str] = field(default_factory=list)  # held up by its floor, not by the data


def fit_step_cost(
    rows: list[StepRow],
    params: tuple[str, ...] = STEP_PARAMS,
    start: StepCost | None = None,
    floors: dict[str, float] | None = None,
) -> StepFit:
    if not rows:
        raise ConfigError("no step measurements to fit (this source has request rows only)")
    unknown = [p for p in params if p not in STEP_PARAMS]
    if unknown:
        raise ConfigError(
            f"unknown step parameter(s) {', '.join(unknown)} (known: {', '.join(STEP_PARAMS)})"
        )
    start = start or StepCost(base_s=0.0)
    features = np.array([r.features() for r in rows])
    durations = np.array([r.duration_s for r in rows])
    if np.any(durations <= 0):
        bad = rows[int(np.argmax(durations <= 0))]
        raise ConfigError(f"{bad.where}: a step duration must be > 0")
    fixed = [p for p in STEP_PARAMS if p not in params]
    fixed_part = (
        features[:, [STEP_PARAMS.index(p) for p in fixed]]
        @ np.array([getattr(start, p) for p in fixed])
        if fixed
        else np.zeros(len(rows))
    )
    ordered = [p for p in KEEP_ORDER if p in params]
    columns = _identifiable(features, durations, [STEP_PARAMS.index(p) for p in ordered])
    fitted = [STEP_PARAMS[c] for c in columns]
    lower = np.array([(floors or {}).get(p, 0.0) for p in fitted])
    values = _solve(features[:, columns], durations - fixed_part, durations, lower)
    cost = start.model_copy(update={p: float(v) for p, v in zip(fitted, values, strict=True)})
    at_floor = [
        p for p, v, f in zip(fitted, values, lower, strict=True) if held_by_floor(float(v), f)
    ]
    free = [c for c, p in zip(columns, fitted, strict=True) if p not in at_floor]
    uncertainty = _uncertainty(cost, features, durations, free)
    unseen = [p for p in params if p not in fitted]
    return StepFit(
        cost=cost,
        fitted=fitted,
        not_identifiable=[p for p in params if p in unseen or p in at_floor]
        + [p for p in uncertainty.not_identifiable if p not in at_floor],
        quality=step_quality(cost, rows),
        rel_sd={p: uncertainty.rel_sd.get(p, UNIDENTIFIED_REL_SD) for p in params},
        correlation=uncertainty.correlation,
        at_floor=at_floor,
    )


def _uncertainty(
    cost: StepCost, features: np.ndarray, durations: np.ndarray, columns: list[int]
) -> Uncertainty:
    """The Jacobian of the relative residuals is the design scaled by the durations; their
    variance is the misfit's (so a model that fits ±30 % gets wide parameters)."""
    names = [STEP_PARAMS[c] for c in columns]
    values = np.array([getattr(cost, p) for p in names])
    jacobian = features[:, columns] / durations[:, None]
    relative = features @ np.array([getattr(cost, p) for p in STEP_PARAMS]) / durations - 1
    variance = float(relative @ relative) / max(1, len(durations) - len(columns))
    cov = linearised_cov(jacobian, variance)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    verdict = judged(names, values, sd, typical_shares(jacobian))
    return Uncertainty(verdict.rel_sd, verdict.not_identifiable, correlations(names, cov))


def _identifiable(features: np.ndarray, durations: np.ndarray, candidates: list[int]) -> list[int]:
    """Columns, in the given order, that each add information (a rank increase)."""
    scaled = features / durations[:, None]
    norms = np.linalg.norm(scaled, axis=0)
    kept: list[int] = []
    for column in candidates:
        if norms[column] == 0:
            continue
        trial = scaled[:, [*kept, column]] / norms[[*kept, column]]
        singular = np.linalg.svd(trial, compute_uv=False)
        if singular[-1] > RANK_TOLERANCE * singular[0]:
            kept.append(column)
    return kept


def _solve(
    features: np.ndarray, target: np.ndarray, durations: np.ndarray, lower: np.ndarray
) -> np.ndarray:
    if features.shape[1] == 0:
        return np.zeros(0)
    design = features / durations[:, None]
    scale = np.linalg.norm(design, axis=0)
    design = design / scale
    goal = target / durations
    bounds = (lower * scale, np.inf)
    first = lsq_linear(design, goal, bounds=bounds).x
    robust = least_squares(
        lambda x: design @ x - goal,
        np.maximum(first, bounds[0] + 1e-12),
        jac=lambda x: design,
        bounds=bounds,
        loss="soft_l1",
        f_scale=RELATIVE_OUTLIER,
    )
    return np.asarray(robust.x / scale)


def step_quality(cost: StepCost, rows: list[StepRow]) -> dict[str, Any]:
    """R² and relative-error quantiles of ``cost`` on ``rows`` (also used for held-out rows)."""
    measured = np.array([r.duration_s for r in rows])
    predicted = np.array([predicted_seconds(cost, r) for r in rows])
    relative = (predicted - measured) / measured
    total = float(np.sum((measured - measured.mean()) ** 2))
    worst = int(np.argmax(np.abs(relative)))
    return {
        "rows": len(rows),
        "r2": 1 - float(np.sum((predicted - measured) ** 2)) / total if total > 0 else None,
        "rel_err_p50": float(np.median(np.abs(relative))),
        "rel_err_p90": float(np.quantile(np.abs(relative), 0.9)),
        "rel_err_max": float(abs(relative[worst])),
        "worst_row": rows[worst].where,
        "bias": float(np.median(relative)),
    }
