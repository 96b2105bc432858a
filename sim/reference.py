"""The reference workload: the run that times the simulator and, smaller, pins its results.

Staircase Mixture-of-Agents, 4 proposers + an aggregator, 512 tokens each, 128-token
prompts, Poisson arrivals at 0.5/s, on the shipped CPU profile read by path. By path it is
that file on every machine; by name, ``vllm-cpu-smollm2-135m`` resolves to the variant of
this machine's processor — another engine speed, so a more crowded batch, and not the same
workload. ``benchmarks/sim_speed.py`` times it and ``tests/sim_golden.py`` pins a few
requests of it; defining it here (not in either: tests do not import benchmarks) keeps the
two the same run.
"""

from __future__ import annotations

from typing import Any

from sim.profile import SHIPPED_DIR

REFERENCE_CPU_PROFILE = str(SHIPPED_DIR / "vllm-cpu-smollm2-135m.json")


def staircase_moa(
    name: str,
    requests: int,
    rate: float = 0.5,
    mode: str = "staircase",
    profile: str = REFERENCE_CPU_PROFILE,
    **server: Any,
) -> dict[str, Any]:
    """The reference scenario as a dict; ``server``: more settings of its one vLLM server."""
    return {
        "name": name,
        "seed": 1,
        "servers": {"gpu": {"kind": "vllm", "profile": profile, **server}},
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
