"""The direct route: fit the vLLM step cost to isolating step measurements.

The cost is linear in its six coefficients, so each step row is one linear equation. The fit
minimises *relative* error (a 5 ms decode step matters as much as a 2 s prefill), robustly
(soft-L1, so a few outliers do not drag it), with every coefficient >= 0. A coefficient the
measurements cannot tell apart from the others (e.g. ``decode_seq_s`` when every step decoded
one sequence) keeps its starting value and is reported as not identifiable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares, lsq_linear

from calibration.table import STEP_PARAMS, StepRow, predicted_seconds
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


def fit_step_cost(
    rows: list[StepRow], params: tuple[str, ...] = STEP_PARAMS, start: StepCost | None = None
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
    values = _solve(features[:, columns], durations - fixed_part, durations)
    cost = start.model_copy(update={p: float(v) for p, v in zip(fitted, values, strict=True)})
    return StepFit(
        cost=cost,
        fitted=fitted,
        not_identifiable=[p for p in params if p not in fitted],
        quality=step_quality(cost, rows),
    )


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


def _solve(features: np.ndarray, target: np.ndarray, durations: np.ndarray) -> np.ndarray:
    if features.shape[1] == 0:
        return np.zeros(0)
    design = features / durations[:, None]
    scale = np.linalg.norm(design, axis=0)
    design = design / scale
    goal = target / durations
    first = lsq_linear(design, goal, bounds=(0, np.inf)).x
    robust = least_squares(
        lambda x: design @ x - goal,
        np.maximum(first, 1e-12),
        jac=lambda x: design,
        bounds=(0, np.inf),
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
