"""The one internal table every reader produces: request rows and step rows.

Sources differ in what they measured. A request-level trace (``vllm bench``, DistServe,
LLMServingSim, stairwise) gives per-request arrival, lengths and latencies — enough to replay
it in the simulator. Isolating measurements (Splitwise, Argonne, per-layer profiles) give the
duration of engine steps whose batch composition is known — enough to fit the step cost
directly. A table holds whichever the source has.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.profile import StepCost
from sim.step_tables import MeasuredTables

# StepCost field -> the StepRow feature it multiplies (their order is the fit's column order).
STEP_FEATURES: dict[str, str] = {
    "base_s": "steps",
    "prefill_token_s": "prefill_tokens",
    "prefill_attention_s": "prefill_attention",
    "decode_seq_s": "decode_seqs",
    "context_token_s": "context_tokens",
    "prefill_step_s": "prefill_steps",
}
STEP_PARAMS: tuple[str, ...] = tuple(STEP_FEATURES)


@dataclass(frozen=True)
class RequestRow:
    """One request as the client (or, where noted, the server) saw it; times in seconds."""

    arrival_s: float | None  # since the trace's first request; None: sent by a closed loop
    prompt_tokens: int  # the whole prompt as the server counted it
    output_tokens: int
    ttft_s: float | None
    e2e_s: float | None
    ok: bool = True
    cached_tokens: int | None = None
    itls_s: tuple[float, ...] | None = None  # gaps between streamed deltas, when recorded
    network_delay_s: float | None = None  # client -> server upload delay above the minimum
    query_tokens: int | None = None  # stairwise: the user query alone (the scenario adds the rest)
    agent_outputs: dict[str, int] = field(default_factory=dict)  # stairwise: tokens per agent

    @property
    def tpot_s(self) -> float | None:
        if self.ttft_s is None or self.e2e_s is None or self.output_tokens < 2:
            return None
        return (self.e2e_s - self.ttft_s) / (self.output_tokens - 1)


@dataclass(frozen=True)
class StepRow:
    """The measured duration of one or more engine steps and their summed cost features.

    The step cost is linear in its parameters, so a run of many steps (a whole offline batch,
    a request's decode phase) is one row whose features are sums over its steps.
    """

    duration_s: float
    steps: float = 1.0
    prefill_steps: float = 0.0
    prefill_tokens: float = 0.0
    prefill_attention: float = 0.0  # Σ chunk·(context before it + chunk)
    decode_seqs: float = 0.0
    context_tokens: float = 0.0  # Σ over decoding sequences of their context
    where: str = ""  # file:line it came from, for error messages and residual tables

    def features(self) -> list[float]:
        return [float(getattr(self, name)) for name in STEP_FEATURES.values()]


def predicted_seconds(cost: StepCost, row: StepRow) -> float:
    return sum(
        getattr(cost, param) * value
        for param, value in zip(STEP_PARAMS, row.features(), strict=True)
    )


@dataclass
class TraceTable:
    """What one source file measured, plus what it says about the engine that served it."""

    source: str
    format: str
    requests: list[RequestRow] = field(default_factory=list)
    steps: list[StepRow] = field(default_factory=list)
    token_times: bool = False  # requests carry per-delta ITLs
    settings: dict[str, Any] = field(default_factory=dict)  # engine version, model, limits…
    scenario: dict[str, Any] | None = None  # stairwise: the run's scenario, for exact replay
    profiles: dict[str, Any] = field(default_factory=dict)  # stairwise: profiles it ran on
    server_totals: dict[str, float] = field(default_factory=dict)  # /metrics after − before
    operator_tables: MeasuredTables | None = None  # an operator profile's measured tables

    @property
    def served(self) -> list[RequestRow]:
        """Requests that finished with timings: the ones latency statistics are made of."""
        return [r for r in self.requests if r.ok and r.ttft_s is not None and r.e2e_s is not None]

    def quantiles(self, metric: str, levels: tuple[float, ...]) -> np.ndarray | None:
        values = [getattr(r, metric) for r in self.served]
        present = [v for v in values if v is not None]
        return np.quantile(present, levels) if present else None

    def kv_occupancy_peak(self, block_size: int, samples: int = 20_000) -> int | None:
        """The most KV-cache tokens the served requests held at once, block-rounded: each from
        its first token to its end, with its prompt and a linearly growing answer (a preempted
        request still counts, so it can exceed the capacity by a few %). Roughly a lower bound
        of the server's KV capacity — and, when requests queued while it plateaued, the capacity
        itself (vLLM admits a prompt only when its blocks are free). None without arrivals."""
        rows = [r for r in self.served if r.arrival_s is not None]
        if not rows:
            return None
        first = np.array([r.arrival_s + r.ttft_s for r in rows])  # type: ignore[operator]
        end = np.array([r.arrival_s + r.e2e_s for r in rows])  # type: ignore[operator]
        times = np.linspace(first.min(), end.max(), samples)
        held = np.zeros(samples)
        for row, begin, finish in zip(rows, first, end, strict=True):
            running = (times >= begin) & (times < finish)
            done = np.clip((times[running] - begin) / max(finish - begin, 1e-9), 0.0, 1.0)
            tokens = row.prompt_tokens + done * row.output_tokens + 1
            held[running] += np.ceil(tokens / block_size) * block_size
        return int(held.max())
