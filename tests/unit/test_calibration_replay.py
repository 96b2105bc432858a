"""Trace-driven replay: a trace replayed on the profile that made it comes back unchanged."""

from __future__ import annotations

from dataclasses import replace

import pytest

from calibration import read_tables
from calibration.replay import FRAMING_TOKENS, EngineSettings, compare, plan, replay
from sim import Simulator, scenario_from_dict
from sim.errors import ConfigError
from sim.profile import load_profile
from tests.helpers import vllm_profile, write_profile


def simulated(tmp_path, topology, workload):
    path = write_profile(tmp_path, vllm_profile())
    scenario = scenario_from_dict(
        {
            "seed": 5,
            "servers": {"gpu": {"kind": "vllm", "profile": path}},
            "topology": topology,
            "workload": workload,
        }
    )
    trace = tmp_path / "run.jsonl"
    Simulator(scenario, trace_path=trace).run()
    (table,) = read_tables([trace])
    return table, load_profile(path)


def test_a_staircase_moa_trace_replays_exactly_on_its_own_profile(tmp_path):
    table, profile = simulated(
        tmp_path,
        {"kind": "moa", "proposers": 3, "agent": {"max_tokens": 40}, "template": "prefix_cache"},
        {
            "requests": 6,
            "arrival": {"kind": "poisson", "rate_per_s": 1.0},
            "output_tokens": {"dist": "uniform", "low": 10, "high": 40},
        },
    )
    result = compare(table, profile, EngineSettings())
    assert result["error_pct"] == {k: 0.0 for k in ("ttft_p50", "ttft_p90", "tpot_p50", "e2e_p50")}
    assert result["predicted"]["ttft_s"] == result["observed"]["ttft_s"]
    assert result["predicted"]["source"] == "sim"


def test_the_one_agent_replay_sends_exactly_the_measured_prompt(tmp_path):
    table, profile = simulated(
        tmp_path,
        {"kind": "graph", "unit": {"tokens": 32}, "agents": {"solo": {"steps": 1}}},
        {
            "requests": 8,
            "arrival": {"kind": "poisson", "rate_per_s": 3},
            "prompt_tokens": {"dist": "uniform", "low": 20, "high": 600},
        },
    )
    generic = replace(table, scenario=None, format="test")
    records = replay(plan(generic, "vllm", EngineSettings()), profile)
    prompts = {r["req"]: r["prompt_tokens"] for r in records if r["type"] == "call_end"}
    sent = [prompts[req] for req in sorted(prompts)]
    assert sent == [r.prompt_tokens for r in generic.served]
    assert all(r.prompt_tokens > FRAMING_TOKENS for r in generic.served)
    errors = compare(generic, profile, EngineSettings())["error_pct"]
    assert errors == {k: pytest.approx(0.0, abs=1e-9) for k in errors}


def test_a_slower_profile_predicts_slower_latencies(tmp_path):
    table, profile = simulated(
        tmp_path,
        {"kind": "graph", "unit": {"tokens": 32}, "agents": {"solo": {"steps": 1}}},
        {"requests": 8},
    )
    slower = profile.model_copy(
        update={"step": profile.step.model_copy(update={"base_s": 2 * profile.step.base_s})}
    )
    errors = compare(table, slower, EngineSettings())["error_pct"]
    assert errors["tpot_p50"] > 30 and errors["e2e_p50"] > 30


def test_a_multi_server_trace_needs_the_server_named(tmp_path):
    table, _ = simulated(
        tmp_path,
        {"kind": "graph", "agents": {"solo": {"steps": 1}}},
        {"requests": 2},
    )
    two = dict(table.scenario or {})
    two["servers"] = {"a": two["servers"]["gpu"], "b": two["servers"]["gpu"]}
    two["topology"] = {**two["topology"], "agent": {**two["topology"]["agent"], "server": "a"}}
    with pytest.raises(ConfigError, match="--server"):
        plan(replace(table, scenario=two), "vllm", EngineSettings())
