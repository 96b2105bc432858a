"""Capacity planning from a script: build a scenario in code, simulate it, sweep it, plan it.

The question: a staircase Mixture-of-Agents (3 proposers + an aggregator on one vLLM-CPU
server) must answer with the first token within 1.5 s and never pause longer than 4 s
(p90). How many requests per second does one server sustain, which chunk schedule and
redundancy are best, and how many servers does 0.5 requests/s need?

    python examples/capacity_plan.py          # about a minute on 2 cores

Process pools start workers that import this file, so the work runs under
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import stairwise
from sim.profile import SHIPPED_DIR

# by path, the reference machine's profile (2 AVX-512 cores) on every machine; by name,
# "vllm-cpu-smollm2-135m" is the variant of this machine's processor class
REFERENCE_CPU = str(SHIPPED_DIR / "vllm-cpu-smollm2-135m.json")
SCENARIO = stairwise.scenario_from_dict(
    {
        "name": "staircase-moa-planning",
        "seed": 7,
        "servers": {"local": {"kind": "vllm", "profile": REFERENCE_CPU}},
        "topology": {
            "kind": "moa",
            "mode": "staircase",
            "proposers": 3,
            "agent": {"server": "local", "max_tokens": 256},
            "aggregator": {"max_tokens": 128},
            "chunks": {"proposer": [8, 128, 256], "aggregator": [8, 128, 128]},
            "template": "prefix_cache",
        },
        "workload": {
            "requests": 50,
            "arrival": {"kind": "poisson", "rate_per_s": 0.1},
            "prompt_tokens": {"dist": "fixed", "value": 64},
        },
        "prices": {"input_per_mtok": 0.20, "output_per_mtok": 0.60, "cached_input_per_mtok": 0.05},
    }
)
SLOS = {"ttft_p90": "1.5s", "stall_p90": "3s"}


def main() -> None:
    baseline = stairwise.simulate(SCENARIO).summary
    print(
        f"as given at 0.1 requests/s: TTFT p90 {baseline['ttft_s']['p90']:.2f} s, "
        f"stall p90 {baseline['stall_s']['p90']:.2f} s"
    )

    # what-if: first proposer chunk × redundancy, 3 seeds per point
    swept = stairwise.sweep(
        {
            "kind": "sweep",
            "name": "first-chunk-x-redundancy",
            "scenario": SCENARIO,
            "axes": {"topology.chunks.proposer.0": [4, 8, 16, 32], "topology.redundancy": [0, 2]},
            "replications": 3,
            "metrics": ["ttft_s.p90", "stall_s.p90", "cost_usd.per_request"],
        }
    )
    frame = swept.dataframe()
    print(frame[["topology.chunks.proposer.0", "topology.redundancy", "ttft_s.p90"]].to_string())

    # capacity: the rate search, replicas for a target, the best schedule for the SLOs
    settings = stairwise.PlanSettings(requests=50, target_rate=0.5, first_chunks=(4, 8, 16))
    plan = stairwise.plan(SCENARIO, SLOS, settings, progress=lambda phase: print("…", phase))
    if plan.capacity.max_rate is None and plan.capacity.at_failing is not None:
        print("as given, no rate meets the SLOs:", plan.capacity.at_failing.values)
    else:
        print(f"as given: up to {plan.capacity.max_rate} requests/s")
    for candidate in plan.schedules[:3]:
        a = candidate.assessment
        print(f"  {candidate.label} r={candidate.redundancy}: ok={a.sustainable} {a.values}")
    best = plan.best
    if best is not None and plan.best_capacity is not None:
        print(f"best schedule: {best.label}, redundancy {best.redundancy}, {best.values}")
        print(f"  it sustains {plan.best_capacity.max_rate:.3f} requests/s")
    if plan.best_replicas is not None and plan.best_replicas.at_target is not None:
        cost = plan.best_replicas.at_target.cost_per_request
        print(f"  0.5 requests/s needs servers {plan.best_replicas.servers} at ${cost:.6f}/request")
    summary = plan.to_dict()  # plain dicts and lists: json.dumps(summary) works
    print("keys of the plan as a dict:", ", ".join(summary))


if __name__ == "__main__":
    main()
