"""Network delay between the client (the orchestrator) and a server.

Every message — a request upload, each streamed delta — gets its own latency draw; deltas
of one stream arrive in order (TCP), so a delta never overtakes the one before it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from sim.distributions import FixedLatency, LatencyDist

DRAW_BLOCK = 4096  # latencies drawn at once from a stream that serves one distribution


class LatencyDraws:
    """Latencies of one distribution from one random stream, drawn ``block`` at a time.

    A numpy ``Generator`` draws a block as the same sequence as one value at a time, so a
    block changes no draw — as long as nothing else draws from the stream in between: a
    stream shared by several distributions needs ``block=1`` (each draw as asked)."""

    def __init__(self, latency: LatencyDist, rng: np.random.Generator, block: int) -> None:
        self.latency = latency
        self.rng = rng
        self.block = block
        self._drawn = np.empty(0)
        self._next = 0

    def one(self) -> float:
        if self._next == len(self._drawn):
            self._refill(1)
        value = float(self._drawn[self._next])
        self._next += 1
        return value

    def many(self, n: int) -> np.ndarray:
        if self._next + n > len(self._drawn):
            self._refill(n)
        values = self._drawn[self._next : self._next + n]
        self._next += n
        return values

    def _refill(self, n: int) -> None:
        """Room for ``n`` more: the values not used yet, then at least a block more."""
        rest = self._drawn[self._next :]
        fresh = self.latency.sample_s(self.rng, max(self.block, n - len(rest)))
        self._drawn = np.concatenate((rest, fresh)) if len(rest) else fresh
        self._next = 0


def latency_draws(
    latencies: Mapping[str, LatencyDist], rng: np.random.Generator
) -> dict[str, LatencyDraws]:
    """Each server's latency draws from the run's network stream: drawn in blocks when
    every server has the same distribution (one sequence whoever draws), else one by one
    in the order asked, as the stream would give them."""
    first = next(iter(latencies.values()), None)
    if first is not None and all(latency == first for latency in latencies.values()):
        return dict.fromkeys(latencies, LatencyDraws(first, rng, DRAW_BLOCK))
    return {name: LatencyDraws(latency, rng, 1) for name, latency in latencies.items()}


class Link:
    def __init__(self, draws: LatencyDraws) -> None:
        self.draws = draws
        latency = draws.latency
        self.ideal = isinstance(latency, FixedLatency) and latency.value_ms == 0

    def delay(self) -> float:
        return 0.0 if self.ideal else self.draws.one()

    def delays(self, n: int) -> np.ndarray:
        return np.zeros(n) if self.ideal else self.draws.many(n)


class DeltaStream:
    """Client arrival times of one call's streamed tokens (one delta per token)."""

    def __init__(self, link: Link, keep: bool) -> None:
        self.link = link
        self.keep = keep  # keep every arrival time (the user-facing answer) or just the count
        self.count = 0
        self.last = -math.inf
        self.arrivals: list[np.ndarray] = []

    def add(self, server_times: np.ndarray) -> float:
        """Arrival time of the last of these tokens."""
        count = len(server_times)
        if count == 0:
            return self.last
        arrivals = server_times + self.link.delays(count)
        self.count += count
        if not self.keep:  # only the last arrival matters: the latest of these and before
            latest = float(np.maximum.reduce(arrivals))
            if latest > self.last:
                self.last = latest
            return self.last
        if arrivals[0] < self.last:
            arrivals[0] = self.last
        np.maximum.accumulate(arrivals, out=arrivals)
        self.last = float(arrivals[-1])
        self.arrivals.append(arrivals)
        return self.last

    def all_arrivals(self) -> list[float]:
        return np.concatenate(self.arrivals).tolist() if self.arrivals else []
