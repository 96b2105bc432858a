"""Staircase streaming now or a multi-stream model later? One scenario, three modes.

Simulates ``examples/staircase-moa.yaml`` (3 proposers + an aggregator on the embedded CPU
vLLM profile) as ``standard`` (the aggregator waits for whole answers), ``staircase`` (it
starts from the proposers' first chunks) and ``multistream`` (all four agents as streams of
one sequence — a what-if: no engine serves it yet), plus ``multistream`` with its two cost
assumptions moved: free extra streams (``stream_token_s: 0``, a purely memory-bound step) and a
lag of 4 steps. Latency and KV come from the example's workload (Poisson, 0.1 requests/s);
throughput from the same requests sent by 8 closed-loop users. Prints a Markdown table (the
one in docs/design.md).

    python examples/multistream_whatif.py [--requests 50] [--profile vllm-a100-llama3-8b]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import stairwise

SCENARIO = Path(__file__).parent / "staircase-moa.yaml"
VARIANTS = {
    "standard": ["topology.mode=standard"],
    "staircase": [],
    "multistream": ["topology.mode=multistream"],
    "multistream, free streams": [
        "topology.mode=multistream",
        "topology.multistream.stream_token_s=0",
    ],
    "multistream, lag 4": ["topology.mode=multistream", "topology.multistream.lag_steps=4"],
}
LATENCY = [  # (header, summary path, format): the example's own workload
    ("TTFT p50 (s)", "ttft_s.p50", ".2f"),
    ("TTFT p90 (s)", "ttft_s.p90", ".2f"),
    ("stall p90 (s)", "stall_s.p90", ".2f"),
    ("E2E p50 (s)", "e2e_s.p50", ".2f"),
    ("answer TPS p50", "tps.p50", ".1f"),
    ("KV peak p50 (tokens)", "kv_peak_tokens.p50", ",.0f"),
]
LOADED = [  # the same requests from 8 closed-loop users: what one server sustains
    ("8 users: requests/s", "request_throughput_per_s", ".3f"),
    ("8 users: E2E p50 (s)", "e2e_s.p50", ".2f"),
]
CLOSED_LOOP = ["workload.arrival={kind: closed, concurrency: 8}"]


def value(summary: dict, path: str) -> float:
    node = summary
    for part in path.split("."):
        node = node[part]
    return float(node)


def cells(overrides: list[str], columns: list[tuple[str, str, str]]) -> list[str]:
    summary = stairwise.simulate(SCENARIO, overrides=overrides).summary
    return [format(value(summary, path), spec) for _, path, spec in columns]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--profile", help="another engine profile (a shipped name or a path)")
    args = parser.parse_args()
    common = [f"workload.requests={args.requests}"]
    if args.profile:
        common.append(f"servers.local.profile={args.profile}")
    headers = [header for header, _, _ in LATENCY + LOADED]
    print(f"| mode ({args.requests} requests) | " + " | ".join(headers) + " |")
    print("|---" * (len(headers) + 1) + "|")
    for label, overrides in VARIANTS.items():
        row = cells(common + overrides, LATENCY) + cells(common + overrides + CLOSED_LOOP, LOADED)
        print(f"| {label} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
