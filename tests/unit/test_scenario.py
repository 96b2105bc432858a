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


def test_the_shipped_example_loads(tmp_path):
    scenario = load_scenario("examples/staircase-moa.yaml", ["seed=3"])
    assert scenario.seed == 3 and scenario.topology.kind == "moa"
