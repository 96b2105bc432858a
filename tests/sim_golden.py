"""Pinned simulator results: scenarios whose every output must stay the same.

The simulator is optimised for speed under one rule — results do not change. These scenarios
cover every path of the engine and the driver (staircase and standard MoA, prefix caching
with replicas, priority scheduling and preemption on a small KV cache, prefill-first
scheduling, operator-table step prices, a streaming chain, a debate on a hosted API, the
multistream what-if). Their summaries (with intervals) and full traces were computed by the
code as it was and stored in ``tests/data/sim_golden.json``; ``tests/unit/test_sim_golden.py``
compares today's results with them.

Regenerate only when a change is *meant* to alter results (and say so in the commit):

    PYTHONPATH=. python -m tests.sim_golden
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sim import simulate
from sim.reference import REFERENCE_CPU_PROFILE, staircase_moa
from sim.scenario import apply_overrides, read_yaml, scenario_from_dict

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "data" / "sim_golden.json"
API_PROFILE = Path(__file__).parent / "data" / "golden-api-profile.json"  # hand-made
CPU_PROFILE = REFERENCE_CPU_PROFILE  # by path: the same file on every machine
REPLICATIONS = 3  # the summaries' intervals come from this many runs of each scenario


def _example(*overrides: str) -> dict[str, Any]:
    example = read_yaml(ROOT / "examples" / "staircase-moa.yaml")
    return apply_overrides(example, [f"servers.local.profile={CPU_PROFILE}", *overrides])


def _bench(requests: int, **server: Any) -> dict[str, Any]:
    """The speed benchmark's workload (sim/reference.py), a few requests of it."""
    return staircase_moa("golden-bench-moa-4x1", requests, **server)


def scenarios() -> dict[str, dict[str, Any]]:
    """Name -> scenario (as a dict) of every pinned run."""
    replicas_and_cache = _bench(12, replicas=2, kv_capacity_tokens=3000, max_num_seqs=8)
    replicas_and_cache["name"] = "golden-replicas-prefix-cache"
    replicas_and_cache["workload"]["arrival"] = {"kind": "closed", "concurrency": 6}
    replicas_and_cache["workload"]["output_tokens"] = {
        "dist": "uniform",
        "low": 100,
        "high": 512,
    }
    priority = _example(
        "workload.requests=12",
        "workload.arrival.rate_per_s=2",
        "servers.local.scheduling_policy=priority",
        "servers.local.kv_capacity_tokens=3000",
        "topology.aggregator.priority=-1",
        "topology.template=standard",
    )
    priority["name"] = "golden-priority-preempt"
    chain = {
        "name": "golden-chain",
        "seed": 3,
        "servers": {"local": {"kind": "vllm", "profile": CPU_PROFILE}},
        "topology": {
            "kind": "graph",
            "mode": "stream",
            "unit": {"kind": "step", "tokens": 16},
            "agents": {
                "planner": {"next": ["solver"], "steps": 6},
                "solver": {"next": ["checker"], "steps": 6},
                "checker": {"steps": 6},
            },
        },
        "workload": {"requests": 6, "arrival": {"kind": "poisson", "rate_per_s": 0.2}},
    }
    debate_api = {
        "name": "golden-debate-api",
        "seed": 5,
        "servers": {"hosted": {"kind": "api", "profile": str(API_PROFILE), "max_concurrency": 4}},
        "topology": {
            "kind": "debate",
            "mode": "staircase",
            "agents": 3,
            "rounds": 2,
            "chunks": [8, 56, 64],
            "agent": {"max_tokens": 128},
        },
        "workload": {"requests": 6, "arrival": {"kind": "poisson", "rate_per_s": 0.5}},
    }
    return {
        "staircase-moa": _example(),
        "standard-moa": _example("topology.mode=standard"),
        "bench-moa": _bench(16),
        "replicas-prefix-cache": replicas_and_cache,
        "priority-preempt": priority,
        "prefill-first": _example(
            "servers.local.profile=vllm-a100-llama3-8b", "workload.arrival.rate_per_s=4"
        ),
        "operator-tables": _example(
            "servers.local.profile=vllm-rtxpro6000-llama31-8b-ops",
            "workload.arrival.rate_per_s=4",
        ),
        "chain": chain,
        "debate-api": debate_api,
        "multistream": _example("topology.mode=multistream"),
    }


def pinned_result(scenario: dict[str, Any]) -> dict[str, Any]:
    """What is pinned of a run: its summary with intervals, and every trace record but the
    header (which holds the date and versions)."""
    result = simulate(scenario_from_dict(scenario), replications=REPLICATIONS)
    records = [r for r in result.records if r["type"] != "header"]
    # through JSON, as stored: tuples become lists, keys strings
    return json.loads(json.dumps({"summary": result.summary, "records": records}))


def main() -> None:
    golden = {name: pinned_result(spec) for name, spec in scenarios().items()}
    GOLDEN.write_text(json.dumps(golden, separators=(",", ":")) + "\n")
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size:,} bytes, {len(golden)} scenarios)")


if __name__ == "__main__":
    main()
