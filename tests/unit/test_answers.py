"""Greedy twins: calls with the same prompt at temperature 0 write the same tokens."""

from __future__ import annotations

from typing import Any

from sim import Simulator, scenario_from_dict
from sim.answers import AnswerStreams
from sim.reference import REFERENCE_CPU_PROFILE

PROMPT = [(("query", 0), 0, 40)]


def test_twin_calls_write_one_stream_and_sampled_calls_their_agents_own() -> None:
    answers = AnswerStreams()
    first = answers.start_call(0, "a", 0, 8, "local", PROMPT)
    assert answers.start_call(0, "b", 0, 8, "local", PROMPT) == first
    assert answers.start_call(0, "c", 0, 8, "other-server", PROMPT) != first
    assert answers.start_call(0, "d", 0, 8, None, PROMPT) == (("output", 0, "d"), 0)
    assert answers.start_call(0, "d", 8, 8, None, PROMPT) == (("output", 0, "d"), 8)
    # a sampled answer stays one stream: its runs merge into one piece, as before
    assert answers.runs(0, "d", 0, 16) == [(("output", 0, "d"), 0, 8), (("output", 0, "d"), 8, 16)]


def test_an_answer_is_its_calls_segments_and_a_later_call_replaces_a_cut_short_tail() -> None:
    answers = AnswerStreams()
    one, _ = answers.start_call(0, "a", 0, 8, "local", PROMPT)
    two, _ = answers.start_call(0, "a", 8, 56, "local", [*PROMPT, (one, 0, 8)])
    assert answers.runs(0, "a", 4, 20) == [(one, 4, 8), (two, 0, 12)]
    # the second call was cancelled after 10 tokens: the third continues from there
    three, _ = answers.start_call(0, "a", 18, 40, "local", [*PROMPT, (one, 0, 8), (two, 0, 10)])
    assert answers.runs(0, "a", 0, 30) == [(one, 0, 8), (two, 0, 10), (three, 0, 12)]


def debate(temperature: float) -> dict[str, Any]:
    return {
        "name": "twins",
        "seed": 3,
        "servers": {"local": {"kind": "vllm", "profile": REFERENCE_CPU_PROFILE}},
        "topology": {
            "kind": "debate",
            "mode": "staircase",
            "agents": 3,
            "rounds": 2,
            "agent": {"max_tokens": 128, "temperature": temperature},
            "chunks": [8, 56, 64],
            "template": "prefix_cache",
        },
        "workload": {"requests": 1, "prompt_tokens": {"dist": "fixed", "value": 96}},
    }


def cached_tokens(temperature: float) -> dict[str, int]:
    records = Simulator(scenario_from_dict(debate(temperature))).run().records
    return {
        r["call"]: r["cached_tokens"]
        for r in records
        if r["type"] == "call_end" and r["status"] == "ok"
    }


def test_greedy_debaters_share_the_prompts_that_quote_their_identical_answers() -> None:
    # the round-2 debaters' second calls quote their own first 8 tokens: word for word the
    # same for twins at temperature 0 (a live staircase debate found 384 of 397 tokens
    # cached), so only the first of them computes the prompt; sampled answers differ from
    # their own tokens on, so each computes from there
    greedy, sampled = cached_tokens(0.0), cached_tokens(0.7)
    assert greedy["r2.a2#2"] > sampled["r2.a2#2"] + 100
    assert greedy["r2.a3#2"] > sampled["r2.a3#2"] + 100
    assert greedy["r2.a1#2"] == sampled["r2.a1#2"]  # the first computes it either way
