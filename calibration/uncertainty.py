"""How firmly a fit's data pin each step-cost parameter down.

A fit must not hand back a cost its data cannot see as if it were measured. Each fitted
parameter gets a 1-sigma *relative* standard deviation from the fit's Jacobian (the
least-squares problem linearised at the optimum: cov = A Σ Aᵀ with A = (JᵀJ)⁻¹Jᵀ and Σ the
residuals' covariance), and is *not identifiable* when the data cannot tell it from zero at
two sigma (relative sd above 0.5) — unless even its value plus two sigma would be a
negligible share of a step, in which case the data do identify it: as negligible. Directions
the data do not see at all (collinear features: Argonne's prefill and decode both scale with
batch × length) come out with a huge sd and are flagged, instead of one of them landing at
1e-16 with a clean bill.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

IDENTIFIED_REL_SD = 0.5  # above this the 2-sigma interval reaches zero
UNIDENTIFIED_REL_SD = 1.0  # the cap stored for a parameter the data do not pin down
NEGLIGIBLE_SHARE = 0.01  # value + 2 sigma below 1 % of a typical step: identified as negligible
CONDITION_LIMIT = 1e-12  # eigenvalues of JᵀJ below this share of the largest: unseen directions


@dataclass(frozen=True)
class Uncertainty:
    rel_sd: dict[str, float]  # capped at UNIDENTIFIED_REL_SD
    not_identifiable: list[str]
    correlation: dict[str, dict[str, float]] = field(default_factory=dict)


def linearised_cov(jacobian: np.ndarray, residual_cov: np.ndarray | float) -> np.ndarray:
    """Covariance of the parameters of a least-squares fit with residual Jacobian ``jacobian``
    (rows: residuals, columns: parameters, in the parameters' own units) and residual
    covariance ``residual_cov`` (a matrix, or one variance for independent residuals). A
    parameter the residuals do not depend on has an infinite variance."""
    norms = np.linalg.norm(jacobian, axis=0)
    seen = norms > 0
    cov = np.zeros((jacobian.shape[1], jacobian.shape[1]))
    cov[~seen, ~seen] = np.inf
    if not seen.any():
        return cov
    scaled = jacobian[:, seen] / norms[seen]
    eigenvalues, eigenvectors = np.linalg.eigh(scaled.T @ scaled)
    limit = max(float(eigenvalues.max()), 1e-300) * CONDITION_LIMIT
    inverse = eigenvectors @ np.diag(1 / np.maximum(eigenvalues, limit)) @ eigenvectors.T
    if np.ndim(residual_cov) == 0:
        inner = float(residual_cov) * inverse
    else:
        sandwich = inverse @ scaled.T
        inner = sandwich @ np.asarray(residual_cov) @ sandwich.T
    cov[np.ix_(seen, seen)] = inner / np.outer(norms[seen], norms[seen])
    return cov


def linearised_sd(jacobian: np.ndarray, residual_cov: np.ndarray | float) -> np.ndarray:
    """The standard deviations of :func:`linearised_cov`."""
    return np.sqrt(np.clip(np.diag(linearised_cov(jacobian, residual_cov)), 0, None))


def correlations(names: list[str], cov: np.ndarray) -> dict[str, dict[str, float]]:
    """Pairwise correlations of the parameters with finite variances: parameters that trade
    off (base and context cost both lengthen every decode step) are each uncertain while
    their sum is not, so an interval must draw them together."""
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    finite = [i for i in range(len(names)) if np.isfinite(sd[i]) and sd[i] > 0]
    return {
        names[i]: {names[j]: round(float(cov[i, j] / (sd[i] * sd[j])), 3) for j in finite if j != i}
        for i in finite
    }


def held_by_floor(value: float, floor: float) -> bool:
    """Whether a fitted value sits on its (positive) floor: the bound holds it, not the data."""
    return floor > 0 and value <= floor * (1 + 1e-4)


def typical_shares(jacobian: np.ndarray) -> np.ndarray:
    """Per column of a relative-residual Jacobian: its median over the rows it enters — the
    share of a typical measurement each unit of the parameter makes."""
    return np.array(
        [np.median(column[column > 0]) if np.any(column > 0) else 0.0 for column in jacobian.T]
    )


def judged(
    names: list[str],
    values: np.ndarray,
    sd: np.ndarray,
    shares: np.ndarray | None = None,
) -> Uncertainty:
    """Relative sds (capped) and the parameters the data do not identify. ``shares``: each
    parameter's typical share of a step per unit of its value (its feature over the step's
    duration), for the negligibility test; None when every value is far from zero."""
    rel_sd: dict[str, float] = {}
    flagged: list[str] = []
    for i, name in enumerate(names):
        value = abs(float(values[i]))
        relative = float(sd[i]) / value if value > 0 else np.inf
        negligible = (
            shares is not None
            and np.isfinite(sd[i])
            and (value + 2 * float(sd[i])) * float(shares[i]) < NEGLIGIBLE_SHARE
        )
        if relative > IDENTIFIED_REL_SD and not negligible:
            flagged.append(name)
        rel_sd[name] = round(min(relative, UNIDENTIFIED_REL_SD), 4)
    return Uncertainty(rel_sd, flagged)


def choice_sd(
    name: str, chosen: float, costs: dict[float, float], residuals: int, grid: float
) -> Uncertainty:
    """A parameter chosen among a few values, each with its own search (``costs``: the best
    sum of squared log errors per value, over ``residuals`` residuals): the sd is half the
    spread of the values within one misfit variance of the best cost (a likelihood-ratio
    reading), at least half the ``grid`` step; flagged when every value fits about as well."""
    best = costs[chosen]
    close = [value for value, cost in costs.items() if cost <= best + best / max(1, residuals)]
    spread = max((max(close) - min(close)) / 2, grid / 2)
    relative = spread / abs(chosen) if chosen else np.inf
    flagged = [name] if len(close) == len(costs) and len(costs) > 1 else []
    return Uncertainty({name: round(min(relative, UNIDENTIFIED_REL_SD), 4)}, flagged)


def merged(*parts: Uncertainty) -> Uncertainty:
    return Uncertainty(
        {k: v for part in parts for k, v in part.rel_sd.items()},
        [name for part in parts for name in part.not_identifiable],
        {k: v for part in parts for k, v in part.correlation.items()},
    )


def bootstrap_sd(draw: Callable[[np.random.Generator], np.ndarray], draws: int = 200) -> np.ndarray:
    """A robust sd (1.4826 × the median absolute deviation) of each entry of a statistic over
    ``draws`` bootstrap resamples (``draw`` computes it on one resample of the rows). Robust,
    because a queue makes some quantiles bimodal under resampling."""
    rng = np.random.default_rng(0)
    values = np.array([draw(rng) for _ in range(draws)])
    values = np.where(np.isfinite(values), values, np.nan)
    centre = np.nanmedian(values, axis=0)
    return np.nan_to_num(1.4826 * np.nanmedian(np.abs(values - centre), axis=0))
