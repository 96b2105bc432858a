"""Latency distributions (network delay, API inter-token gaps, TTFT jitter) and the api profile.

Each sample set is fitted by maximum likelihood as a lognormal and a gamma; the Kolmogorov–
Smirnov distance says how well each matches. The best parametric fit is kept when its KS
distance is small; otherwise the measured samples themselves (an empirical distribution of
their quantiles) are — a model is no better than the data it would replace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from scipy.optimize import least_squares

from calibration.table import TraceTable
from sim.distributions import (
    EmpiricalLatency,
    FixedLatency,
    GammaLatency,
    LatencyDist,
    LognormalLatency,
)
from sim.errors import ConfigError

MAX_KS_FOR_PARAMETRIC = 0.05
EMPIRICAL_POINTS = 101  # quantiles kept when the samples themselves become the distribution
MIN_SAMPLES = 5
FLOOR_S = 1e-6  # zero gaps (two deltas in one read) would break a lognormal fit


@dataclass
class DistFit:
    dist: LatencyDist
    ks: dict[str, float] = field(default_factory=dict)

    def quality(self) -> dict[str, Any]:
        return {"chosen": self.dist.dist, "ks": self.ks}


def fit_latency(samples_s: list[float] | np.ndarray, what: str) -> DistFit:
    data = np.maximum(np.asarray(samples_s, dtype=float), FLOOR_S)
    if len(data) < MIN_SAMPLES:
        raise ConfigError(f"{what}: {len(data)} samples are too few to fit a distribution")
    shape, _, scale = stats.lognorm.fit(data, floc=0)
    lognormal = LognormalLatency(dist="lognormal", median_ms=scale * 1e3, sigma=shape)
    k, _, theta = stats.gamma.fit(data, floc=0)
    gamma = GammaLatency(dist="gamma", mean_ms=k * theta * 1e3, shape=k)
    ks = {
        "lognormal": float(stats.kstest(data, "lognorm", (shape, 0, scale)).statistic),
        "gamma": float(stats.kstest(data, "gamma", (k, 0, theta)).statistic),
    }
    levels = np.linspace(0, 1, min(EMPIRICAL_POINTS, len(data)))
    empirical = EmpiricalLatency(
        dist="empirical", samples_ms=(np.quantile(data, levels) * 1e3).tolist()
    )
    ks["empirical"] = float(stats.ks_2samp(data, np.asarray(empirical.samples_ms) / 1e3).statistic)
    best = min(("lognormal", "gamma"), key=lambda name: ks[name])
    chosen: LatencyDist = (
        (lognormal if best == "lognormal" else gamma)
        if ks[best] <= MAX_KS_FOR_PARAMETRIC
        else empirical
    )
    return DistFit(chosen, ks)


# --- the network --------------------------------------------------------------------------


def fit_network(tables: list[TraceTable]) -> tuple[LatencyDist, dict[str, Any]] | None:
    """The client -> server delay, from per-request upload delays where the source has them,
    else from the mean gap between client-observed and server-reported TTFT (``/metrics``).

    Client TTFT = upload + server TTFT + first delta's download, so the gap is two one-way
    delays; with only totals, only its mean is known and the delay is taken as fixed.
    """
    delays = [
        r.network_delay_s for t in tables for r in t.requests if r.network_delay_s is not None
    ]
    if len(delays) >= MIN_SAMPLES:
        fit = fit_latency(delays, "network delay")
        return fit.dist, {
            "source": "per-request upload delays",
            "samples": len(delays),
            **fit.quality(),
        }
    gaps = [g for g in (_mean_ttft_gap(t) for t in tables) if g is not None]
    if not gaps:
        return None
    one_way_ms = max(0.0, float(np.mean(gaps)) / 2 * 1e3)
    return FixedLatency(value_ms=one_way_ms), {
        "source": "client TTFT mean - server TTFT mean (/metrics), halved",
        "gap_ms": float(np.mean(gaps)) * 1e3,
    }


def _mean_ttft_gap(table: TraceTable) -> float | None:
    totals = table.server_totals
    count = totals.get("vllm:time_to_first_token_seconds_count", 0.0)
    client = [r.ttft_s for r in table.served if r.ttft_s is not None]
    if count <= 0 or not client:
        return None
    server_mean = totals["vllm:time_to_first_token_seconds_sum"] / count
    return float(np.mean(client)) - server_mean


# --- the api profile --------------------------------------------------------------------------


@dataclass
class ApiFit:
    ttft_base_s: float
    ttft_per_uncached_token_s: float
    ttft_jitter: LatencyDist | None
    itl: LatencyDist
    quality: dict[str, Any]


def fit_api(tables: list[TraceTable]) -> ApiFit:
    """TTFT = base + per-token·uncached prompt + jitter (>= 0); ITLs from the measured gaps
    (or, when a source has no per-token times, each request's mean gap, its TPOT)."""
    rows = [r for t in tables for r in t.served]
    if len(rows) < MIN_SAMPLES:
        raise ConfigError(f"an api profile needs >= {MIN_SAMPLES} served requests, got {len(rows)}")
    uncached = np.array([r.prompt_tokens - (r.cached_tokens or 0) for r in rows], dtype=float)
    ttft = np.array([r.ttft_s for r in rows], dtype=float)
    scale = float(np.median(ttft))
    line = least_squares(
        lambda x: (x[0] + x[1] * uncached - ttft) / scale,
        [scale, 0.0],
        bounds=([0, 0], [np.inf, np.inf]),
        loss="soft_l1",
        f_scale=0.1,
    ).x
    residual = ttft - (line[0] + line[1] * uncached)
    floor = float(np.quantile(residual, 0.01))
    base = max(0.0, line[0] + floor)
    jitter = fit_latency(residual - floor, "TTFT jitter")
    token_times = all(t.token_times for t in tables)
    gaps = (
        [g for r in rows for g in (r.itls_s or ())]
        if token_times
        else [r.tpot_s for r in rows if r.tpot_s is not None]
    )
    itl = fit_latency(gaps, "inter-token latency")
    return ApiFit(
        ttft_base_s=base,
        ttft_per_uncached_token_s=float(line[1]),
        ttft_jitter=jitter.dist,
        itl=itl.dist,
        quality={
            "requests": len(rows),
            "ttft_r2": _r2(ttft, base + line[1] * uncached + float(np.mean(residual - floor))),
            "ttft_jitter": jitter.quality(),
            "itl": {**itl.quality(), "from": "ITLs" if token_times else "per-request TPOT"},
        },
    )


def _r2(measured: np.ndarray, predicted: np.ndarray) -> float | None:
    total = float(np.sum((measured - measured.mean()) ** 2))
    return 1 - float(np.sum((measured - predicted) ** 2)) / total if total > 0 else None
