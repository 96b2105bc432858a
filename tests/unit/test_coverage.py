"""Context coverage against schedules worked out by hand.

Two ``api`` proposers stream 16-token answers in chunks 4, 8 (unit boundaries 4, 12, 16)
into an aggregator writing 8 tokens in chunks 2, 3 (boundaries 2, 5, 8); no network delay,
fixed TTFT and inter-token gap, so every round's start is known to the millisecond. The
aggregator (TTFT 45 ms, 12 ms a token) is always faster than the proposers, so each of its
rounds starts when the inputs it waits for release their unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sim.coverage import request_coverage, tokens_read
from sim.protocol import Message, Span
from sim.simulator import Simulator
from tests.helpers import api_profile, moa, write_profile

FAST = (0.06, 0.018)  # unit 1 at 60 + 3·18 = 114 ms, unit 2 at 258 ms, done at 330 ms
SLOW = (0.15, 0.0675)  # first token at 150 ms, unit 1 at 150 + 3·67.5 = 352.5 ms
AGGREGATOR = (0.045, 0.012)


def run(tmp_path: Path, speeds: list[tuple[float, float]], **topology: Any) -> list[dict[str, Any]]:
    servers: dict[str, Any] = {}
    for name, (ttft, itl) in [*zip(("s1", "s2"), speeds, strict=True), ("agg", AGGREGATOR)]:
        profile = write_profile(tmp_path, api_profile(ttft_s=ttft, itl_s=itl, name=name))
        servers[name] = {"kind": "api", "profile": profile, "prefix_caching": False}
    scenario = moa(
        servers,
        proposers=2,
        agent={"server": "agg", "max_tokens": 16},
        proposer=[{"server": "s1"}, {"server": "s2"}],
        aggregator={"server": "agg", "max_tokens": 8},
        chunks={"proposer": [4, 8], "aggregator": [2, 3]},
        **topology,
    )
    return Simulator(scenario).run().records


def reads(records: list[dict[str, Any]]) -> list[dict[str, int]]:
    return [r["read"] for r in records if r["type"] == "call" and r["agent"] == "aggregator"]


def test_staircase_rounds_read_each_released_unit(tmp_path: Path) -> None:
    """Equal proposers: round 1 reads both first units (4 + 4 of 32 tokens), round 2 both
    second units (12 + 12), round 3 — once both finished — everything."""
    records = run(tmp_path, [FAST, FAST])
    assert reads(records) == [
        {"p1": 4, "p2": 4},
        {"p1": 12, "p2": 12},
        {"p1": 16, "p2": 16},
    ]
    end = next(r for r in records if r["type"] == "request_end")
    assert end["answer_tokens"] == {"p1": 16, "p2": 16, "aggregator": 8}
    # answer tokens 1-2 come from round 1, 3-5 from round 2, 6-8 from round 3
    coverage = request_coverage(records, k=4)[0]
    assert coverage == {
        "first_token": 8 / 32,
        "k_token": 24 / 32,
        "last_token": 1.0,
        "first_token_min_input_tokens": 4.0,
    }


def test_redundancy_starts_from_the_fast_input_alone(tmp_path: Path) -> None:
    """Redundancy 1 in every round (``redundancy_scope: all``), a fast and a slow proposer.
    Round 1 starts at 114 ms (fast unit 1); the
    slow one has no token yet. Round 2 at 258 ms (fast unit 2): the slow one's unit 1 is due at
    352.5 ms, so still nothing. At 330 ms the fast one finishes, round 3 is the last call and
    the slow proposer is cancelled unread: the answer never saw half of its inputs."""
    records = run(tmp_path, [FAST, SLOW], redundancy=1, redundancy_scope="all")
    assert reads(records) == [
        {"p1": 4, "p2": 0},
        {"p1": 12, "p2": 0},
        {"p1": 16, "p2": 0},
    ]
    cancelled = {
        r["call"] for r in records if r["type"] == "call_end" and r["status"] == "cancelled"
    }
    assert cancelled == {"p2#1"}
    # its whole answer is the 16 tokens it was to write, not the 0 it wrote before the cancel
    coverage = request_coverage(records, k=4)[0]
    assert coverage == {
        "first_token": 4 / 32,
        "k_token": 12 / 32,
        "last_token": 16 / 32,
        "first_token_min_input_tokens": 0.0,
    }


def test_standard_mode_reads_whole_answers(tmp_path: Path) -> None:
    records = run(tmp_path, [FAST, SLOW], mode="standard")
    assert reads(records) == [{"p1": 16, "p2": 16}]
    coverage = request_coverage(records, k=4)[0]
    assert coverage["first_token"] == coverage["k_token"] == coverage["last_token"] == 1.0


def test_the_summary_gives_each_share_over_requests(tmp_path: Path) -> None:
    records = run(tmp_path, [FAST, FAST])
    from sim.metrics import summarize

    summary = summarize(records, k=4)["coverage"]
    assert summary["k"] == 4
    assert summary["first_token"]["p50"] == pytest.approx(0.25)
    assert summary["first_token"]["min"] == pytest.approx(0.25)
    assert summary["k_token"]["mean"] == pytest.approx(0.75)
    assert summary["first_token_min_input_tokens"]["count"] == 1


def test_a_lone_agent_has_no_coverage(tmp_path: Path) -> None:
    from sim.metrics import summarize
    from tests.helpers import one_at_a_time

    records = Simulator(one_at_a_time(tmp_path)).run().records
    assert summarize(records)["coverage"] is None


def test_tokens_read_takes_each_inputs_furthest_span() -> None:
    """An append-only transcript shows an input in pieces (0-4, then 4-12): 12 tokens read;
    the agent's own earlier output does not count, an input not shown yet reads 0."""
    messages = (
        Message("system", (Span(("system", "aggregator")),)),
        Message("user", (Span(("query",)), Span(("output", "p1"), 0, 4))),
        Message("assistant", (Span(("output", "aggregator"), 0, 2),)),
        Message("user", (Span(("output", "p1"), 4, 12),)),
    )
    assert tokens_read(messages, ("p1", "p2")) == {"p1": 12, "p2": 0}
