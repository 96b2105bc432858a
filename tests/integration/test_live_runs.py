"""Real runs on the local vLLM server: the staircase effect, the prefix cache, step streaming."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import pytest

from live.runner import LiveRunner
from sim import Simulator
from tests.integration.conftest import live_scenario

pytestmark = pytest.mark.live

MOA = {
    "kind": "moa",
    "proposers": 3,
    "agent": {"max_tokens": 64},
    "aggregator": {"max_tokens": 32},
    "chunks": {"proposer": [8, 32], "aggregator": [8, 24]},
}


def run(scenario):
    return asyncio.run(LiveRunner(scenario).run())


def assert_every_token_is_traced(records):
    """The answer's calls have every piece in deltas; every call its count in call_end."""
    received = defaultdict(int)
    for r in records:
        if r["type"] == "deltas":
            received[(r["req"], r["call"])] += sum(r["n"])
    calls = {(r["req"], r["call"]): r for r in records if r["type"] == "call"}
    for end in (r for r in records if r["type"] == "call_end"):
        key = (end["req"], end["call"])
        assert received[key] == (end["completion_tokens"] if calls[key]["final"] else 0)
        if end["status"] == "ok":
            assert end["completion_tokens"] == calls[key]["tokens"]


@pytest.fixture(scope="module")
def moa_runs(vllm_url):
    """The MoA run live in both modes, once for the tests that read it."""
    return {mode: run(live_scenario(vllm_url, {**MOA, "mode": mode})) for mode in MODES}


MODES = ("staircase", "standard")


def test_staircase_moa_answers_sooner_than_standard_on_the_same_prompts(moa_runs):
    staircase, standard = (moa_runs[mode] for mode in MODES)
    for result in (staircase, standard):
        assert result.summary["requests"] == 2 and result.summary["failed_requests"] == 0
        assert_every_token_is_traced(result.records)
        answer = [
            r for r in result.records if r["type"] == "deltas" and r["call"].startswith("agg")
        ]
        assert sum(sum(r["n"]) for r in answer) == 2 * 32
    prompts = [
        [r["prompt_tokens"] for r in result.records if r["type"] == "request"]
        for result in (staircase, standard)
    ]
    assert prompts[0] == prompts[1]
    assert staircase.summary["ttft_s"]["p50"] < 0.6 * standard.summary["ttft_s"]["p50"]


def test_the_simulator_counts_each_prompt_as_the_server_does(vllm_url, moa_runs):
    """Every call's prompt — system prompt, template, the aggregator's header and answer
    labels, the proposers' text — sized by the simulator within a few tokens of the server's
    own count (estimated at a fifth of its tokens, the labels once cost an aggregator 15)."""
    for mode in MODES:
        live = {
            (r["req"], r["call"]): r["prompt_tokens"]
            for r in moa_runs[mode].records
            if r["type"] == "call_end" and r["status"] == "ok"
        }
        simulated = Simulator(live_scenario(vllm_url, {**MOA, "mode": mode})).run()
        counted = {
            (r["req"], r["call"]): r["prompt_tokens"]
            for r in simulated.records
            if r["type"] == "call_end" and r["status"] == "ok"
        }
        both = live.keys() & counted.keys()  # a staircase cancels by timing: some ended apart
        assert any(call.startswith("agg") for _, call in both), mode
        for key in both:
            tokens = live[key]
            # a streamed unit may end a token or two past its boundary live
            assert abs(counted[key] - tokens) <= max(3, 0.03 * tokens), (mode, key)


def metric_delta(records, name):
    snapshots = {r["when"]: r["values"] for r in records if r["type"] == "server_metrics"}
    return snapshots["after"].get(name, 0.0) - snapshots["before"].get(name, 0.0)


def test_the_prefix_cache_template_is_served_from_the_cache(vllm_url):
    topology = {
        **MOA,
        "mode": "staircase",
        "agent": {"max_tokens": 192},
        "aggregator": {"max_tokens": 32},
        "chunks": {"proposer": [16, 64], "aggregator": [8, 8]},
    }
    computed = {}
    for template in ("prefix_cache", "standard"):
        result = run(live_scenario(vllm_url, {**topology, "template": template}))
        assert result.summary["failed_requests"] == 0
        hits = metric_delta(result.records, "vllm:prefix_cache_hits_total")
        computed[template] = metric_delta(
            result.records, "vllm:request_prefill_kv_computed_tokens_sum"
        )
        if template == "prefix_cache":
            assert hits > 0
            assert result.summary["cached_tokens"] > 0
    assert computed["prefix_cache"] < computed["standard"]


def test_a_streaming_chain_forwards_steps_before_upstream_agents_finish(vllm_url):
    topology = {
        "kind": "graph",
        "mode": "stream",
        "unit": {"tokens": 16},
        "agents": {
            "plan": {"next": ["solve"], "steps": 3},
            "solve": {"next": ["check"], "steps": 3},
            "check": {"steps": 3},
        },
    }
    workload = {"requests": 2, "arrival": {"kind": "poisson", "rate_per_s": 4.0}}
    result = run(live_scenario(vllm_url, topology, workload=workload))
    records = result.records
    assert result.summary["requests"] == 2
    first_start = {
        r["agent"]: r["t"] for r in reversed(records) if r["type"] == "call" and r["req"] == 0
    }
    last_end = {}
    for r in records:
        if r["type"] == "call_end" and r["req"] == 0:
            last_end[r["call"].split("#")[0]] = r["t"]
    assert first_start["solve"] < last_end["plan"]
    assert first_start["check"] < last_end["solve"]
    assert_every_token_is_traced(records)


def test_prompts_from_a_workload_file_are_sent_as_given(vllm_url, tmp_path):
    rows = [
        {"prompt": "Name three rivers.", "output_tokens": 8},
        {"prompt": "Why is the sky blue? Answer briefly.", "output_tokens": 8},
    ]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows))
    topology = {"kind": "graph", "unit": {"tokens": 8}, "agents": {"solo": {"steps": 1}}}
    result = run(live_scenario(vllm_url, topology, workload={"file": str(path)}))
    assert result.summary["requests"] == 2
    sent = [r["prompt_tokens"] for r in result.records if r["type"] == "request"]
    called = [r["prompt_tokens"] for r in result.records if r["type"] == "call_end"]
    # the server counts the query plus the chat framing and the system prompt
    assert all(0 < q < c for q, c in zip(sent, called, strict=True))
    assert sent[0] < sent[1]


def test_the_completions_endpoint_and_a_secret_key_that_never_reaches_the_trace(
    vllm_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("STAIRWISE_TEST_KEY", "sk-very-secret-value")
    topology = {"kind": "graph", "unit": {"tokens": 12}, "agents": {"solo": {"steps": 1}}}
    scenario = live_scenario(vllm_url, topology)
    server = scenario.servers["local"].model_copy(
        update={"api": "completions", "api_key_env": "STAIRWISE_TEST_KEY"}
    )
    scenario = scenario.model_copy(update={"servers": {"local": server}})
    trace = tmp_path / "trace.jsonl"
    result = asyncio.run(LiveRunner(scenario, trace_path=trace).run())
    assert result.summary["requests"] == 2 and result.summary["generated_tokens"] == 24
    assert_every_token_is_traced(result.records)
    text = trace.read_text()
    assert "sk-very-secret-value" not in text and "STAIRWISE_TEST_KEY" in text


def test_the_latency_proxy_delays_requests_and_every_streamed_piece(vllm_url):
    from live.proxy import ProxyConfig, free_port, start_proxy
    from sim.distributions import FixedLatency

    topology = {"kind": "graph", "unit": {"tokens": 16}, "agents": {"solo": {"steps": 1}}}
    direct = run(live_scenario(vllm_url, topology))
    config = ProxyConfig(
        upstream=vllm_url.removesuffix("/v1"), latency=FixedLatency(value_ms=150.0)
    )
    with start_proxy(config, free_port()) as url:
        delayed = run(live_scenario(url, topology))
    # the request and the first piece each wait 150 ms; later pieces keep their spacing (a
    # proxy that delayed them in turn would add 150 ms to every gap; two runs' own gaps differ
    # by tens of ms on the CPU engine)
    extra = delayed.summary["ttft_s"]["p50"] - direct.summary["ttft_s"]["p50"]
    assert 0.25 < extra < 0.6
    assert delayed.summary["itl_s"]["p50"] < direct.summary["itl_s"]["p50"] + 0.075
