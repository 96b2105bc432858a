"""How fast is the simulator? 1,000 staircase-MoA requests on one simulated vLLM engine.

4 proposers + 1 aggregator, 512 tokens each, Poisson arrivals. Prints wall time, simulation
events and events per generated token (decode steps are batched into one event while the
batch is unchanged, so events should track batch changes, not tokens). Target: <= 5 s.

    python benchmarks/sim_speed.py [--requests 1000] [--rate 0.5] [--engine-profile NAME]

``--engine-profile vllm-rtxpro6000-llama31-8b-ops`` times steps priced from operator tables
instead of the fitted formula.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from sim import Simulator, scenario_from_dict


def scenario(requests: int, rate: float, mode: str, profile: str) -> dict:
    return {
        "name": "bench-staircase-moa-4x1",
        "seed": 1,
        "servers": {"gpu": {"kind": "vllm", "profile": profile}},
        "network": {"latency": {"dist": "lognormal", "median_ms": 0.5, "sigma": 0.4}},
        "topology": {
            "kind": "moa",
            "mode": mode,
            "proposers": 4,
            "agent": {"max_tokens": 512},
            "chunks": {"proposer": [8, 128, 256], "aggregator": [8, 128, 256]},
            "template": "prefix_cache",
        },
        "workload": {
            "requests": requests,
            "arrival": {"kind": "poisson", "rate_per_s": rate},
            "prompt_tokens": {"dist": "fixed", "value": 128},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=0.5, help="requests per second")
    parser.add_argument("--mode", default="staircase", choices=["staircase", "standard"])
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    parser.add_argument("--engine-profile", default="vllm-cpu-smollm2-135m", help="its step cost")
    args = parser.parse_args()

    started = time.perf_counter()
    spec = scenario(args.requests, args.rate, args.mode, args.engine_profile)
    simulator = Simulator(scenario_from_dict(spec))
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    result = simulator.run()
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - started
    engine = simulator.engines["gpu"][0]
    generated = result.summary["generated_tokens"]
    print(f"requests            {result.summary['requests']:>12,}")
    print(f"simulated time (s)  {simulator.env.now:>12,.0f}")
    print(f"generated tokens    {generated:>12,}")
    print(f"engine steps        {engine.steps:>12,}")
    print(f"simulation events   {result.events:>12,}")
    print(f"events per token    {result.events / generated:>12.4f}")
    print(f"steps per event     {engine.steps / engine.events:>12.1f}")
    print(f"wall time (s)       {wall:>12.2f}   (target <= 5 s)")
    print(f"tokens per wall s   {generated / wall:>12,.0f}")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()
