"""mode: multistream — the stream plan, its engine cost and its trace, against hand-derived
values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import stairwise
from sim import Simulator, scenario_from_dict
from sim.dag import build_dag
from sim.errors import ConfigError
from sim.metrics import kv_peaks
from sim.multistream import StreamSchedule, plan_streams
from sim.profile import StepCost
from tests.helpers import api_profile, vllm_profile, write_profile

FIRST_UNIT, PROPOSER_TOKENS, AGGREGATOR_TOKENS = 8, 256, 128


def moa_data(profile: str, proposers: int = 3, **topology: Any) -> dict[str, Any]:
    return {
        "name": "ms-moa",
        "seed": 1,
        "servers": {"s": {"kind": "vllm", "profile": profile}},
        "topology": {
            "kind": "moa",
            "mode": "multistream",
            "proposers": proposers,
            "agent": {"max_tokens": PROPOSER_TOKENS},
            "aggregator": {"max_tokens": AGGREGATOR_TOKENS},
            "chunks": {"proposer": [FIRST_UNIT, 64], "aggregator": [8, 128]},
            **topology,
        },
        "workload": {"requests": 1, "prompt_tokens": {"dist": "fixed", "value": 64}},
    }


def graph_plan(agents: dict[str, Any], lag: int = 1, **topology: Any):
    scenario = scenario_from_dict(
        {
            "servers": {"s": {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m"}},
            "topology": {
                "kind": "graph",
                "mode": "multistream",
                "unit": {"tokens": 4},
                "agents": agents,
                **topology,
            },
        }
    )
    dag = build_dag(scenario)
    return plan_streams(dag, {a.name: a.max_tokens for a in dag.agents}, lag)


# --- the plan: which stream runs at which step -----------------------------------------------


@pytest.mark.parametrize("lag", [1, 3])
def test_the_aggregator_starts_a_lag_after_the_proposers_first_unit(lag):
    dag = build_dag(scenario_from_dict(moa_data("vllm-cpu-smollm2-135m")))
    plan = plan_streams(dag, {a.name: a.max_tokens for a in dag.agents}, lag)
    aggregator = plan.stream("aggregator")
    # the prefill step (0) makes every proposer's first token; token 8 comes at step 7
    assert aggregator.start == FIRST_UNIT - 1 + lag
    assert plan.steps == aggregator.start + AGGREGATOR_TOKENS
    for name in ("p1", "p2", "p3"):  # read until the aggregator's last step, `lag` earlier
        proposer = plan.stream(name)
        assert (proposer.start, proposer.last) == (0, plan.steps - 1 - lag)
    widths = plan.widths()
    assert widths[: aggregator.start].tolist() == [3] * aggregator.start
    assert set(widths[aggregator.start : plan.steps - lag]) == {4}
    assert widths[plan.steps - lag :].tolist() == [1] * lag


def test_an_answer_shorter_than_a_unit_counts_as_ready_when_it_ends():
    dag = build_dag(scenario_from_dict(moa_data("vllm-cpu-smollm2-135m", redundancy=1)))
    plan = plan_streams(dag, {"p1": 3, "p2": 300, "p3": 3, "aggregator": 128})
    assert plan.stream("aggregator").start == 3  # p1 and p3 end at step 2; need 2 of 3
    assert plan.stream("p1").tokens == 3


def test_streams_nobody_reads_run_to_the_end_and_unread_chains_never_run():
    plan = graph_plan(
        {
            "a": {"next": ["c"], "steps": 4},
            "x": {"next": ["y"], "steps": 4},
            "y": {"next": ["b"], "steps": 4},
            "b": {"next": ["c"], "steps": 4},
            "c": {"steps": 1},
            "side": {"steps": 1},
        },
        output="c",
        redundancy=1,
    )
    # c needs 1 of {a, b}: a's first unit (4 tokens) ends at step 3, so c runs steps 4..7;
    # b would start at step 8 (after x and y's first units): too late for anyone to read
    assert (plan.stream("c").start, plan.steps) == (4, 8)
    assert [plan.stream(n).tokens for n in ("x", "y", "b")] == [0, 0, 0]
    assert plan.stream("a").last == 6  # c's last step reads a's step-6 token
    assert plan.stream("side").tokens == 4  # no consumer, not the answer: runs from step 0


@pytest.mark.parametrize("agents,steps", [(2, 3), (5, 8)])
def test_a_chain_pipelines_one_unit_per_agent(agents, steps):
    names = [f"a{i}" for i in range(agents)]
    plan = graph_plan(
        {n: {"steps": steps, "next": names[i + 1 : i + 2]} for i, n in enumerate(names)}
    )
    unit = 4  # graph_plan's unit.tokens
    assert [plan.stream(n).start for n in names] == [i * unit for i in range(agents)]
    assert plan.steps == (agents - 1) * unit + steps * unit


def test_a_debate_round_starts_on_the_first_unit_and_keeps_every_reader_fed():
    scenario = scenario_from_dict(
        {
            "servers": {"s": {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m"}},
            "topology": {"kind": "debate", "mode": "multistream", "agents": 2, "rounds": 2,
                         "chunks": [8], "agent": {"max_tokens": 100}},
        }
    )  # fmt: skip
    dag = build_dag(scenario)
    plan = plan_streams(dag, {a.name: 100 for a in dag.agents})
    assert plan.steps == 8 + 100
    assert (plan.stream("r2.a2").start, plan.stream("r2.a2").last) == (8, 107)  # unread: to the end
    assert plan.stream("r1.a1").tokens == 100  # r2.a2 still reads it at step 101


def test_a_schedule_gives_the_engine_each_steps_width():
    plan = graph_plan({"a": {"next": ["b"], "steps": 2}, "b": {"steps": 3}})
    schedule = StreamSchedule.of(plan, token_s=0.5)
    assert [schedule.width(s) for s in range(plan.steps)] == plan.widths().tolist()
    assert schedule.changes[0] == 0
    assert all(a != b for a, b in zip(schedule.widths, schedule.widths[1:], strict=False))


# --- the engine: K streams as one sequence ------------------------------------------------------


def simulate(tmp_path: Path, step: dict[str, float], proposers: int = 3, **topology: Any):
    profile = write_profile(tmp_path, vllm_profile(**step))
    scenario = scenario_from_dict(moa_data(profile, proposers, **topology))
    result = Simulator(scenario).run()
    return scenario, result


IDEAL = {"base_s": 0.02, "prefill_token_s": 0.001, "prefill_attention_s": 0.0,
         "decode_seq_s": 0.005, "context_token_s": 0.0}  # fmt: skip


def closed_form(tmp_path: Path, step: dict[str, float], stream_token_s: float, proposers: int):
    """(TTFT, E2E, steps' widths, prompt) the way the issue states the model."""
    scenario, result = simulate(
        tmp_path, step, proposers, multistream={"stream_token_s": stream_token_s}
    )
    dag = build_dag(scenario)
    plan = plan_streams(dag, {a.name: a.max_tokens for a in dag.agents})
    (first,) = [r for r in result.records if r["type"] == "call_end" and r["prompt_tokens"]]
    return result.summary, plan, first["prompt_tokens"]


@pytest.mark.parametrize("proposers", [1, 2, 4])
def test_k_streams_on_an_ideal_engine_finish_in_the_time_of_one(tmp_path, proposers):
    summary, plan, prompt = closed_form(tmp_path, IDEAL, 0.0, proposers)
    cost = StepCost(**vllm_profile(**IDEAL)["step"])
    prefill, decode = cost.seconds(prompt, 0.0, 0, 0), cost.seconds(0, 0.0, 1, 0)
    # the aggregator's first token: the prefill step, then one step per start-rule token
    assert summary["ttft_s"]["p50"] == pytest.approx(prefill + FIRST_UNIT * decode)
    assert summary["e2e_s"]["p50"] == pytest.approx(prefill + (plan.steps - 1) * decode)


def test_each_stream_beyond_the_first_costs_stream_token_s_per_step(tmp_path):
    summary, plan, prompt = closed_form(tmp_path, IDEAL, 0.003, proposers=3)
    cost = StepCost(**vllm_profile(**IDEAL)["step"])
    prefill, decode = cost.seconds(prompt, 0.0, 0, 0), cost.seconds(0, 0.0, 1, 0)
    extra = 0.003 * (plan.widths() - 1)
    assert summary["e2e_s"]["p50"] == pytest.approx(
        prefill + (plan.steps - 1) * decode + extra.sum()
    )


def test_the_default_stream_cost_is_the_profiles_prefill_token_cost(tmp_path):
    default, _, _ = closed_form(tmp_path, IDEAL, IDEAL["prefill_token_s"], proposers=3)
    _, result = simulate(tmp_path, IDEAL, 3)
    assert result.summary["e2e_s"]["p50"] == pytest.approx(default["e2e_s"]["p50"])


def test_the_shared_context_grows_by_k_tokens_per_step(tmp_path):
    step = {**IDEAL, "context_token_s": 1e-5}
    summary, plan, prompt = closed_form(tmp_path, step, 0.0, proposers=3)
    cost = StepCost(**vllm_profile(**step)["step"])
    widths = plan.widths()
    context_before = prompt + np.cumsum(widths)[:-1]  # the KV each decode step reads
    expected = cost.seconds(prompt, 0.0, 0, 0) + sum(
        cost.seconds(0, 0.0, 1, int(kv)) for kv in context_before
    )
    assert summary["e2e_s"]["p50"] == pytest.approx(expected)
    # one sequence holds the prompt once plus every stream's tokens
    assert summary["kv_peak_tokens"]["p50"] == pytest.approx(prompt + widths.sum())


def test_the_trace_has_one_call_per_stream_and_the_answer_deltas(tmp_path):
    _, result = simulate(tmp_path, IDEAL)
    calls = [r for r in result.records if r["type"] == "call"]
    ends = {r["call"]: r for r in result.records if r["type"] == "call_end"}
    assert [c["agent"] for c in calls] == ["p1", "p2", "p3", "aggregator"]
    assert [c["final"] for c in calls] == [False, False, False, True]
    assert sum(e["prompt_tokens"] > 0 for e in ends.values()) == 1  # the prompt, paid once
    assert ends["aggregator#1"]["status"] == "ok"
    assert {ends[f"p{i}#1"]["status"] for i in (1, 2, 3)} == {"cancelled"}  # cut: unread
    assert result.summary["tpot_s"]["count"] == 1
    assert result.summary["generated_tokens"] == sum(e["completion_tokens"] for e in ends.values())


@pytest.mark.parametrize("kv_capacity", [None, 1_600])
def test_many_requests_batch_as_one_entry_each_even_through_preemption(tmp_path, kv_capacity):
    profile = write_profile(tmp_path, vllm_profile())
    data = moa_data(profile)
    data["servers"]["s"]["kv_capacity_tokens"] = kv_capacity
    data["workload"] = {"requests": 6, "arrival": {"kind": "constant", "rate_per_s": 20.0}}
    simulator = Simulator(scenario_from_dict(data))
    result = simulator.run()
    (engine,) = simulator.engines["s"]
    assert engine.steps < 6 * AGGREGATOR_TOKENS  # the requests shared steps
    assert (engine.preemptions > 0) == (kv_capacity is not None)  # ~650 tokens per request
    assert result.summary["requests"] == 6
    assert result.summary["tpot_s"]["count"] == 6
    deltas = [r for r in result.records if r["type"] == "deltas"]
    assert [sum(d["n"]) for d in deltas] == [AGGREGATOR_TOKENS] * 6


# --- scenario rules and the live refusal ----------------------------------------------------


def test_all_streams_must_share_one_vllm_server(tmp_path):
    data = moa_data("vllm-cpu-smollm2-135m")
    data["servers"]["t"] = {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m"}
    data["topology"]["agent"]["server"] = "s"
    data["topology"]["aggregator"]["server"] = "t"
    with pytest.raises(ConfigError, match="one server"):
        scenario_from_dict(data)
    api = moa_data(write_profile(tmp_path, api_profile()))
    api["servers"]["s"]["kind"] = "api"
    with pytest.raises(ConfigError, match="needs a vllm server"):
        scenario_from_dict(api)


def test_multistream_settings_belong_to_multistream_mode():
    data = moa_data("vllm-cpu-smollm2-135m", multistream={"lag_steps": 2})
    data["topology"]["mode"] = "staircase"
    with pytest.raises(ConfigError, match="apply to mode: multistream"):
        scenario_from_dict(data)


def test_run_and_validate_refuse_multistream():
    scenario = scenario_from_dict(moa_data("vllm-cpu-smollm2-135m"))
    for entry in (stairwise.api.run, stairwise.api.validate):
        with pytest.raises(ConfigError, match="simulator-only what-if"):
            entry(scenario)


# --- the KV metric on a hand-written trace --------------------------------------------------


def test_kv_peak_counts_concurrent_calls_and_not_sequential_rounds():
    def call(name: str, start: float, end: float, prompt: int, output: int) -> list[dict]:
        return [
            {"type": "call", "req": 0, "call": name, "t": start},
            {"type": "call_end", "req": 0, "call": name, "t": end, "prompt_tokens": prompt,
             "completion_tokens": output},
        ]  # fmt: skip

    records = [
        *call("p#1", 0.0, 4.0, 10, 40),  # 10 + 10 tokens per second
        *call("a#1", 2.0, 3.0, 30, 5),  # at its end (t=3): 35, while p holds 10 + 30
        *call("a#2", 3.0, 4.0, 35, 5),  # starts as a#1 ends: its rounds never overlap
    ]
    assert kv_peaks(records) == {0: pytest.approx(max(10 + 30 + 35, 10 + 40 + 40))}
