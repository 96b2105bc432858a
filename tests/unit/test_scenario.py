"""Scenario validation and --set overrides."""

from __future__ import annotations

import pytest

from sim.dag import build_dag
from sim.errors import ConfigError
from sim.scenario import apply_overrides, load_scenario, scenario_from_dict

BASE = {
    "servers": {"s": {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m"}},
    "topology": {"kind": "moa", "proposers": 3},
}


def test_overrides_set_nested_fields_lists_and_typed_values():
    data = apply_overrides(
        {"topology": {"chunks": {"proposer": [8, 128]}}},
        [
            "topology.chunks.proposer.1=64",
            "topology.redundancy=1",
            "workload.arrival={kind: closed}",
        ],
    )
    assert data["topology"]["chunks"]["proposer"] == [8, 64]
    assert data["topology"]["redundancy"] == 1
    assert data["workload"]["arrival"] == {"kind": "closed"}


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"topology": {"kind": "moa", "proposers": 2, "redundancy": 2}}, "redundancy"),
        ({"topology": {"kind": "moa", "chunks": {"proposer": []}}}, "topology.chunks.proposer"),
        ({"topology": {"kind": "moa", "chunks": {"proposer": [8, -1]}}}, "proposer.1"),
        ({"topology": {"kind": "moa", "agent": {"server": "nope"}}}, "unknown server 'nope'"),
        ({"topology": {"kind": "moa", "colour": "red"}}, "topology.colour: unknown field"),
        (
            {"topology": {"kind": "graph", "agents": {"a": {"next": ["b"]}, "b": {"next": ["a"]}}}},
            "cycle: a -> b -> a",
        ),
        ({"topology": {"kind": "graph", "agents": {"a": {"next": ["x"]}}}}, "unknown agent 'x'"),
        ({"topology": {"kind": "ring"}}, "topology"),
        ({"workload": {"arrival": {"kind": "poisson", "rate_per_s": -1}}}, "rate_per_s"),
        ({"topology": {"kind": "moa", "redundancy_scope": "last"}}, "redundancy_scope"),
        ({"topology": {"kind": "moa", "proposer_calls": "batch"}}, "proposer_calls"),
        (
            {"topology": {"kind": "moa", "mode": "multistream", "proposer_calls": "per_chunk"}},
            "per_chunk makes calls; mode multistream",
        ),
        (
            {"topology": {"kind": "debate", "mode": "multistream", "redundancy_scope": "all"}},
            "redundancy_scope: all; mode multistream",
        ),
        (
            {"topology": {"kind": "moa", "redundancy": 1, "layers": [{}, {"proposers": 1}]}},
            "redundancy (1) must be less than layers[1].proposers (1)",
        ),
        (
            {"topology": {"kind": "moa", "layers": [{"proposers": 2, "proposer": [{}]}]}},
            "layers[0].proposer lists 1 agents but layers[0].proposers is 2",
        ),
        (
            {"topology": {"kind": "moa", "proposer": [{}, {}, {}], "layers": [{"proposers": 2}]}},
            "give the layer its own proposer list",
        ),
        ({"topology": {"kind": "moa", "layers": [{"chunks": []}]}}, "layers.0.chunks"),
        ({"topology": {"kind": "moa", "layers": 0}}, "topology.layers: Input should be"),
        ({"topology": {"kind": "debate", "agents": 2, "debater": [{}]}}, "debater lists 1"),
        ({"topology": {"kind": "debate", "judge": {"server": "x"}}}, "topology.judge.server"),
        ({"topology": {"kind": "debate", "judge": {"colour": 1}}}, "judge.colour: unknown field"),
        (
            {"topology": {"kind": "graph", "agents": {"a": {"steps": 2, "max_tokens": 9}}}},
            "give steps or max_tokens",
        ),
        (
            {"topology": {"kind": "graph", "agents": {"a": {"step_tokens": 2, "chunks": [1]}}}},
            "give step_tokens or chunks",
        ),
        (
            {"topology": {"kind": "graph", "agents": {"a": {}}, "output": ["a", "b"]}},
            "output names unknown agent 'b'",
        ),
        (
            {"topology": {"kind": "graph", "agents": {"a": {}}, "output": ["a", "a"]}},
            "output names an agent twice",
        ),
        (
            {
                "topology": {
                    "kind": "graph",
                    "mode": "multistream",
                    "agents": {"a": {"next": ["b", "c"]}, "b": {}, "c": {}},
                    "output": ["b", "c"],
                }
            },
            "name one output",
        ),
    ],
)
def test_bad_scenarios_name_the_field(change, needle):
    with pytest.raises(ConfigError) as excinfo:
        scenario_from_dict({**BASE, **change}, "file.yaml")
    message = str(excinfo.value)
    assert needle in message and message.startswith("file.yaml: ") and "\n" not in message


def test_dags_of_each_topology():
    moa2 = build_dag(scenario_from_dict({**BASE, "topology": {"kind": "moa", "layers": 2}}))
    assert [a.name for a in moa2.agents] == [
        "l1.p1",
        "l1.p2",
        "l1.p3",
        "l2.p1",
        "l2.p2",
        "l2.p3",
        "aggregator",
    ]
    assert moa2.agent("l2.p1").inputs == ("l1.p1", "l1.p2", "l1.p3")
    debate = build_dag(
        scenario_from_dict({**BASE, "topology": {"kind": "debate", "agents": 2, "rounds": 3}})
    )
    assert debate.output == "r3.a1" and debate.agent("r2.a2").inputs == ("r1.a1", "r1.a2")
    tree = build_dag(
        scenario_from_dict(
            {
                **BASE,
                "topology": {
                    "kind": "graph",
                    "agents": {
                        "root": {"next": ["l", "r"]},
                        "l": {"next": ["join"]},
                        "r": {"next": ["join"]},
                        "join": {"steps": 2},
                    },
                    "unit": {"tokens": 10},
                },
            }
        )
    )
    assert tree.output == "join" and tree.agent("join").inputs == ("l", "r")
    assert tree.agent("join").max_tokens == 20 and tree.agent("join").wait == "stream"


def test_per_layer_per_debater_and_per_agent_settings_reach_the_dag():
    moa = build_dag(
        scenario_from_dict(
            {
                **BASE,
                "topology": {
                    "kind": "moa",
                    "agent": {"max_tokens": 64},
                    "chunks": {"proposer": [4, 8], "aggregator": [2]},
                    "layers": [
                        {"proposers": 2, "chunks": [16]},
                        {"proposer": [{"max_tokens": 32, "chunks": [3]}, {}, {}]},
                    ],
                },
            }
        )
    )
    assert [(a.name, a.chunks, a.max_tokens, len(a.inputs)) for a in moa.agents] == [
        ("l1.p1", (16,), 64, 0),
        ("l1.p2", (16,), 64, 0),
        ("l2.p1", (3,), 32, 2),
        ("l2.p2", (4, 8), 64, 2),
        ("l2.p3", (4, 8), 64, 2),
        ("aggregator", (2,), 64, 3),
    ]
    debate = build_dag(
        scenario_from_dict(
            {
                **BASE,
                "topology": {
                    "kind": "debate",
                    "agents": 2,
                    "rounds": 2,
                    "chunks": [8],
                    "debater": [{"temperature": 0.5}, {"chunks": [2, 4]}],
                    "judge": {"max_tokens": 40},
                },
            }
        )
    )
    assert debate.outputs == ("judge",) and debate.agent("judge").inputs == ("r2.a1", "r2.a2")
    assert debate.agent("judge").max_tokens == 40 and debate.agent("judge").chunks == (8,)
    assert debate.agent("r2.a1").temperature == 0.5 and debate.agent("r2.a2").chunks == (2, 4)
    graph = build_dag(
        scenario_from_dict(
            {
                **BASE,
                "topology": {
                    "kind": "graph",
                    "unit": {"tokens": 10},
                    "redundancy": 1,
                    "redundancy_scope": "all",
                    "proposer_calls": "per_chunk",
                    "output": ["x", "y"],
                    "agents": {
                        "root": {"next": ["x", "y"], "steps": 3, "step_tokens": 4},
                        "x": {"max_tokens": 50, "chunks": [5, 20]},
                        "y": {},
                    },
                },
            }
        )
    )
    root, x = graph.agent("root"), graph.agent("x")
    assert (root.max_tokens, root.chunks, root.calls) == (12, (4,), "per_chunk")
    assert (x.max_tokens, x.chunks, x.calls, x.need, x.need_later) == (50, (5, 20), "stream", 1, 1)
    assert graph.outputs == ("x", "y") and graph.agent("y").max_tokens == 80


def test_redundancy_scope_first_waits_for_every_input_after_the_first_round():
    moa = build_dag(scenario_from_dict({**BASE, "topology": {"kind": "moa", "redundancy": 2}}))
    assert (moa.agent("aggregator").need, moa.agent("aggregator").need_later) == (1, 3)


def test_the_shipped_example_loads(tmp_path):
    scenario = load_scenario("examples/staircase-moa.yaml", ["seed=3"])
    assert scenario.seed == 3 and scenario.topology.kind == "moa"
