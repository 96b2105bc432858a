"""Staircase streaming now or a multi-stream model later? One scenario, three modes.

Simulates ``examples/staircase-moa.yaml`` (3 proposers + an aggregator on the embedded CPU
vLLM profile) as ``standard`` (the aggregator waits for whole answers), ``staircase`` (it
starts from the proposers' first chunks) and ``multistream`` (all four agents as streams of
one sequence — a what-if: no engine serves it yet), plus ``multistream`` with its two cost
assumptions moved: free extra streams (``stream_token_s: 0``, a purely memory-bound step) and a
lag of 4 steps. Prints a Markdown table (the one in docs/design.md).

    python examples/multistream_whatif.py [--requests 50]
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
COLUMNS = [  # (header, summary path, format)
    ("TTFT p50 (s)", "ttft_s.p50", ".2f"),
    ("TTFT p90 (s)", "ttft_s.p90", ".2f"),
    ("stall p90 (s)", "stall_s.p90", ".2f"),
    ("E2E p50 (s)", "e2e_s.p50", ".2f"),
    ("answer TPS p50", "tps.p50", ".1f"),
    ("throughput (tok/s)", "throughput_tok_s", ".1f"),
    ("KV peak p50 (tokens)", "kv_peak_tokens.p50", ",.0f"),
]


def value(summary: dict, path: str) -> float:
    node = summary
    for part in path.split("."):
        node = node[part]
    return float(node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    common = [f"workload.requests={args.requests}"]
    print(
        f"| mode ({args.requests} requests, Poisson 0.1/s) | "
        + " | ".join(c[0] for c in COLUMNS)
        + " |"
    )
    print("|---" * (len(COLUMNS) + 1) + "|")
    for label, overrides in VARIANTS.items():
        summary = stairwise.simulate(SCENARIO, overrides=common + overrides).summary
        cells = [format(value(summary, path), spec) for _, path, spec in COLUMNS]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
