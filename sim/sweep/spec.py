"""The sweep file: a base scenario, axes over any of its fields, a sampling method.

Like the scenario file it forbids unknown keys and picks the method by ``kind``, so a typo
is an error naming the field instead of a sweep that silently varies nothing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from sim.errors import validated
from sim.metrics import summarize
from sim.scenario import read_yaml
from sim.sweep.replicate import DEFAULT_LEVEL

AXIS_PATH = re.compile(r"[\w-]+(\.[\w-]+)*")

DEFAULT_METRICS = [
    "ttft_s.p50",
    "ttft_s.p90",
    "tpot_s.p90",
    "stall_s.p90",
    "e2e_s.p90",
    "tps.p50",
    "throughput_tok_s",
    "cost_usd.per_request",
    "failed_requests",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AxisRange(Strict):
    """A continuous axis: grid takes ``num`` evenly spaced values, random and lhs sample it."""

    low: float
    high: float
    num: int | None = Field(None, ge=2, description="grid steps (grid only)")
    log: bool = Field(False, description="space values (or draws) evenly in log scale")
    integer: bool = Field(False, description="round every value to an integer")

    @model_validator(mode="after")
    def _ordered(self) -> AxisRange:
        if self.high <= self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self


AxisValues = Annotated[list[Any], Field(min_length=1)]
Axis = Annotated[
    Annotated[AxisValues, Tag("values")] | Annotated[AxisRange, Tag("range")],
    # a list is values, a mapping a range: errors then speak of the form the user wrote
    Discriminator(lambda axis: "range" if isinstance(axis, dict | AxisRange) else "values"),
]


class GridMethod(Strict):
    """Every combination of the axes' values."""

    kind: Literal["grid"] = "grid"


class RandomMethod(Strict):
    """``n`` points drawn independently and uniformly from the axes."""

    kind: Literal["random"]
    n: int = Field(ge=1)
    seed: int = 0


class LhsMethod(Strict):
    """``n`` points of a Latin hypercube: every axis is cut into ``n`` strata, each hit once."""

    kind: Literal["lhs"]
    n: int = Field(ge=1)
    seed: int = 0


Method = Annotated[GridMethod | RandomMethod | LhsMethod, Field(discriminator="kind")]


class SweepSpec(Strict):
    kind: Literal["sweep"]
    name: str = "sweep"
    scenario: str | dict[str, Any] = Field(
        description="the base scenario: a path (relative to the sweep file) or a mapping"
    )
    overrides: list[str] = Field(
        default_factory=list, description="--set style changes to the base, before the axes"
    )
    axes: dict[str, Axis] = Field(min_length=1, description="dotted scenario path -> values")
    method: Method = Field(default_factory=GridMethod)
    replications: int = Field(3, ge=1, description="runs per point, each with its own seed")
    confidence: float = Field(
        DEFAULT_LEVEL, gt=0, lt=1, description="level of the replications' prediction intervals"
    )
    metrics: list[str] = Field(default_factory=lambda: list(DEFAULT_METRICS), min_length=1)
    invalid_points: Literal["error", "skip"] = Field(
        "error", description="a point the scenario rejects: stop, or leave it out"
    )

    @field_validator("axes")
    @classmethod
    def _paths(cls, axes: dict[str, Axis]) -> dict[str, Axis]:
        for path in axes:
            if not AXIS_PATH.fullmatch(path):
                raise ValueError(f"{path!r} is not a dotted scenario path")
        return axes

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str]) -> list[str]:
        for metric in metrics:
            check_metric(metric)
        if len(set(metrics)) != len(metrics):
            raise ValueError("metrics are listed twice")
        return metrics

    @model_validator(mode="after")
    def _grid_ranges_have_steps(self) -> SweepSpec:
        if isinstance(self.method, GridMethod):
            for path, axis in self.axes.items():
                if isinstance(axis, AxisRange) and axis.num is None:
                    raise ValueError(f"axis {path}: a range needs num (steps) for a grid")
        return self


def check_metric(metric: str) -> None:
    """A metric is a dotted path to a number in the ``simulate --json`` summary."""
    node: Any = summarize([])
    for part in metric.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"unknown metric {metric!r} ({_choices(node)})")
        node = node[part]
    if isinstance(node, dict):
        raise ValueError(f"metric {metric!r} is a group ({_choices(node)})")
    if not (node is None or isinstance(node, int | float)):
        raise ValueError(f"metric {metric!r} is not a number")


def _choices(node: Any) -> str:
    if not isinstance(node, dict):
        return "no fields below it"
    numeric = [key for key, value in node.items() if not isinstance(value, str) and key != "agents"]
    return "one of: " + ", ".join(numeric)


# union members pydantic names in error locations ("dict[str,any]" and the like drop anyway)
SWEEP_TAGS = frozenset({"grid", "random", "lhs", "values", "range", "str"})


def parse_sweep(data: Any, source: str) -> SweepSpec:
    return validated(SweepSpec, data, source, "sweep", SWEEP_TAGS)


def read_sweep(path: str | Path) -> SweepSpec:
    return parse_sweep(read_yaml(path), str(path))
