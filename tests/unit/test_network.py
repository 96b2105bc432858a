"""Latency draws in blocks give every message the delay it got when drawn one at a time."""

from __future__ import annotations

import numpy as np
import pytest

from sim.distributions import (
    EmpiricalLatency,
    FixedLatency,
    GammaLatency,
    LatencyDist,
    LognormalLatency,
)
from sim.network import LatencyDraws, Link, latency_draws

LATENCIES: list[LatencyDist] = [
    LognormalLatency(dist="lognormal", median_ms=0.5, sigma=0.4),
    GammaLatency(dist="gamma", mean_ms=2.0, shape=0.5),
    EmpiricalLatency(dist="empirical", samples_ms=[0.1, 0.7, 3.0]),
    FixedLatency(value_ms=1.5),
]
ASKED = [1, 3, 1, 256, 7, 1, 5000, 1, 100]  # single deltas, unit chunks, more than a block


def drawn(draws: LatencyDraws, asked: list[int]) -> np.ndarray:
    return np.concatenate([[draws.one()] if n == 1 else draws.many(n) for n in asked])


@pytest.mark.parametrize("latency", LATENCIES, ids=lambda latency: latency.dist)
def test_block_draws_are_the_one_at_a_time_draws(latency: LatencyDist) -> None:
    blocks = drawn(LatencyDraws(latency, np.random.default_rng(7), block=4096), ASKED)
    rng = np.random.default_rng(7)
    one_by_one = np.concatenate([latency.sample_s(rng, n) for n in ASKED])
    assert np.array_equal(blocks, one_by_one)


def test_servers_with_one_distribution_share_its_draws() -> None:
    same = LATENCIES[0].model_copy()
    draws = latency_draws({"a": LATENCIES[0], "b": same}, np.random.default_rng(1))
    assert draws["a"] is draws["b"] and draws["a"].block > 1


def test_servers_with_different_distributions_draw_in_the_order_asked() -> None:
    lognormal, gamma = LATENCIES[0], LATENCIES[1]
    draws = latency_draws({"a": lognormal, "b": gamma}, np.random.default_rng(3))
    got = [draws["a"].one(), *draws["b"].many(2), draws["a"].one()]
    rng = np.random.default_rng(3)
    expected = [
        *lognormal.sample_s(rng, 1),
        *gamma.sample_s(rng, 2),
        *lognormal.sample_s(rng, 1),
    ]
    assert got == expected


def test_an_ideal_link_draws_nothing() -> None:
    rng = np.random.default_rng(5)
    link = Link(LatencyDraws(FixedLatency(value_ms=0), rng, block=4096))
    assert link.delay() == 0.0 and not link.delays(3).any()
    assert rng.random() == np.random.default_rng(5).random()
