"""Staircase vs standard MoA, for real, on the embedded local vLLM (CPU) server.

4 proposers x 256 tokens into an aggregator answering 256 tokens, first chunk 8 tokens,
closed loop (one request at a time), cold prefix cache per run. Prints TTFT, TPS, E2E and
stall for both modes, the TTFT reduction (the published result is -93 %) and the TPS change,
the simulator's prediction for the same scenarios, and the runner's own overhead.

    python benchmarks/live_staircase.py [--requests 5] [--proposers 4] [--tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from live import local_server
from live.runner import LiveRunner
from sim import Simulator, scenario_from_dict


def scenario(mode: str, args: argparse.Namespace, url: str) -> dict[str, Any]:
    return {
        "name": f"bench-{mode}-moa-{args.proposers}x1",
        "seed": 11,
        "servers": {
            "local": {
                "kind": "vllm",
                "profile": args.profile,
                "endpoint": url,
                "model": local_server.MODEL_NAME,
            }
        },
        "topology": {
            "kind": "moa",
            "mode": mode,
            "proposers": args.proposers,
            "agent": {"max_tokens": args.tokens},
            "chunks": {"proposer": [8, 64, 256], "aggregator": [8, 64, 256]},
            "template": "prefix_cache",
        },
        "workload": {"requests": args.requests, "prompt_tokens": {"dist": "fixed", "value": 64}},
        "live": {"cold_cache": True},
    }


def row(label: str, summary: dict[str, Any]) -> str:
    return (
        f"{label:<22}{summary['ttft_s']['p50']:>9.3f}{summary['tps']['p50']:>9.1f}"
        f"{summary['e2e_s']['p50']:>9.2f}{summary['stall_s']['p50']:>9.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5)
    parser.add_argument("--proposers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--profile", default="vllm-cpu-smollm2-135m")
    args = parser.parse_args()

    state = local_server.start(log=print)
    live: dict[str, dict[str, Any]] = {}
    predicted: dict[str, dict[str, Any]] = {}
    client: dict[str, dict[str, float]] = {}
    for mode in ("standard", "staircase"):
        config = scenario_from_dict(scenario(mode, args, state.settings.url))
        result = asyncio.run(LiveRunner(config).run())
        live[mode], client[mode] = result.summary, result.client
        predicted[mode] = Simulator(config).run().summary

    print(f"\n{'':<22}{'TTFT s':>9}{'TPS':>9}{'E2E s':>9}{'stall s':>9}   (p50)")
    for mode in ("standard", "staircase"):
        print(row(f"{mode} live", live[mode]))
        print(row(f"{mode} simulated", predicted[mode]))
    for source, runs in (("live", live), ("simulated", predicted)):
        ttft = runs["staircase"]["ttft_s"]["p50"] / runs["standard"]["ttft_s"]["p50"] - 1
        tps = runs["staircase"]["tps"]["p50"] / runs["standard"]["tps"]["p50"] - 1
        print(f"{source:<10} staircase vs standard: TTFT {ttft:+.1%}, TPS {tps:+.1%}")
    for mode, overhead in client.items():
        print(
            f"client overhead ({mode}): {overhead['cpu_share']:.1%} of one core, event-loop lag "
            f"p99 {overhead['loop_lag_p99_ms']:.1f} ms, max {overhead['loop_lag_max_ms']:.1f} ms"
        )


if __name__ == "__main__":
    main()
