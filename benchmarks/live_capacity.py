"""Capacity, predicted and measured: ``stairwise plan --live`` on the embedded local vLLM (CPU)
for a single-model scenario and the staircase MoA example, printing the simulated maximum
sustainable rate, the live one and the error between them.

Both searches use the same load levels, arrivals, request count and sustainability rule
(``sim/capacity.py``); the live one starts from the simulated maximum and stops after
``--budget`` seconds per scenario (a stopped search says so: its rate is then a bound). The
engine is probed before and after the live search; the simulated search is run again at the
probed speed, so the error splits into the model's own and the engine's drift.

Without SLOs, each scenario's is twice its unloaded TTFT p90 simulated on the profile this
machine resolves to (the AVX2 and AVX-512 engines' latencies differ ~7x).

    python benchmarks/live_capacity.py [--budget 600] [--requests 12] [SCENARIO SLO ...]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from sim import simulate
from sim.capacity import PlanSettings
from stairwise import api
from stairwise.app import run_script

# one model alone, and the staircase MoA of the README
DEFAULT_SCENARIOS = ("examples/heldout/single-2.yaml", "examples/staircase-moa.yaml")
# the default SLO: this many times the scenario's unloaded TTFT p90, simulated on the profile
# this machine resolves to. At the unloaded latency itself capacity is ill-conditioned (a 1 %
# latency error moves it 2x, and a slow hour fails every rate); the AVX2 and AVX-512 engines'
# unloaded latencies differ ~7x, so a fixed SLO would test one machine's knee, not both.
SLO_OVER_UNLOADED = 2.0
UNLOADED_RATE = 0.01  # requests/s: no request meets another


def default_slo(scenario: str, requests: int) -> str:
    """``ttft_p90=…s`` at :data:`SLO_OVER_UNLOADED` times the unloaded TTFT p90 (0.1 s steps)."""
    unloaded = simulate(
        scenario,
        overrides=[
            f"workload.arrival={{kind: poisson, rate_per_s: {UNLOADED_RATE}}}",
            f"workload.requests={requests}",
        ],
        replications=1,
    ).summary["ttft_s"]["p90"]
    return f"ttft_p90={math.ceil(10 * SLO_OVER_UNLOADED * unloaded) / 10:.1f}s"


def measure(scenario: str, slos: list[str], requests: int, budget_s: float, out: Path) -> None:
    started = time.monotonic()
    result = api.plan(
        scenario,
        slos,
        PlanSettings(requests=requests, search_schedules=False),
        live=True,
        live_budget_s=budget_s,
        live_out=out / Path(scenario).stem,
    )
    simulated, live = result.capacity, result.live_capacity
    assert live is not None
    measured = "-" if live.max_rate is None else f"{live.max_rate:.4g}/s"
    error = result.capacity_error_pct
    complete = (result.live_search or {}).get("complete")
    stopped = "" if complete else " (stopped by its time budget: a bound)"
    print(
        f"{scenario} under {', '.join(slos)}: simulated max {simulated.max_rate:.4g}/s, live "
        f"{measured}{stopped}"
        f", error {'-' if error is None else f'{error:+.1f} %'}; "
        f"{time.monotonic() - started:.0f} s"
    )
    for server, entry in (result.live_probe or {}).items():
        speeds = " / ".join(
            f"prefill x{entry[w]['prefill_factor']:.2f} decode x{entry[w]['decode_factor']:.2f}"
            for w in ("before", "after")
            if w in entry
        )
        print(f"  engine probe {server} before / after the search: {speeds}")
    scaled = result.capacity_probe_scaled
    if scaled is not None:
        error = result.capacity_error_pct_probe_scaled
        print(
            f"  simulated at the probed speed: max {scaled.max_rate or 0:.4g}/s, error "
            f"{'-' if error is None else f'{error:+.1f} %'} (the model's own, without the drift)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "case", nargs="*", help="a scenario then its SLOs (default: two, SLO 2x unloaded TTFT p90)"
    )
    parser.add_argument("--budget", type=float, default=600.0, help="live seconds per scenario")
    parser.add_argument("--requests", type=int, default=12, help="requests per load level")
    parser.add_argument("--out", type=Path, default=Path("out/live-capacity"))
    args = parser.parse_args()
    cases = [(args.case[0], args.case[1:])] if args.case else [(s, []) for s in DEFAULT_SCENARIOS]
    for scenario, slos in cases:
        slos = slos or [default_slo(scenario, args.requests)]
        measure(scenario, slos, args.requests, args.budget, args.out)


if __name__ == "__main__":
    run_script(main)  # a bad scenario, override or plan file: one line, exit 2
