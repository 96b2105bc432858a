"""The sans-IO protocol on its own: which calls start when, with which prompts."""

from __future__ import annotations

import itertools

from sim.dag import build_dag, unit_boundaries
from sim.protocol import CancelCall, FinishRequest, ReleaseUnit, RequestProtocol, Span, StartCall
from tests.helpers import api_profile, moa

SERVERS = {"s": {"kind": "api", "profile": "unused"}}


def dag_for(**topology):
    return build_dag(moa(SERVERS, **topology))


def starts(actions):
    return [a for a in actions if isinstance(a, StartCall)]


def test_unit_boundaries_repeat_the_last_size_and_truncate():
    assert unit_boundaries((8, 128, 256), 256) == [8, 136, 256]
    assert unit_boundaries((8, 16), 50) == [8, 24, 40, 50]
    assert unit_boundaries((64,), 64) == [64]


def test_staircase_aggregator_starts_on_first_chunks_and_cancels_spent_proposers():
    dag = dag_for(
        mode="staircase", proposers=3, agent={"max_tokens": 256}, aggregator={"max_tokens": 128}
    )
    proto = RequestProtocol(dag, {})
    first = starts(proto.start())
    assert [c.agent for c in first] == ["p1", "p2", "p3"]
    assert all(c.watch == (8, 136) and c.tokens == 256 for c in first)

    assert not starts(proto.tokens("p1#1", 8) + proto.tokens("p2#1", 8))
    actions = proto.tokens("p3#1", 8)
    assert [a.unit for a in actions if isinstance(a, ReleaseUnit)] == [1]
    (round1,) = starts(actions)
    assert (round1.agent, round1.tokens, round1.final) == ("aggregator", 8, True)
    upstream = [p for m in round1.messages for p in m.parts if p.stream[0] == "output"]
    assert upstream == [Span(("output", f"p{i}"), 0, 8) for i in (1, 2, 3)]

    assert not starts(proto.finished("aggregator#1"))  # round 2 needs the second chunks
    proto.tokens("p1#1", 136)
    proto.tokens("p2#1", 136)
    actions = proto.tokens("p3#1", 136)
    (round2,) = starts(actions)
    assert (round2.tokens, round2.out_start, round2.continue_final) == (120, 8, True)
    # round 2 is the aggregator's last call: the proposers' remaining tokens are never read
    assert {a.call_id for a in actions if isinstance(a, CancelCall)} == {"p1#1", "p2#1", "p3#1"}
    assert proto.finished("aggregator#2")[-1] == FinishRequest(ok=True)
    assert proto.done


def test_redundancy_skips_the_slowest_proposer_for_a_round():
    dag = dag_for(mode="staircase", proposers=3, redundancy=1)
    proto = RequestProtocol(dag, {})
    proto.start()
    proto.tokens("p1#1", 8)
    (round1,) = starts(proto.tokens("p3#1", 8))
    sources = {p.stream[1] for m in round1.messages for p in m.parts if p.stream[0] == "output"}
    assert sources == {"p1", "p3"}


def test_standard_moa_waits_for_every_complete_answer():
    dag = dag_for(mode="standard", proposers=2, agent={"max_tokens": 64})
    proto = RequestProtocol(dag, {})
    proto.start()
    assert not starts(proto.tokens("p1#1", 64) + proto.finished("p1#1"))
    (agg,) = starts(proto.finished("p2#1"))
    assert agg.tokens == 64 and agg.round == 1
    upstream = [p for m in agg.messages for p in m.parts if p.stream[0] == "output"]
    assert upstream == [Span(("output", "p1"), 0, 64), Span(("output", "p2"), 0, 64)]


def test_prefix_cache_template_only_appends_to_the_previous_prompt():
    dag = dag_for(
        mode="staircase",
        proposers=2,
        template="prefix_cache",
        chunks={"proposer": [8, 32], "aggregator": [8, 8]},
        agent={"max_tokens": 128},
        aggregator={"max_tokens": 32},
    )
    proto = RequestProtocol(dag, {})
    proto.start()
    prompts = []
    for unit_end in (8, 40, 72, 104):
        actions = proto.tokens("p1#1", unit_end) + proto.tokens("p2#1", unit_end)
        (call,) = starts(actions)
        prompts.append(call)
        proto.finished(call.call_id)
    for before, after in itertools.pairwise(prompts):
        # the next prompt = previous prompt + own chunk (+ new units): a pure extension
        assert after.messages[: len(before.messages)] == before.messages
        assert after.messages[len(before.messages)].role == "assistant"


def test_a_failed_proposer_is_dropped_and_a_failed_aggregator_fails_the_request():
    dag = dag_for(mode="staircase", proposers=2)
    proto = RequestProtocol(dag, {})
    proto.start()
    proto.tokens("p1#1", 8)
    (round1,) = starts(proto.failed("p2#1", "connection reset"))
    assert round1.agent == "aggregator"
    actions = proto.failed("aggregator#1", "HTTP 500")
    assert actions[-1] == FinishRequest(ok=False, reason="aggregator: HTTP 500")
    assert CancelCall("p1#1", "request finished") in actions
    assert proto.done


def test_early_stop_shortens_the_answer():
    dag = dag_for(mode="standard", proposers=1, agent={"max_tokens": 64})
    proto = RequestProtocol(dag, {})
    proto.start()
    (agg,) = starts(proto.finished("p1#1", produced=10))
    assert [p for m in agg.messages for p in m.parts if p.stream[0] == "output"] == [
        Span(("output", "p1"), 0, 10)
    ]


def test_api_profile_helper_is_valid():
    from sim.profile import parse_profile

    assert parse_profile(api_profile(), "test").kind == "api"


def outputs_in(call):
    """Each agent's output tokens the call's prompt carries (its own included)."""
    return {p.stream[1]: p.end for m in call.messages for p in m.parts if p.stream[0] == "output"}


def upstream_of(call):
    return {agent: n for agent, n in outputs_in(call).items() if agent != call.agent}


def test_first_scope_skips_the_slowest_proposer_for_the_first_round_only():
    dag = dag_for(mode="staircase", proposers=3, redundancy=1)  # redundancy_scope: first
    proto = RequestProtocol(dag, {})
    proto.start()
    proto.tokens("p1#1", 8)
    (round1,) = starts(proto.tokens("p2#1", 8))
    assert upstream_of(round1) == {"p1": 8, "p2": 8}
    proto.finished("aggregator#1")
    assert not starts(proto.tokens("p1#1", 136) + proto.tokens("p2#1", 136))
    assert not starts(proto.tokens("p3#1", 8))  # the late first chunk alone starts nothing
    (round2,) = starts(proto.tokens("p3#1", 136))  # round 2 waits for every proposer
    assert upstream_of(round2) == {"p1": 136, "p2": 136, "p3": 136}


def test_all_scope_skips_the_slowest_proposers_in_every_round():
    dag = dag_for(mode="staircase", proposers=3, redundancy=1, redundancy_scope="all")
    proto = RequestProtocol(dag, {})
    proto.start()
    proto.tokens("p1#1", 8)
    proto.tokens("p2#1", 8)
    proto.finished("aggregator#1")
    proto.tokens("p1#1", 136)
    (round2,) = starts(proto.tokens("p2#1", 136))
    assert upstream_of(round2) == {"p1": 136, "p2": 136}


def test_per_chunk_proposers_make_one_call_per_unit_continuing_their_text():
    dag = dag_for(mode="staircase", proposers=1, proposer_calls="per_chunk")
    assert dag.agent("p1").calls == "per_chunk" and dag.agent("aggregator").calls == "stream"
    proto = RequestProtocol(dag, {})
    (first,) = starts(proto.start())
    assert (first.tokens, first.watch, first.continue_final) == (8, (), False)
    actions = proto.finished("p1#1")
    second = next(c for c in starts(actions) if c.agent == "p1")
    assert (second.call_id, second.tokens, second.out_start) == ("p1#2", 128, 8)
    assert second.continue_final and outputs_in(second) == {"p1": 8}
    round1 = next(c for c in starts(actions) if c.agent == "aggregator")
    assert upstream_of(round1) == {"p1": 8}
    proto.finished("aggregator#1")
    actions = proto.finished("p1#2")
    (third,) = [c for c in starts(actions) if c.agent == "p1"]
    assert (third.tokens, third.out_start) == (120, 136)


def test_several_outputs_all_stream_to_the_user_and_end_the_request_together():
    from sim.scenario import scenario_from_dict

    dag = build_dag(
        scenario_from_dict(
            {
                "servers": SERVERS,
                "topology": {
                    "kind": "graph",
                    "unit": {"tokens": 4},
                    "output": ["left", "right"],
                    "agents": {
                        "root": {"next": ["left", "right"], "steps": 1},
                        "left": {"steps": 1},
                        "right": {"steps": 2},
                    },
                },
            }
        )
    )
    proto = RequestProtocol(dag, {})
    proto.start()
    actions = proto.finished("root#1")
    assert {(c.agent, c.final) for c in starts(actions)} == {("left", True), ("right", True)}
    assert not any(isinstance(a, FinishRequest) for a in proto.finished("left#1"))
    (rest,) = starts(proto.finished("right#1"))  # its input done: the rest in one call
    assert (rest.call_id, rest.tokens, rest.final) == ("right#2", 4, True)
    assert proto.finished("right#2")[-1] == FinishRequest(ok=True)
