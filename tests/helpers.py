"""Small scenarios on explicit profiles, so tests can derive expected values by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sim.scenario import Scenario, scenario_from_dict


def api_profile(
    ttft_s: float = 0.1,
    per_token_s: float = 0.0,
    itl_s: float = 0.02,
    block_size: int = 16,
    name: str = "test-api",
) -> dict[str, Any]:
    """A deterministic black-box endpoint: TTFT = ttft_s + per_token_s·uncached; fixed ITL."""
    return {
        "kind": "api",
        "name": name,
        "provenance": {"engine": "test", "model": "none", "hardware": "none"},
        "block_size": block_size,
        "ttft_base_s": ttft_s,
        "ttft_per_uncached_token_s": per_token_s,
        "itl": {"dist": "fixed", "value_ms": itl_s * 1e3},
    }


def vllm_profile(**step: float) -> dict[str, Any]:
    cost = {
        "base_s": 0.03,
        "prefill_token_s": 0.0005,
        "prefill_attention_s": 2e-7,
        "decode_seq_s": 0.001,
        "context_token_s": 2e-6,
    }
    cost.update(step)
    return {
        "kind": "vllm",
        "name": "test-vllm",
        "provenance": {"engine": "test", "model": "none", "hardware": "none"},
        "block_size": 16,
        "kv_capacity_tokens": 100_000,
        "step": cost,
    }


def write_profile(directory: Path, profile: dict[str, Any]) -> str:
    path = directory / f"{profile['name']}-{len(list(directory.glob('*.json')))}.json"
    path.write_text(json.dumps(profile))
    return str(path)


def moa(
    servers: dict[str, Any], workload: dict[str, Any] | None = None, **topology: Any
) -> Scenario:
    """A MoA scenario; one closed-loop request unless ``workload`` says otherwise."""
    data: dict[str, Any] = {
        "name": "test-moa",
        "seed": 1,
        "servers": servers,
        "topology": {"kind": "moa", **topology},
        "workload": workload or {"requests": 1},
    }
    return scenario_from_dict(data)


def one_at_a_time(
    directory: Path,
    arrival: dict[str, Any] | None = None,
    ttft_s: float = 0.1,
    itl_s: float = 0.009,
) -> Scenario:
    """One ``api`` server serving one request at a time, a lone agent answering 101 tokens:
    a fixed service time of ttft_s + 100·itl_s (1.0 s by default), no network delay."""
    profile = write_profile(directory, api_profile(ttft_s=ttft_s, itl_s=itl_s))
    server = {"kind": "api", "profile": profile, "max_concurrency": 1, "prefix_caching": False}
    return scenario_from_dict(
        {
            "name": "one-at-a-time",
            "servers": {"api": server},
            "topology": {
                "kind": "graph",
                "unit": {"tokens": 101},
                "agents": {"solo": {"steps": 1}},
            },
            "workload": {"arrival": arrival or {"kind": "constant", "rate_per_s": 0.3}},
        }
    )
