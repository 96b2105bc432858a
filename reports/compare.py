"""Predicted vs measured: percentile errors, KS distances and per-agent timing errors.

Conventions (the same in ``validate --json``, the HTML error table and docs/reports.md):

* error % = 100 · (predicted − measured) / measured, on the two runs' own percentiles. The
  denominator is the measurement; a positive error means the simulator predicts a larger
  value (slower TTFT/E2E/ITL, higher TPS). ``None`` when either side has no value or the
  measurement is 0.
* KS distance: the two-sample Kolmogorov–Smirnov statistic (largest gap between the two
  empirical CDFs, 0 = same distribution, 1 = disjoint) of the per-request values; ITL pools
  every gap of every request, as the summary does.
* agent timings: each agent's mean first-call start and last-call end, measured from the
  request being sent; errors in seconds and in % of the measured offset.
* prompts: each call the simulation and a live run both ended ok (same request, same call),
  its prompt and cached tokens as the simulator priced them against the server's own count:
  whether the model computes the same work as the engine, whatever the engine's speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scipy.stats import ks_2samp

from sim.metrics import DEFAULT_K, METRICS, error_pct, request_metrics, summarize
from sim.trace import Record

PERCENTILES = ("p50", "p90", "p99")
# the errors validate --max-error judges, and the suite table shows
HEADLINE_ERRORS = ("ttft_p50", "ttft_p90", "tps_p50", "e2e_p50", "stall_p50")
THROUGHPUT_KEY = "throughput_tok_s"
# per-agent timing -> key of its mean in the summary's "agents"
AGENT_TIMINGS: dict[str, str] = {
    "start_s": "first_start_s_mean",
    "end_s": "last_end_s_mean",
    "call_s": "call_s_mean",
}


@dataclass(frozen=True)
class RunStats:
    """A run's summary (the ``simulate --json`` shape) and the samples behind it."""

    summary: dict[str, Any]
    samples: dict[str, list[float]]


def run_stats(records: list[Record], k: int = DEFAULT_K) -> RunStats:
    done = [m for m in request_metrics(records, k) if m.ok]
    per_request = {
        "ttft": [m.ttft for m in done],
        "tpot": [m.tpot for m in done],
        "e2e": [m.e2e for m in done],
        "tps": [m.tps for m in done],
        "tps_e2e": [m.tps_e2e for m in done],
        "stall": [m.stall for m in done],
    }
    samples = {name: [v for v in values if v is not None] for name, values in per_request.items()}
    samples["itl"] = [gap for m in done for gap in m.itls]
    return RunStats(summary=summarize(records, k=k), samples=samples)


def ks_distance(predicted: list[float], measured: list[float]) -> float | None:
    if not predicted or not measured:
        return None
    return float(ks_2samp(predicted, measured).statistic)


def percentile_errors(predicted: RunStats, measured: RunStats) -> dict[str, float | None]:
    """``{"ttft_p50": %, ..., "throughput": %}`` for every metric and percentile."""
    errors = {
        f"{name}_{p}": error_pct(predicted.summary[m.key][p], measured.summary[m.key][p])
        for name, m in METRICS.items()
        for p in PERCENTILES
    }
    errors["throughput"] = error_pct(
        predicted.summary[THROUGHPUT_KEY], measured.summary[THROUGHPUT_KEY]
    )
    return errors


def ks_distances(predicted: RunStats, measured: RunStats) -> dict[str, float | None]:
    return {
        metric: ks_distance(predicted.samples[metric], measured.samples[metric])
        for metric in METRICS
    }


def agent_timing_errors(predicted: RunStats, measured: RunStats) -> dict[str, dict[str, Any]]:
    """Per agent seen in both runs: measured and predicted offsets and their errors."""
    measured_agents = measured.summary["agents"]
    predicted_agents = predicted.summary["agents"]
    result: dict[str, dict[str, Any]] = {}
    for agent in measured_agents:
        if agent not in predicted_agents:
            continue
        result[agent] = {
            timing: _offset_error(predicted_agents[agent][key], measured_agents[agent][key])
            for timing, key in AGENT_TIMINGS.items()
        }
    return result


def _offset_error(predicted: float | None, measured: float | None) -> dict[str, float | None]:
    return {
        "measured": measured,
        "predicted": predicted,
        "error_s": None if predicted is None or measured is None else predicted - measured,
        "error_pct": error_pct(predicted, measured),
    }


def validation_summary(
    live: list[Record],
    sim: list[Record],
    sim_trace_driven: list[Record],
    k: int = DEFAULT_K,
) -> dict[str, Any]:
    """What ``validate --json`` prints.

    ``error_pct``/``ks`` judge the simulation from the scenario alone (what a user gets before
    running anything); the ``_trace_driven`` twins judge the replay of the live run's own
    arrivals and lengths, which isolates the timing model from workload randomness.
    """
    measured = run_stats(live, k)
    predicted = run_stats(sim, k)
    replayed = run_stats(sim_trace_driven, k)
    return {
        "live": measured.summary,
        "sim": predicted.summary,
        "sim_trace_driven": replayed.summary,
        "error_pct": percentile_errors(predicted, measured),
        "error_pct_trace_driven": percentile_errors(replayed, measured),
        "ks": ks_distances(predicted, measured),
        "ks_trace_driven": ks_distances(replayed, measured),
        "agents": {
            "sim": agent_timing_errors(predicted, measured),
            "sim_trace_driven": agent_timing_errors(replayed, measured),
        },
    }


def prompt_accounting(predicted: list[Record], runs: list[list[Record]]) -> dict[str, Any]:
    """The simulation's calls against each live run's (the same seed makes the same calls):
    ``prompt_tokens_error_pct`` and ``computed_tokens_error_pct`` (prompt minus cached: the
    prefill work) over the calls both ended ok, and the share of those calls whose cached
    tokens are the server's to the token. None where no call matched."""
    simulated = _ok_calls(predicted)
    pairs = [
        (simulated[key], measured)
        for run in runs
        for key, measured in _ok_calls(run).items()
        if key in simulated
    ]
    if not pairs:
        return {
            "calls": 0,
            "prompt_tokens_error_pct": None,
            "computed_tokens_error_pct": None,
            "cached_tokens_equal_pct": None,
        }
    sums = [sum(pair[side][i] for pair in pairs) for side in (0, 1) for i in (0, 1)]
    prompt_sim, cached_sim, prompt_live, cached_live = sums
    return {
        "calls": len(pairs),
        "prompt_tokens_error_pct": error_pct(prompt_sim, prompt_live),
        "computed_tokens_error_pct": error_pct(prompt_sim - cached_sim, prompt_live - cached_live),
        "cached_tokens_equal_pct": 100 * sum(s[1] == m[1] for s, m in pairs) / len(pairs),
    }


def _ok_calls(records: list[Record]) -> dict[tuple[int, str], tuple[int, int]]:
    """(request, call) -> (prompt tokens, cached tokens) of the calls that ended ok."""
    return {
        (r["req"], r["call"]): (r["prompt_tokens"], r["cached_tokens"] or 0)
        for r in records
        if r["type"] == "call_end" and r["status"] == "ok" and r["prompt_tokens"] is not None
    }
