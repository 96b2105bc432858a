"""Network delay between the client (the orchestrator) and a server.

Every message — a request upload, each streamed delta — gets its own latency draw; deltas
of one stream arrive in order (TCP), so a delta never overtakes the one before it.
"""

from __future__ import annotations

import numpy as np

from sim.distributions import FixedLatency, LatencyDist


class Link:
    def __init__(self, latency: LatencyDist, rng: np.random.Generator) -> None:
        self.latency = latency
        self.rng = rng
        self.ideal = isinstance(latency, FixedLatency) and latency.value_ms == 0

    def delay(self) -> float:
        return 0.0 if self.ideal else float(self.latency.sample_s(self.rng, 1)[0])

    def delays(self, n: int) -> np.ndarray:
        return np.zeros(n) if self.ideal else self.latency.sample_s(self.rng, n)


class DeltaStream:
    """Client arrival times of one call's streamed tokens (one delta per token)."""

    def __init__(self, link: Link, keep: bool) -> None:
        self.link = link
        self.keep = keep  # keep every arrival time (the user-facing answer) or just the count
        self.count = 0
        self.last = -np.inf
        self.arrivals: list[np.ndarray] = []

    def add(self, server_times: np.ndarray) -> float:
        """Arrival time of the last of these tokens."""
        if len(server_times) == 0:
            return float(self.last)
        arrivals = server_times + self.link.delays(len(server_times))
        arrivals[0] = max(arrivals[0], self.last)
        arrivals = np.maximum.accumulate(arrivals)
        self.count += len(arrivals)
        self.last = float(arrivals[-1])
        if self.keep:
            self.arrivals.append(arrivals)
        return self.last

    def all_arrivals(self) -> list[float]:
        return np.concatenate(self.arrivals).tolist() if self.arrivals else []
