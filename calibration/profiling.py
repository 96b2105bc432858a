"""The designed profiling run: a grid of single-agent runs that pins the step cost down.

Each cell is one closed-loop run of one agent on the server being profiled: ``concurrency``
users send prompts of ``prompt_tokens`` tokens, of which ``cached_prefix_tokens`` are a
system prompt shared by every request of the cell (so the server's prefix cache holds it
after the first one), and each answer is exactly ``output_tokens`` long (``ignore_eos``).
Concurrency 1 isolates prefill (TTFT) and one-sequence decode (ITL); higher concurrency
shows how steps grow with the batch; the cached prefix shows what a hit saves.

``stairwise calibrate --endpoint URL`` (the live runner) runs :func:`cell_scenario` for every
cell of :func:`profiling_plan` with ``stairwise run`` and hands the traces to
:func:`fit_profiling_run`. The simulator runs the same scenarios, which is how the fit is
tested: traces made on a known profile must give that profile back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import lsq_linear, minimize

from calibration.calibrate import CalibrationOptions, start_profile
from calibration.fit_replay import Progress, Target, replay_quality, replay_uncertainty
from calibration.readers import read_tables
from calibration.replay import EngineSettings, plan, replay
from calibration.table import RequestRow, TraceTable
from calibration.uncertainty import (
    Uncertainty,
    choice_sd,
    correlations,
    judged,
    linearised_cov,
    merged,
    typical_shares,
)
from sim.errors import ConfigError
from sim.profile import StepCost, VllmProfile
from sim.texts import sample_text

AGENT = "solo"
MIN_ALONE = 3
MAX_DECODE_SHARE = 0.95  # of a one-sequence step
MAX_CONTEXT_SCALE = 10.0  # x the single-sequence estimate
FREE_SEQUENCES = (0, 1, 2, 4, 6, 8)  # decode_seqs_free candidates


@dataclass(frozen=True)
class ProfilingCell:
    prompt_tokens: int
    concurrency: int
    cached_prefix_tokens: int
    output_tokens: int
    requests: int

    @property
    def name(self) -> str:
        return f"profile-p{self.prompt_tokens}-c{self.concurrency}-k{self.cached_prefix_tokens}"


def profiling_plan(
    prompt_lengths: tuple[int, ...] = (32, 128, 512, 1024, 1536),
    concurrencies: tuple[int, ...] = (1, 4, 16),
    cached_prefixes: tuple[int, ...] = (0, 512),
    output_tokens: int = 128,
    rounds: int = 3,
) -> list[ProfilingCell]:
    """Every combination whose cached prefix is shorter than its prompt; each user sends
    ``rounds`` requests (so repeats of each cell come for free)."""
    return [
        ProfilingCell(prompt, users, cached, output_tokens, users * rounds)
        for prompt in prompt_lengths
        for users in concurrencies
        for cached in cached_prefixes
        if cached < prompt
    ]


@dataclass(frozen=True)
class ProfilingGrid:
    prompt_lengths: tuple[int, ...]
    concurrencies: tuple[int, ...]
    cached_prefixes: tuple[int, ...]
    output_tokens: int
    rounds: int


QUICK_GRID = ProfilingGrid((32, 256, 768), (1, 4), (0, 256), output_tokens=32, rounds=2)
"""``calibrate --quick``: the same kinds of cell, fewer of them and shorter, so the local CPU
engine is fitted in at most three minutes even on one model thread: three prompt lengths pin
the prefill cost and its attention term (a third of a 768-token prefill), one and four users
the batching, a 256-token cached prefix the hit. Its cells take ~150 s simulated on the
isolated AVX2 profile; the 1,536-token prompts of the full grid would take 335 s."""


def cell_scenario(
    cell: ProfilingCell, server: dict[str, Any], chars_per_token: float = 4.0
) -> dict[str, Any]:
    """The scenario of one cell, for ``stairwise run`` (and the simulator): ``server`` is the
    scenario's server entry (kind, profile, endpoint, model, limits); ``chars_per_token`` is the
    server's tokenizer's, so the shared prefix has about ``cached_prefix_tokens`` tokens."""
    return {
        "name": cell.name,
        "servers": {"target": server},
        "topology": {
            "kind": "graph",
            "agent": {"system_prompt": prefix_text(cell.cached_prefix_tokens, chars_per_token)},
            "unit": {"tokens": cell.output_tokens},
            "agents": {AGENT: {"steps": 1}},
        },
        "workload": {
            "requests": cell.requests,
            "arrival": {"kind": "closed", "concurrency": cell.concurrency},
            "prompt_tokens": {
                "dist": "fixed",
                "value": max(1, cell.prompt_tokens - cell.cached_prefix_tokens),
            },
            "output_tokens": "max",
        },
    }


def prefix_text(tokens: int, chars_per_token: float = 4.0) -> str:
    """A system prompt of plain English of about ``tokens`` tokens (empty for none)."""
    return sample_text(round(tokens * chars_per_token)) if tokens else ""


def fit_profiling_run(
    traces: list[Path], options: CalibrationOptions, progress: Progress | None = None
) -> VllmProfile:
    """A vllm profile from the stairwise traces of a profiling run (one file per cell).

    Two stages, each on the measurements that isolate its parameters:

    1. Requests that ran alone (concurrency-1 cells) fix the one-sequence costs directly:
       TTFT = request overhead + one prefill step (the cached prefix as context), and each
       inter-token gap = one decode step at its context (:func:`fit_single_sequence`).
    2. Replaying every cell then sets what batching shows best — the cost of each extra
       decoding sequence and of context — keeping a one-sequence step as stage 1 measured it
       (:func:`fit_batching`).
    """
    tables = read_tables(traces, "stairwise")
    for table in tables:
        agents = (table.scenario or {}).get("topology", {}).get("agents", {})
        if len(agents) != 1 or len((table.scenario or {}).get("servers", {})) != 1:
            raise ConfigError(f"{table.source}: not a profiling cell (one agent on one server)")
    alone = alone_requests(tables)
    if len(alone) < MIN_ALONE:
        raise ConfigError(
            f"a profiling run needs {MIN_ALONE} requests from concurrency-1 cells "
            f"(these traces have {len(alone)})"
        )
    single = fit_single_sequence(alone)
    start = start_profile(tables, options).model_copy(
        update={"step": single.step, "request_overhead_s": single.overhead_s}
    )
    profile, batching, batched = fit_batching(tables, start, options.max_evaluations, progress)
    # stage 2 refits the context cost: its sd is stage 2's
    uncertainty = merged(_without(single.uncertainty, "context_token_s"), batched)
    fit = {
        "method": "profiling run: direct (alone) + replay (batching)",
        "fitted": [*SINGLE_PARAMS, "decode_seq_s", "decode_seqs_free"],  # context: both
        "not_identifiable": uncertainty.not_identifiable,
        "correlation": uncertainty.correlation,
        "single_sequence": single.quality,
        "replay": batching,
    }
    step_sd = {k: v for k, v in uncertainty.rel_sd.items() if k in StepCost.model_fields}
    return profile.model_copy(update={"fit": fit, "step_rel_sd": step_sd})


def alone_requests(tables: list[TraceTable]) -> list[RequestRow]:
    """The requests of the concurrency-1 cells: each ran alone on the server."""
    return [r for t in tables if _concurrency(t) == 1 for r in t.served]


def _concurrency(table: TraceTable) -> int:
    arrival = (table.scenario or {}).get("workload", {}).get("arrival", {})
    return int(arrival.get("concurrency", 0)) if arrival.get("kind") == "closed" else 0


@dataclass(frozen=True)
class SingleSequenceFit:
    step: StepCost  # decode_seq_s = 0: base_s is a whole one-sequence step
    overhead_s: float
    quality: dict[str, Any]
    uncertainty: Uncertainty


SINGLE_PARAMS = (
    "request_overhead_s",
    "base_s",
    "prefill_token_s",
    "prefill_attention_s",
    "context_token_s",
)


def fit_single_sequence(rows: list[RequestRow]) -> SingleSequenceFit:
    """Non-negative least squares on relative error over isolated requests' TTFTs and token
    gaps (the cost is linear in its coefficients). Gaps far from the typical one are not
    decode steps — two tokens in one piece, or a pause of the client — and are left out."""
    ttft = np.array(
        [
            (r.prompt_tokens - (r.cached_tokens or 0), r.cached_tokens or 0, r.ttft_s)
            for r in rows
            if r.ttft_s
        ]
    )
    gaps = np.array(
        [
            (r.prompt_tokens + k + 1, gap)
            for r in rows
            for k, gap in enumerate(r.itls_s or ())
            if gap > 0
        ]
    )
    if len(gaps) == 0:
        raise ConfigError("the concurrency-1 requests recorded no token gaps to fit decode steps")
    typical = np.median(gaps[:, 1])
    gaps = gaps[(gaps[:, 1] > typical / 2) & (gaps[:, 1] < typical * 2)]
    computed, cached = ttft[:, 0], ttft[:, 1]
    # columns: request overhead, one-sequence step, per prefill token, attention, context
    first = np.column_stack(
        [
            np.ones(len(ttft)),
            np.ones(len(ttft)),
            computed,
            computed * (cached + computed),
            np.zeros(len(ttft)),
        ]
    )
    step = np.column_stack(
        [
            np.zeros(len(gaps)),
            np.ones(len(gaps)),
            np.zeros(len(gaps)),
            np.zeros(len(gaps)),
            gaps[:, 0],
        ]
    )
    design = np.vstack([first, step])
    measured = np.concatenate([ttft[:, 2], gaps[:, 1]])
    weight = np.concatenate(
        [np.full(len(ttft), np.sqrt(len(gaps) / len(ttft))), np.ones(len(gaps))]
    )  # TTFTs weigh as much as all the gaps
    scale = weight / measured
    columns = design * scale[:, None]
    norms = np.linalg.norm(columns, axis=0)
    norms[norms == 0] = 1.0
    x = lsq_linear(columns / norms, measured * scale, bounds=(0, np.inf)).x / norms
    relative = design @ x / measured - 1
    variance = float(np.sum((weight * relative) ** 2)) / max(1, len(measured) - len(x))
    cov = linearised_cov(columns, variance)
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    overhead, base, per_token, attention, context = (float(v) for v in x)
    ttft_error = np.abs(relative[: len(ttft)])
    gap_error = np.abs(relative[len(ttft) :])
    return SingleSequenceFit(
        step=StepCost(
            base_s=base,
            prefill_token_s=per_token,
            prefill_attention_s=attention,
            context_token_s=context,
        ),
        overhead_s=overhead,
        uncertainty=_with_correlations(
            judged(list(SINGLE_PARAMS), x, sd, typical_shares(columns)),
            correlations(list(SINGLE_PARAMS), cov),
        ),
        quality={
            "requests": len(ttft),
            "gaps": len(gaps),
            "ttft_rel_err_p50": float(np.median(ttft_error)),
            "ttft_rel_err_p90": float(np.quantile(ttft_error, 0.9)),
            "gap_rel_err_p50": float(np.median(gap_error)),
        },
    )


def _without(verdict: Uncertainty, name: str) -> Uncertainty:
    """``verdict`` without one parameter (a later stage refits it)."""
    return Uncertainty(
        {k: v for k, v in verdict.rel_sd.items() if k != name},
        [p for p in verdict.not_identifiable if p != name],
        {
            k: {j: r for j, r in row.items() if j != name}
            for k, row in verdict.correlation.items()
            if k != name
        },
    )


def _with_correlations(verdict: Uncertainty, pairs: dict[str, dict[str, float]]) -> Uncertainty:
    return Uncertainty(verdict.rel_sd, verdict.not_identifiable, pairs)


def fit_batching(
    tables: list[TraceTable],
    start: VllmProfile,
    max_evaluations: int,
    progress: Progress | None = None,
) -> tuple[VllmProfile, dict[str, Any], Uncertainty]:
    """What batching shows, by replaying every cell: the cost of each extra decoding sequence
    (a share of the one-sequence step, which keeps the time stage 1 measured), how many
    sequences ride along for free, and the cost per token of context (a batch holds far more
    context than one sequence). For each count of free sequences a Nelder–Mead search sets
    the other two; the best count wins."""
    engine = EngineSettings()
    plans = [plan(t, "vllm", engine) for t in tables]
    targets = [Target(t, p) for t, p in zip(tables, plans, strict=True)]
    one_sequence = start.step.base_s + start.step.decode_seq_s
    context_scale = max(start.step.context_token_s, 1e-7)
    per_count = max(5, max_evaluations // len(FREE_SEQUENCES))
    evaluations = 0

    def profile_at(x: np.ndarray, free: int) -> VllmProfile:
        share, context = float(x[0]), float(x[1]) * context_scale
        step = start.step.model_copy(
            update={
                # a one-sequence step keeps stage 1's time: with a free sequence it is base alone
                "base_s": one_sequence * (1 - share) if free == 0 else one_sequence,
                "decode_seq_s": one_sequence * share,
                "decode_seqs_free": free,
                "context_token_s": context,
            }
        )
        return start.model_copy(update={"step": step})

    def cost(x: np.ndarray, free: int) -> float:
        nonlocal evaluations
        if not (0.0 <= x[0] <= MAX_DECODE_SHARE and 0.0 <= x[1] <= MAX_CONTEXT_SCALE):
            return np.inf
        evaluations += 1
        if progress is not None:
            progress(evaluations, per_count * len(FREE_SEQUENCES))
        profile = profile_at(x, free)
        errors = np.concatenate(
            [
                t.log_errors(replay(p, profile), len(p.specs))
                for p, t in zip(plans, targets, strict=True)
            ]
        )
        return float(errors @ errors)

    x0 = np.array([0.05, 1.0])
    simplex = np.array([x0, x0 + np.array([0.1, 0.0]), x0 * np.array([1.0, 0.5])])
    searches = {
        free: minimize(
            cost,
            x0,
            args=(free,),
            method="Nelder-Mead",
            options={"initial_simplex": simplex, "maxfev": per_count, "xatol": 0.01},
        )
        for free in FREE_SEQUENCES
    }
    free, best = min(searches.items(), key=lambda item: float(item[1].fun))
    profile = profile_at(best.x, free)
    quality = replay_quality(plans, targets, profile)
    names = [n for n in ("decode_seq_s", "context_token_s") if getattr(profile.step, n) > 0]
    free_sd = choice_sd(
        "decode_seqs_free",
        free,
        {count: float(search.fun) for count, search in searches.items()},
        sum(len(t.observed) for t in targets),
        grid=1,
    )
    uncertainty = merged(replay_uncertainty(plans, targets, profile, names), free_sd)
    return profile, {"evaluations": evaluations, **quality}, uncertainty
