"""Where a sweep looks: the points of a grid, a random sample or a Latin hypercube.

A point maps each axis path to one value. Random and Latin-hypercube draws are numbers in
[0, 1) per axis, mapped onto each axis: a range scales them (linearly or in log space), a
list of values picks the value whose stratum they fall into, so both methods work on
categorical axes too (a Latin hypercube then visits every value about equally often).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from sim.sweep.spec import Axis, AxisRange, GridMethod, LhsMethod, Method, RandomMethod

Point = dict[str, Any]


def sample_points(axes: dict[str, Axis], method: Method) -> list[Point]:
    paths = list(axes)
    if isinstance(method, GridMethod):
        columns = [grid_values(axes[path]) for path in paths]
        return [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*columns)]
    unit = _unit_draws(method, len(paths))
    return [
        {path: value_at(axes[path], float(u)) for path, u in zip(paths, row, strict=True)}
        for row in unit
    ]


def _unit_draws(method: RandomMethod | LhsMethod, dimensions: int) -> np.ndarray:
    rng = np.random.default_rng(method.seed)
    if isinstance(method, LhsMethod):
        from scipy.stats import qmc  # a second to import: only Latin hypercubes pay it

        return qmc.LatinHypercube(d=dimensions, rng=rng).random(method.n)
    return rng.random((method.n, dimensions))


def grid_values(axis: Axis) -> list[Any]:
    if not isinstance(axis, AxisRange):
        return list(axis)
    assert axis.num is not None  # the spec requires num on grid ranges
    if axis.log:
        values = np.geomspace(axis.low, axis.high, axis.num)
    else:
        values = np.linspace(axis.low, axis.high, axis.num)
    return list(dict.fromkeys(_plain(axis, v) for v in values))  # integers may repeat


def value_at(axis: Axis, u: float) -> Any:
    """The axis value for a draw ``u`` in [0, 1)."""
    if not isinstance(axis, AxisRange):
        return axis[min(int(u * len(axis)), len(axis) - 1)]
    if axis.integer and not axis.log:  # every integer in [low, high] equally likely
        return min(int(np.floor(axis.low + u * (axis.high - axis.low + 1))), int(axis.high))
    if axis.log:
        value = float(np.exp(np.log(axis.low) + u * (np.log(axis.high) - np.log(axis.low))))
    else:
        value = axis.low + u * (axis.high - axis.low)
    return _plain(axis, value)


def _plain(axis: AxisRange, value: float) -> int | float:
    return round(float(value)) if axis.integer else float(value)
