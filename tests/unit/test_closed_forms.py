"""The simulator against results derivable by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim import Simulator, scenario_from_dict
from tests.helpers import api_profile, moa, write_profile


def chain(tmp_path: Path, agents: int, steps: int, mode: str, per_token_s: float = 0.0):
    tau = 0.01  # one decode step; the first token also costs one step (ttft = itl)
    profile = write_profile(tmp_path, api_profile(ttft_s=tau, per_token_s=per_token_s, itl_s=tau))
    names = [f"a{i}" for i in range(agents)]
    graph = {
        name: {"steps": steps, "next": [names[i + 1]] if i + 1 < agents else []}
        for i, name in enumerate(names)
    }
    scenario = scenario_from_dict(
        {
            "servers": {"ideal": {"kind": "api", "profile": profile, "prefix_caching": False}},
            "topology": {"kind": "graph", "mode": mode, "unit": {"tokens": 4}, "agents": graph},
            "workload": {"requests": 1},
        }
    )
    result = Simulator(scenario).run()
    return result.summary["e2e_s"]["p50"]


@pytest.mark.parametrize("agents,steps", [(64, 64), (8, 32), (3, 5)])
def test_streaming_a_chain_reaches_the_pipelining_bound(tmp_path, agents, steps):
    speedup = chain(tmp_path, agents, steps, "serial") / chain(tmp_path, agents, steps, "stream")
    bound = agents * steps / (steps + agents - 1)
    assert speedup == pytest.approx(bound, rel=0.01)
    if agents == steps == 64:
        assert speedup == pytest.approx(32.3, abs=0.1)


def test_prefill_cost_pushes_a_chain_below_the_bound(tmp_path):
    speedup = chain(tmp_path, 16, 16, "serial", 1e-4) / chain(tmp_path, 16, 16, "stream", 1e-4)
    assert 1 < speedup < 16 * 16 / 31 * 0.9


PROPOSER_ITL = {"fast": 0.010, "mid": 0.020, "slow": 0.030}
PROPOSER_TTFT = 0.1
AGG_TTFT, AGG_PER_TOKEN = 0.05, 0.001


def heterogeneous_moa(tmp_path: Path, **topology):
    servers = {
        name: {
            "kind": "api",
            "prefix_caching": False,
            "profile": write_profile(tmp_path, api_profile(PROPOSER_TTFT, 0.0, itl, name=name)),
        }
        for name, itl in PROPOSER_ITL.items()
    }
    servers["agg"] = {
        "kind": "api",
        "prefix_caching": False,
        "profile": write_profile(tmp_path, api_profile(AGG_TTFT, AGG_PER_TOKEN, 0.02, name="agg")),
    }
    scenario = moa(
        servers,
        proposers=3,
        agent={"server": "agg", "max_tokens": 256},
        proposer=[{"server": s} for s in PROPOSER_ITL],
        **topology,
    )
    records = Simulator(scenario).run().records
    (round1,) = [r for r in records if r["type"] == "call_end" and r["call"] == "aggregator#1"]
    return records, round1["prompt_tokens"]


def test_standard_moa_ttft_is_slowest_proposer_plus_aggregator_prefill(tmp_path):
    records, prompt = heterogeneous_moa(tmp_path, mode="standard")
    slowest = PROPOSER_TTFT + 255 * PROPOSER_ITL["slow"]
    expected = slowest + AGG_TTFT + AGG_PER_TOKEN * prompt
    ttft = next(r for r in records if r["type"] == "deltas")["t"][0]
    assert prompt > 3 * 256
    assert ttft == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("redundancy", [0, 1, 2])
def test_staircase_ttft_is_the_kth_fastest_first_chunk_plus_round1_prefill(tmp_path, redundancy):
    records, prompt = heterogeneous_moa(
        tmp_path, mode="staircase", redundancy=redundancy, chunks={"proposer": [8, 128]}
    )
    first_chunks = sorted(PROPOSER_TTFT + 7 * itl for itl in PROPOSER_ITL.values())
    kth_fastest = first_chunks[3 - redundancy - 1]
    expected = kth_fastest + AGG_TTFT + AGG_PER_TOKEN * prompt
    ttft = next(r for r in records if r["type"] == "deltas")["t"][0]
    assert ttft == pytest.approx(expected, rel=1e-9)


def test_a_scenario_may_mix_api_proposers_and_a_vllm_aggregator(tmp_path):
    from tests.helpers import vllm_profile

    servers = {
        "hosted": {"kind": "api", "profile": write_profile(tmp_path, api_profile())},
        "gpu": {"kind": "vllm", "profile": write_profile(tmp_path, vllm_profile())},
    }
    scenario = moa(
        servers,
        {"requests": 3, "arrival": {"kind": "poisson", "rate_per_s": 2.0}},
        proposers=2,
        agent={"server": "hosted", "max_tokens": 64},
        aggregator={"server": "gpu", "max_tokens": 32},
    )
    records = Simulator(scenario).run().records
    served_by = {r["agent"]: r["server"] for r in records if r["type"] == "call"}
    assert served_by == {"p1": "hosted", "p2": "hosted", "aggregator": "gpu"}
    assert sum(r["ok"] for r in records if r["type"] == "request_end") == 3
