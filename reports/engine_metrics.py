"""Engine metrics of a run: the server's own counters (live) and what the trace itself shows.

Live traces carry ``server_metrics`` records — Prometheus ``/metrics`` snapshots taken
``before`` and ``after`` the run — so the run's share of each counter is after − before.
Simulated traces have no server to ask; their call records still give queue time and
prefix-cache hits, so the same table has a row for both.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from sim.trace import Record

COUNTERS: dict[str, str] = {
    "vllm:prefix_cache_hits_total": "prefix-cache hits (tokens)",
    "vllm:prefix_cache_queries_total": "prefix-cache queries (tokens)",
    "vllm:prompt_tokens_total": "prompt tokens",
    "vllm:generation_tokens_total": "generated tokens",
}
HISTOGRAMS: dict[str, str] = {
    "vllm:request_queue_time_seconds": "mean queue time (s)",
    "vllm:request_prefill_time_seconds": "mean prefill time (s)",
    "vllm:request_decode_time_seconds": "mean decode time (s)",
    "vllm:time_to_first_token_seconds": "mean server TTFT (s)",
}
HIT_RATE = "prefix-cache hit rate"


def server_deltas(records: list[Record]) -> dict[str, dict[str, float]]:
    """Per server: every numeric metric's change over the run — after − before, summed over
    the before/after pairs when a trace pools several runs."""
    opened: dict[str, dict[str, float]] = {}
    totals: dict[str, dict[str, float]] = {}
    for record in records:
        if record["type"] != "server_metrics":
            continue
        server, values = record["server"], _numbers(record["values"])
        if record["when"] == "before":
            opened.setdefault(server, values)
        elif record["when"] == "after" and server in opened:
            start = opened.pop(server)
            total = totals.setdefault(server, {})
            for name in start.keys() & values.keys():
                total[name] = total.get(name, 0.0) + values[name] - start[name]
    return totals


def _numbers(values: object) -> dict[str, float]:
    if not isinstance(values, dict):
        return {}
    return {
        str(name): float(value)
        for name, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def by_base_name(deltas: dict[str, float]) -> dict[str, float]:
    """Labelled series (``name{model="x"}``) summed under their bare metric name."""
    summed: dict[str, float] = defaultdict(float)
    for name, value in deltas.items():
        summed[name.split("{", 1)[0]] += value
    return dict(summed)


def highlights(deltas: dict[str, float]) -> dict[str, float]:
    """The few figures worth a row: cache hits, token counts, mean times from histograms."""
    bare = by_base_name(deltas)
    result = {label: bare[name] for name, label in COUNTERS.items() if name in bare}
    hits = bare.get("vllm:prefix_cache_hits_total")
    queries = bare.get("vllm:prefix_cache_queries_total")
    if hits is not None and queries:
        result[HIT_RATE] = hits / queries
    for name, label in HISTOGRAMS.items():
        total, count = bare.get(f"{name}_sum"), bare.get(f"{name}_count")
        if total is not None and count:
            result[label] = total / count
    return result


def trace_figures(records: list[Record]) -> dict[str, float | None]:
    """What the call records say, for live and simulated runs alike."""
    ends = [r for r in records if r["type"] == "call_end"]
    prompt = sum(r.get("prompt_tokens") or 0 for r in ends)
    cached = sum(r.get("cached_tokens") or 0 for r in ends)
    queued = [r["queued_s"] for r in ends if r.get("queued_s") is not None]
    return {
        "calls": float(len(ends)),
        "cancelled calls": float(sum(1 for r in ends if r["status"] == "cancelled")),
        "failed calls": float(sum(1 for r in ends if r["status"] == "failed")),
        "prompt tokens": float(prompt),
        "cached prompt tokens": float(cached),
        HIT_RATE: cached / prompt if prompt else None,
        "mean queue time (s)": float(np.mean(queued)) if queued else None,
    }
