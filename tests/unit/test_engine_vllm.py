"""The vLLM engine model: step arithmetic, batching, prefix cache, chunked prefill, KV limits."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import Simulator, scenario_from_dict
from sim.engines.vllm import _step_ends
from sim.errors import ConfigError
from sim.profile import SHORT_RUN, StepCost, parse_profile
from sim.texts import estimate_tokens
from sim.workload import RequestSpec
from tests.helpers import vllm_profile, write_profile

COST = StepCost(**vllm_profile()["step"])


def solo(tmp_path: Path, **kwargs: Any):
    return solo_simulator(tmp_path, **kwargs).run()


def solo_simulator(
    tmp_path: Path,
    tokens: int = 32,
    requests: int = 1,
    concurrency: int = 1,
    server: dict[str, Any] | None = None,
    system_prompt: str | None = None,
    profile: dict[str, Any] | None = None,
    arrival: dict[str, Any] | None = None,
    prompt: int = 64,
):
    """One agent answering ``tokens`` tokens per request on one simulated vLLM server."""
    path = write_profile(tmp_path, profile or vllm_profile())
    agent: dict[str, Any] = {"steps": 1}
    if system_prompt is not None:
        agent["system_prompt"] = system_prompt
    scenario = scenario_from_dict(
        {
            "servers": {"gpu": {"kind": "vllm", "profile": path, **(server or {})}},
            "topology": {"kind": "graph", "unit": {"tokens": tokens}, "agents": {"solo": agent}},
            "workload": {
                "requests": requests,
                "prompt_tokens": {"dist": "fixed", "value": prompt},
                "arrival": arrival or {"kind": "closed", "concurrency": concurrency},
            },
        }
    )
    return Simulator(scenario)


def call_ends(result):
    """Calls as they ended: with the prompt the engine was given (``prompt_tokens``)."""
    return [r for r in result.records if r["type"] == "call_end"]


def answers(result):
    return [r["t"] for r in result.records if r["type"] == "deltas"]


def test_one_request_on_an_idle_engine_follows_the_step_cost(tmp_path):
    result = solo(tmp_path, tokens=32)
    (call,) = call_ends(result)
    (times,) = answers(result)
    p = call["prompt_tokens"]
    ttft = COST.seconds(p, p * p, 0, 0)
    decode = sum(COST.seconds(0, 0, 1, p + k) for k in range(1, 32))
    assert times[0] == pytest.approx(ttft, rel=1e-9)
    assert times[-1] == pytest.approx(ttft + decode, rel=1e-9)
    assert len(times) == 32


def test_concurrent_requests_share_steps(tmp_path):
    result = solo(tmp_path, tokens=16, requests=4, concurrency=4)
    p = call_ends(result)[0]["prompt_tokens"]
    ttft = COST.seconds(4 * p, 4 * p * p, 0, 0)
    decode = sum(COST.seconds(0, 0, 4, 4 * (p + k)) for k in range(1, 16))
    for times in answers(result):
        assert times[0] == pytest.approx(ttft)
        assert times[-1] == pytest.approx(ttft + decode)


def test_a_repeated_prefix_is_served_from_the_cache(tmp_path):
    system = "You answer briefly. " * 30
    result = solo(tmp_path, tokens=4, requests=2, system_prompt=system)
    first, second = (r for r in result.records if r["type"] == "call_end")
    # system message framing (3 + 2) and the user message opening (3) precede the query
    shared = estimate_tokens(system) + 8
    assert first["cached_tokens"] == 0
    assert second["cached_tokens"] == shared // 16 * 16
    p, c = second["prompt_tokens"], second["cached_tokens"]
    sent = [r["t"] for r in result.records if r["type"] == "request"]
    ttft = answers(result)[1][0] - sent[1]
    assert ttft == pytest.approx(COST.seconds(p - c, (p - c) * p, 0, 0))


@settings(max_examples=25, deadline=None)
@given(system_words=st.integers(0, 120), prompt=st.integers(1, 300))
def test_cached_tokens_never_cost_prefill_time(tmp_path_factory, system_words, prompt):
    tmp_path = tmp_path_factory.mktemp("cache")
    system = "word " * system_words or "x"
    result = solo(tmp_path, tokens=2, requests=2, system_prompt=system, prompt=prompt)
    end = [r for r in result.records if r["type"] == "call_end"][1]
    p, c = end["prompt_tokens"], end["cached_tokens"]
    sent = [r["t"] for r in result.records if r["type"] == "request"][1]
    assert answers(result)[1][0] - sent == pytest.approx(COST.seconds(p - c, (p - c) * p, 0, 0))


def test_long_prompts_are_prefilled_in_chunks_of_the_token_budget(tmp_path):
    result = solo(tmp_path, tokens=2, prompt=600, server={"max_num_batched_tokens": 256})
    p = call_ends(result)[0]["prompt_tokens"]
    expected, done = 0.0, 0
    while done < p:
        chunk = min(256, p - done)
        expected += COST.seconds(chunk, chunk * (done + chunk), 0, 0)
        done += chunk
    assert answers(result)[0][0] == pytest.approx(expected)


def test_decode_steps_are_advanced_in_few_events(tmp_path):
    result = solo(tmp_path, tokens=1024)
    assert len(answers(result)[0]) == 1024
    assert result.events < 20


def test_a_full_kv_cache_preempts_but_every_token_is_still_produced(tmp_path):
    profile = vllm_profile()
    profile["kv_capacity_tokens"] = 16 * 30  # 30 blocks for 4 sequences of ~13 blocks each
    simulator = solo_simulator(tmp_path, tokens=128, requests=4, concurrency=4, profile=profile)
    result = simulator.run()
    assert simulator.engines["gpu"][0].preemptions > 0
    assert [len(t) for t in answers(result)] == [128] * 4
    assert result.summary["requests"] == 4


def test_prefill_first_scheduling_stalls_running_decodes(tmp_path):
    def longest_gap_of_first_request(scheduler: str) -> float:
        profile = vllm_profile()
        profile["scheduler"] = scheduler
        result = solo(
            tmp_path,
            tokens=64,
            requests=2,
            prompt=1500,
            profile=profile,
            arrival={"kind": "constant", "rate_per_s": 1.0},
        )
        first = answers(result)[0]
        return max(b - a for a, b in itertools.pairwise(first))

    prefill = COST.seconds(1500, 1500 * 1500, 0, 0)
    mixed = longest_gap_of_first_request("mixed")
    prefill_first = longest_gap_of_first_request("prefill_first")
    assert mixed >= prefill * 0.95  # the arriving prompt shares (and slows) the decode step
    assert prefill_first > mixed  # an extra prefill-only step before decoding resumes


def prompt_batch_first_tokens(
    tmp_path: Path, prompts: tuple[int, int], padding: int | None
) -> tuple[list[float], list[int]]:
    """Two prompts sent together to a prefill-first engine: when each got its first token, and
    the prompt sizes the engine saw (the query plus the chat framing)."""
    profile = vllm_profile()
    profile["scheduler"] = "prefill_first"
    if padding is not None:
        profile["prompt_padding"] = padding
    scenario = scenario_from_dict(
        {
            "servers": {"gpu": {"kind": "vllm", "profile": write_profile(tmp_path, profile)}},
            "topology": {"kind": "graph", "unit": {"tokens": 2}, "agents": {"solo": {}}},
            "workload": {"requests": 2},
        }
    )
    specs = [RequestSpec(i, n, {"solo": 2}, 0.0) for i, n in enumerate(prompts)]
    result = Simulator(scenario, requests=specs).run()
    first = {r["req"]: r["t"][0] for r in result.records if r["type"] == "deltas"}
    sizes = {r["req"]: r["prompt_tokens"] for r in call_ends(result)}
    return [first[0], first[1]], [sizes[0], sizes[1]]


def test_vllm_0_2_pads_a_prompt_batch_to_its_longest_prompt(tmp_path):
    (together, _), (long, short) = prompt_batch_first_tokens(tmp_path, (1000, 700), None)
    assert together == pytest.approx(COST.seconds(long + short, long**2 + short**2, 0, 0))
    padded, _ = prompt_batch_first_tokens(tmp_path, (1000, 700), padding=long - short)
    assert padded == pytest.approx([COST.seconds(2 * long, 2 * long**2, 0, 0)] * 2)


def test_vllm_0_2_runs_apart_prompts_that_would_pad_too_much_or_overflow_the_budget(tmp_path):
    (first, second), (long, short) = prompt_batch_first_tokens(tmp_path, (1000, 700), 256)
    alone = COST.seconds(long, long**2, 0, 0)
    assert (first, second) == pytest.approx((alone, alone + COST.seconds(short, short**2, 0, 0)))
    # two prompts of ~1,000 tokens fit the 2,048-token budget, padded to the longer they do not
    (first, second), (short, long) = prompt_batch_first_tokens(tmp_path, (970, 1020), 1000)
    assert short + long <= 2048 < 2 * long
    assert first == pytest.approx(COST.seconds(short, short**2, 0, 0))
    assert second == pytest.approx(first + COST.seconds(long, long**2, 0, 0))


def test_prompt_padding_is_refused_for_an_engine_that_does_not_pad(tmp_path):
    profile = vllm_profile()
    profile["prompt_padding"] = 256
    with pytest.raises(ConfigError, match="prompt_padding"):
        parse_profile(profile, "test")


def test_a_profile_says_how_many_characters_its_tokenizer_packs_in_a_token(tmp_path):
    system = "x" * 600
    prompts = []
    for chars_per_token in (4.0, 6.0):
        profile = vllm_profile()
        profile["chars_per_token"] = chars_per_token
        result = solo(tmp_path, tokens=2, system_prompt=system, profile=profile)
        prompts.append(call_ends(result)[0]["prompt_tokens"])
    assert prompts[0] - prompts[1] == estimate_tokens(system, 4.0) - estimate_tokens(system, 6.0)


def test_sequences_a_step_decodes_for_free_cost_nothing_extra(tmp_path):
    def decode_gap(free: int) -> float:
        profile = vllm_profile(decode_seq_s=0.01)
        profile["step"]["decode_seqs_free"] = free
        result = solo(tmp_path, tokens=8, requests=4, concurrency=4, profile=profile)
        times = answers(result)[0]
        return times[-1] - times[-2]

    assert decode_gap(4) == pytest.approx(decode_gap(0) - 4 * 0.01)
    assert decode_gap(2) == pytest.approx(decode_gap(0) - 2 * 0.01)


def test_text_prompts_from_a_workload_file_are_sized_with_the_profiles_tokenizer(tmp_path):
    prompt = "How does the harbour town earn its living? " * 14
    workload = tmp_path / "requests.jsonl"
    workload.write_text(json.dumps({"prompt": prompt}) + "\n")
    sizes = []
    for chars_per_token in (4.0, 6.0):
        profile = vllm_profile()
        profile["chars_per_token"] = chars_per_token
        scenario = scenario_from_dict(
            {
                "servers": {"gpu": {"kind": "vllm", "profile": write_profile(tmp_path, profile)}},
                "topology": {"kind": "graph", "unit": {"tokens": 4}, "agents": {"solo": {}}},
                "workload": {"file": str(workload)},
            }
        )
        records = Simulator(scenario).run().records
        sizes.append(next(r["prompt_tokens"] for r in records if r["type"] == "request"))
    # the live runner counts them with the answering agent's tokenizer; the simulator with its
    # profile's characters per token
    assert sizes == [estimate_tokens(prompt, 4.0), estimate_tokens(prompt, 6.0)]
    assert sizes[0] > sizes[1]


@pytest.mark.parametrize("serial", [False, True])
def test_a_serial_api_server_hands_requests_sent_together_to_the_engine_one_by_one(
    tmp_path, serial
):
    overhead = 0.2  # longer than one prompt's prefill: the first is decoding when the next comes
    profile = vllm_profile() | {"request_overhead_s": overhead, "request_overhead_serial": serial}
    result = solo(tmp_path, tokens=8, requests=2, concurrency=2, profile=profile)
    p = call_ends(result)[0]["prompt_tokens"]
    first, second = sorted(times[0] for times in answers(result))
    if serial:  # the first prefills alone; the second reaches the engine one overhead later
        assert first == pytest.approx(overhead + COST.seconds(p, p * p, 0, 0))
        assert second > 2 * overhead
    else:  # both wait the overhead side by side, then share one prefill step
        assert first == second == pytest.approx(overhead + COST.seconds(2 * p, 2 * p * p, 0, 0))


@pytest.mark.parametrize("serial", [False, True])
def test_a_call_cancelled_while_the_api_server_prepares_it_never_reaches_the_engine(serial):
    """A staircase cancels the proposers' next round the moment its aggregator starts its
    last one: the live client's request ends before vLLM schedules it, and so must the
    simulated one (it used to be lost in the API delay and computed in full)."""
    import simpy

    from sim.engines.base import CallResult, EngineCall
    from sim.engines.vllm import VllmEngine
    from sim.profile import VllmProfile
    from sim.scenario import VllmServer

    env = simpy.Environment()
    data = vllm_profile() | {"request_overhead_s": 0.2, "request_overhead_serial": serial}
    engine = VllmEngine(env, VllmProfile.model_validate(data), VllmServer(profile="test"))
    ended: dict[str, float] = {}

    def call(name: str) -> EngineCall:
        def done(result: CallResult, times: np.ndarray) -> None:
            ended[name] = env.now

        return EngineCall(
            name, [(("prompt", name), 0, 64)], ("output", name), 0, 16, (), lambda times: None, done
        )

    def client():  # type: ignore[no-untyped-def]
        engine.submit(call("kept"))
        engine.submit(call("cancelled"))
        assert engine.load() == 2  # a router counts the requests it has sent
        yield env.timeout(0.1)
        engine.cancel("cancelled")
        assert engine.load() == 1

    env.process(client())
    env.run()
    assert set(ended) == {"kept"}  # the cancelled call was never admitted, so never ended
    # and the engine served the kept call alone: its prefill step had one prompt in it
    assert engine.steps == 16
    assert ended["kept"] == pytest.approx(
        0.2 + COST.seconds(64, 64 * 64, 0, 0) + sum(COST.decode_run(1, 65, 15))
    )


def test_requests_scheduled_in_one_step_share_a_prefix_as_vllm_v1_does(tmp_path):
    """vLLM V1 registers a prompt's blocks when it schedules them: a request scheduled in the
    same step as another with the same prefix computes only what differs."""
    system = "You answer briefly. " * 30
    result = solo(tmp_path, tokens=4, requests=2, concurrency=2, system_prompt=system)
    first, second = sorted(call_ends(result), key=lambda r: r["cached_tokens"])
    p, c = second["prompt_tokens"], second["cached_tokens"]
    assert first["cached_tokens"] == 0
    assert c == (estimate_tokens(system) + 8) // 16 * 16 > 0
    one_step = COST.seconds(2 * p - c, p * p + (p - c) * p, 0, 0)  # both prompts, one step
    assert [times[0] for times in answers(result)] == pytest.approx([one_step, one_step])


@pytest.mark.parametrize("same", [True, False])
def test_agents_with_the_same_system_prompt_share_its_cached_blocks(tmp_path, same):
    system = "You answer briefly. " * 30
    path = write_profile(tmp_path, vllm_profile())
    agents = {
        "a": {"steps": 1, "system_prompt": system},
        "b": {"steps": 1, "system_prompt": system if same else "Be terse. " * 60},
    }
    scenario = scenario_from_dict(
        {
            "servers": {"gpu": {"kind": "vllm", "profile": path}},
            "topology": {
                "kind": "graph",
                "unit": {"tokens": 4},
                "agents": agents,
                "output": ["a", "b"],
            },
            "workload": {"requests": 1},
        }
    )
    cached = {r["call"]: r["cached_tokens"] for r in call_ends(Simulator(scenario).run())}
    assert (max(cached.values()) > 0) is same


def test_short_and_long_decode_runs_end_their_steps_at_the_same_times() -> None:
    """A short decode run is priced in plain floats and a long one by numpy (each where it
    is cheaper): both routes must give the very same floats, or results would depend on
    where a run was cut."""
    cost = StepCost(**{**vllm_profile()["step"], "context_token_s": 3.3e-7})
    short = cost.decode_run(37, 37 * 517, SHORT_RUN)
    long = cost.decode_run(37, 37 * 517, SHORT_RUN + 9)
    assert isinstance(short, list) and isinstance(long, np.ndarray)
    assert long[:SHORT_RUN].tolist() == short
    short_ends = _step_ends(3.25, short, 0.0123)
    long_ends = _step_ends(3.25, long, 0.0123)
    assert isinstance(short_ends, list)
    assert np.asarray(long_ends)[:SHORT_RUN].tolist() == short_ends
    assert short_ends == sorted(set(short_ends))  # every step takes time
