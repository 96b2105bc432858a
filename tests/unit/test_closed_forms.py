"""The simulator against results derivable by hand."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sim import Simulator, scenario_from_dict
from sim.texts import MESSAGE_CLOSE_TOKENS, MESSAGE_OPEN_TOKENS
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


def call_starts(records):
    return {r["call"]: r["t"] for r in records if r["type"] == "call"}


@pytest.mark.parametrize("scope", ["first", "all"])
def test_redundancy_scope_decides_which_proposer_the_second_round_waits_for(tmp_path, scope):
    """Redundancy 1: round 1 waits for the 2nd-fastest first chunk either way; round 2 waits
    for the slowest proposer's unit 2 with scope ``first`` (the paper's), for the 2nd-fastest's
    with ``all``. Each proposer's token t arrives at TTFT + (t − 1)·ITL."""
    records, _ = heterogeneous_moa(
        tmp_path,
        mode="staircase",
        redundancy=1,
        redundancy_scope=scope,
        chunks={"proposer": [8, 128], "aggregator": [8, 128]},
    )
    unit_ends = {
        s: [PROPOSER_TTFT + (t - 1) * itl for t in (8, 136)] for s, itl in PROPOSER_ITL.items()
    }
    starts = call_starts(records)
    assert starts["aggregator#1"] == pytest.approx(unit_ends["mid"][0], rel=1e-9)
    waited_for = "slow" if scope == "first" else "mid"
    assert starts["aggregator#2"] == pytest.approx(unit_ends[waited_for][1], rel=1e-9)


def test_per_chunk_calls_pay_a_first_token_latency_per_unit(tmp_path):
    """One call per unit: unit k ends after k calls, each costing TTFT(its prompt) + (size −
    1)·ITL, and each prompt is the previous one plus the unit before it (continued text)."""
    ttft, per_token, itl = 0.1, 0.001, 0.02
    profile = write_profile(tmp_path, api_profile(ttft, per_token, itl, name="hosted"))
    server = {"kind": "api", "profile": profile, "prefix_caching": False}
    scenario = moa(
        {"hosted": server},
        proposers=1,
        mode="staircase",
        proposer_calls="per_chunk",
        agent={"max_tokens": 64},
        aggregator={"max_tokens": 8},  # a round per proposer unit: every unit is read
        chunks={"proposer": [8, 16], "aggregator": [1]},
    )
    records = Simulator(scenario).run().records
    ends = [r for r in records if r["type"] == "call_end" and r["call"].startswith("p1#")]
    sizes = [8, 16, 16, 16, 8]
    assert [r["completion_tokens"] for r in ends] == sizes
    prompts = [r["prompt_tokens"] for r in ends]
    # a strict endpoint answers after the agent's text rather than continuing it: the second
    # call's prompt holds that text as a closed assistant message (its open and close tokens)
    growth = [b - a for a, b in itertools.pairwise(prompts)]
    assert growth == [sizes[0] + MESSAGE_OPEN_TOKENS + MESSAGE_CLOSE_TOKENS, *sizes[1:-1]]
    units = [r["t"] for r in records if r["type"] == "unit" and r["agent"] == "p1"]
    expected = list(
        itertools.accumulate(
            ttft + per_token * p + (n - 1) * itl for p, n in zip(prompts, sizes, strict=True)
        )
    )
    assert units == pytest.approx(expected, rel=1e-9)
    streamed = moa(
        {"hosted": server},
        proposers=1,
        mode="staircase",
        agent={"max_tokens": 64},
        aggregator={"max_tokens": 8},  # a round per proposer unit: every unit is read
        chunks={"proposer": [8, 16], "aggregator": [1]},
    )
    records = Simulator(streamed).run().records
    units = [r["t"] for r in records if r["type"] == "unit" and r["agent"] == "p1"]
    assert units == pytest.approx(
        [ttft + per_token * prompts[0] + (t - 1) * itl for t in (8, 24, 40, 56, 64)], rel=1e-9
    )
