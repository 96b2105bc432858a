"""Properties that must hold for any MoA configuration (hypothesis)."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sim import Simulator
from tests.helpers import moa, vllm_profile, write_profile

schedules = st.lists(st.integers(1, 96), min_size=1, max_size=3)


@st.composite
def moa_topologies(draw):
    proposers = draw(st.integers(1, 4))
    return {
        "mode": draw(st.sampled_from(["staircase", "standard"])),
        "proposers": proposers,
        "layers": draw(st.integers(1, 2)),
        "redundancy": draw(st.integers(0, proposers - 1)),
        "template": draw(st.sampled_from(["standard", "prefix_cache"])),
        "chunks": {"proposer": draw(schedules), "aggregator": draw(schedules)},
        "agent": {"max_tokens": draw(st.integers(1, 160))},
        "aggregator": {"max_tokens": draw(st.integers(1, 160))},
    }


def one_server(tmp, profile):
    return {"gpu": {"kind": "vllm", "profile": write_profile(tmp, profile)}}


@settings(max_examples=40, deadline=None)
@given(topology=moa_topologies(), rate=st.sampled_from([0.5, 5.0, 50.0]))
def test_every_request_has_a_positive_ttft_within_e2e_and_all_tokens_counted(
    tmp_path_factory, topology, rate
):
    servers = one_server(tmp_path_factory.mktemp("inv"), vllm_profile())
    workload: dict[str, Any] = {"requests": 3, "arrival": {"kind": "poisson", "rate_per_s": rate}}
    result = Simulator(moa(servers, workload, **topology)).run()
    records, summary = result.records, result.summary
    assert summary["requests"] == 3 and summary["failed_requests"] == 0
    sent = {r["req"]: r["t"] for r in records if r["type"] == "request"}
    for deltas in (r for r in records if r["type"] == "deltas"):
        ttft, e2e = deltas["t"][0] - sent[deltas["req"]], deltas["t"][-1] - sent[deltas["req"]]
        assert 0 < ttft <= e2e
    # every call ends exactly once, and the summary counts every generated token
    calls = {(r["req"], r["call"]) for r in records if r["type"] == "call"}
    ends = [(r["req"], r["call"]) for r in records if r["type"] == "call_end"]
    assert sorted(ends) == sorted(calls)
    generated = sum(r["completion_tokens"] for r in records if r["type"] == "call_end")
    assert summary["generated_tokens"] == generated
    answer = sum(sum(r["n"]) for r in records if r["type"] == "deltas")
    assert answer == 3 * topology["aggregator"]["max_tokens"]


@settings(max_examples=30, deadline=None)
@given(topology=moa_topologies())
def test_staircase_never_raises_ttft_when_prefill_is_cheap(tmp_path_factory, topology):
    servers = one_server(
        tmp_path_factory.mktemp("cheap"), vllm_profile(prefill_token_s=0.0, prefill_attention_s=0.0)
    )
    ttft = {
        mode: Simulator(moa(servers, **{**topology, "mode": mode})).run().summary["ttft_s"]["p50"]
        for mode in ("staircase", "standard")
    }
    assert ttft["staircase"] <= ttft["standard"] + 1e-9


@settings(max_examples=30, deadline=None)
@given(topology=moa_topologies())
def test_more_redundancy_never_delays_the_first_aggregator_round(tmp_path_factory, topology):
    tmp = tmp_path_factory.mktemp("red")
    proposers = topology["proposers"]
    servers = {  # proposers at different speeds, so which ones are slowest matters
        f"s{i}": {
            "kind": "vllm",
            "profile": write_profile(tmp, vllm_profile(base_s=0.01 * (i + 1))),
        }
        for i in range(proposers)
    } | one_server(tmp, vllm_profile())
    topology |= {
        "mode": "staircase",
        "layers": 1,
        "agent": {**topology["agent"], "server": "gpu"},
        "proposer": [{"server": f"s{i}"} for i in range(proposers)],
    }
    waits = []
    for redundancy in range(proposers):
        records = Simulator(moa(servers, **{**topology, "redundancy": redundancy})).run().records
        waits.append(next(r["t"] for r in records if r.get("call") == "aggregator#1"))
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(waits))
