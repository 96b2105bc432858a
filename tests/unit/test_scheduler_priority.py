"""vLLM's priority scheduling in the simulated engine, against hand-computed schedules.

The profile prices every step at 10 ms whatever it holds, so a call of n tokens on an engine
serving one sequence at a time takes n steps (the prefill step samples the first token).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import simpy

from sim.engines.base import CallResult, EngineCall
from sim.engines.vllm import VllmEngine
from sim.profile import VllmProfile
from sim.scenario import VllmServer
from tests.helpers import vllm_profile

STEP_S = 0.01


def engine(env: simpy.Environment, policy: str, **server: Any) -> VllmEngine:
    flat = vllm_profile(
        base_s=STEP_S, prefill_token_s=0, prefill_attention_s=0, decode_seq_s=0, context_token_s=0
    )
    profile = VllmProfile.model_validate(flat)
    config = VllmServer(profile="test", scheduling_policy=policy, **server)
    return VllmEngine(env, profile, config)


def submit_at(
    env: simpy.Environment,
    target: VllmEngine,
    at: float,
    name: str,
    priority: int,
    finished: dict[str, float],
    tokens: int = 10,
    prompt: int = 16,
) -> None:
    def done(result: CallResult, times: np.ndarray) -> None:
        finished[name] = env.now

    call = EngineCall(
        key=name,
        prompt=[(("prompt", name), 0, prompt)],
        output=("output", name),
        output_start=0,
        tokens=tokens,
        watch=(),
        progress=lambda times: None,
        done=done,
        priority=priority,
    )

    def later():  # type: ignore[no-untyped-def]
        yield env.timeout(at)
        target.submit(call)

    env.process(later())


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        # B arrived before C: first come, first served
        ("fcfs", {"A": 0.10, "B": 0.20, "C": 0.30}),
        # C (priority -1) overtakes B (priority 0) in the waiting queue
        ("priority", {"A": 0.10, "C": 0.20, "B": 0.30}),
    ],
)
def test_the_waiting_queue_serves_the_lowest_priority_value_first(policy, expected):
    env = simpy.Environment()
    target = engine(env, policy, max_num_seqs=1)
    finished: dict[str, float] = {}
    submit_at(env, target, 0.0, "A", 0, finished)
    submit_at(env, target, 0.025, "B", 0, finished)
    submit_at(env, target, 0.035, "C", -1, finished)
    env.run()
    assert finished == pytest.approx(expected)
    assert list(finished) == list(expected)


def test_equal_priorities_keep_arrival_order():
    env = simpy.Environment()
    target = engine(env, "priority", max_num_seqs=1)
    finished: dict[str, float] = {}
    for index, name in enumerate("ABC"):
        submit_at(env, target, 0.005 * index, name, 3, finished)
    env.run()
    assert finished == pytest.approx({"A": 0.10, "B": 0.20, "C": 0.30})


@pytest.mark.parametrize(("policy", "first_done"), [("fcfs", "X"), ("priority", "Y")])
def test_a_full_cache_preempts_the_least_urgent_sequence(policy, first_done):
    """Two sequences of 16 + 40 tokens need 4 blocks each; 6 fit. FCFS preempts the newest
    (Y), the priority policy the one with the higher priority value (X, although older)."""
    env = simpy.Environment()
    target = engine(env, policy, kv_capacity_tokens=6 * 16)
    finished: dict[str, float] = {}
    submit_at(env, target, 0.0, "X", 0, finished, tokens=40)
    submit_at(env, target, 0.0, "Y", -1, finished, tokens=40)
    env.run()
    assert target.preemptions >= 1
    assert next(iter(finished)) == first_done
    # the survivor ran alone after the preemption: 40 steps from the first shared step
    assert finished[first_done] == pytest.approx(40 * STEP_S)
