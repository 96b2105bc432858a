"""Distributions a scenario can name: token lengths (in tokens) and latencies (in ms).

Each spec is a pydantic model selected by its ``dist`` field and knows how to draw from a
numpy ``Generator``; drawing many values at once keeps the simulator vectorised.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- token counts -----------------------------------------------------------------------


class FixedTokens(_Spec):
    dist: Literal["fixed"] = "fixed"
    value: int = Field(ge=1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)


class UniformTokens(_Spec):
    dist: Literal["uniform"]
    low: int = Field(ge=1)
    high: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> UniformTokens:
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.low, self.high + 1, size=n)


class NormalTokens(_Spec):
    dist: Literal["normal"]
    mean: float = Field(gt=0)
    std: float = Field(ge=0)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.maximum(1, np.rint(rng.normal(self.mean, self.std, n))).astype(np.int64)


class LognormalTokens(_Spec):
    dist: Literal["lognormal"]
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        draws = rng.lognormal(np.log(self.median), self.sigma, n)
        return np.maximum(1, np.rint(draws)).astype(np.int64)


class EmpiricalTokens(_Spec):
    dist: Literal["empirical"]
    values: list[int] = Field(min_length=1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(np.asarray(self.values, dtype=np.int64), size=n)


TokenDist = Annotated[
    FixedTokens | UniformTokens | NormalTokens | LognormalTokens | EmpiricalTokens,
    Field(discriminator="dist"),
]


# --- latencies (milliseconds in the file, seconds when drawn) -----------------------------


class FixedLatency(_Spec):
    dist: Literal["fixed"] = "fixed"
    value_ms: float = Field(ge=0)

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value_ms / 1e3)

    @property
    def mean_s(self) -> float:
        return self.value_ms / 1e3


class LognormalLatency(_Spec):
    dist: Literal["lognormal"]
    median_ms: float = Field(gt=0)
    sigma: float = Field(ge=0)

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.lognormal(np.log(self.median_ms / 1e3), self.sigma, n)

    @property
    def mean_s(self) -> float:
        return float(self.median_ms / 1e3 * np.exp(self.sigma**2 / 2))


class GammaLatency(_Spec):
    """Gamma with a given mean and shape k (coefficient of variation 1/sqrt(k))."""

    dist: Literal["gamma"]
    mean_ms: float = Field(gt=0)
    shape: float = Field(gt=0)

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.gamma(self.shape, self.mean_ms / 1e3 / self.shape, n)

    @property
    def mean_s(self) -> float:
        return self.mean_ms / 1e3


class EmpiricalLatency(_Spec):
    """Resample measured latencies (e.g. from calibration), in ms."""

    dist: Literal["empirical"]
    samples_ms: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _non_negative(self) -> EmpiricalLatency:
        if min(self.samples_ms) < 0:
            raise ValueError("samples_ms must be >= 0")
        return self

    def sample_s(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(np.asarray(self.samples_ms) / 1e3, size=n)

    @property
    def mean_s(self) -> float:
        return float(np.mean(self.samples_ms) / 1e3)


LatencyDist = Annotated[
    FixedLatency | LognormalLatency | GammaLatency | EmpiricalLatency,
    Field(discriminator="dist"),
]
