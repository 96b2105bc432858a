"""The same scenario makes the same calls simulated and live, for every topology.

The live runner runs against the in-process fake server, which streams each agent at the
speed the simulator's ``api`` profile of that agent's server gives (no network delay), with
speeds far enough apart that the order of events cannot depend on a few milliseconds of
live jitter. Compared: who is called, in which order, for how many tokens, which tokens of
which upstream answers each prompt carries (live: read back from what the server received)
and which calls end cancelled. (How far a cancelled call got before its cancel — units it
released that nobody read — is timing, and not compared.)
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from live.runner import LiveRunner
from sim.driver import Call
from sim.scenario import Scenario, scenario_from_dict
from sim.simulator import Simulator
from sim.trace import Record
from tests.fake_server import Timing, fake_server
from tests.helpers import api_profile, write_profile

# per server: (time to first token, gap between tokens), seconds. The aggregators are the
# fastest, so each of their rounds waits for its inputs, never the other way round: what a
# round reads then depends on the proposers' relative speeds, not on per-call overheads the
# live side adds (the decisions below stay the same when the simulator adds any fixed delay
# up to 60 ms to every message, or jitter of median 15 ms).
SPEEDS = {
    "fast": Timing(0.06, 0.018),
    "mid": Timing(0.105, 0.0375),
    "slow": Timing(0.15, 0.0675),
    "agg": Timing(0.045, 0.012),
}

PROPOSERS = [{"server": "fast"}, {"server": "slow"}, {"server": "mid"}]
STAIRCASE_CHUNKS = {"proposer": [4, 8], "aggregator": [2, 3]}
GRAPH = {
    "plan": {"steps": 2, "next": ["left", "right"], "server": "fast"},
    "left": {"steps": 3, "next": ["join"], "server": "mid"},
    "right": {"steps": 2, "next": ["join"], "server": "slow"},
    "join": {"steps": 3, "server": "agg"},
}
# topology, and answer lengths that differ from max_tokens
TOPOLOGIES: dict[str, tuple[dict[str, Any], dict[str, int]]] = {
    "moa-standard-redundancy": (
        {
            "kind": "moa",
            "mode": "standard",
            "proposers": 3,
            "redundancy": 1,
            "agent": {"max_tokens": 12},
            "proposer": PROPOSERS,
            "aggregator": {"server": "agg", "max_tokens": 10},
        },
        {},
    ),
    "moa-staircase-redundancy": (
        {
            "kind": "moa",
            "mode": "staircase",
            "proposers": 3,
            "redundancy": 1,
            "agent": {"max_tokens": 16},
            "proposer": PROPOSERS,
            "aggregator": {"server": "agg", "max_tokens": 8},
            "chunks": STAIRCASE_CHUNKS,
        },
        {},
    ),
    "moa-staircase-prefix-cache": (
        {
            "kind": "moa",
            "mode": "staircase",
            "proposers": 2,
            "template": "prefix_cache",
            "agent": {"max_tokens": 16},
            "proposer": [{"server": "fast"}, {"server": "mid"}],
            "aggregator": {"server": "agg", "max_tokens": 8},
            "chunks": STAIRCASE_CHUNKS,
        },
        {},
    ),
    "debate-staircase": (  # the user's agent answers first: the other one is cancelled
        {
            "kind": "debate",
            "mode": "staircase",
            "agents": 2,
            "rounds": 2,
            "agent": {"server": "mid", "max_tokens": 15},
            "chunks": [3, 8],
        },
        {"r2.a1": 8},
    ),
    "moa-staircase-redundancy-every-round": (
        {
            "kind": "moa",
            "mode": "staircase",
            "proposers": 3,
            "redundancy": 1,
            "redundancy_scope": "all",
            "agent": {"max_tokens": 16},
            "proposer": PROPOSERS,
            "aggregator": {"server": "agg", "max_tokens": 8},
            "chunks": STAIRCASE_CHUNKS,
        },
        {},
    ),
    "moa-staircase-per-chunk-calls": (
        {
            "kind": "moa",
            "mode": "staircase",
            "proposers": 2,
            "proposer_calls": "per_chunk",
            "template": "prefix_cache",
            "agent": {"max_tokens": 16},
            "proposer": [{"server": "fast"}, {"server": "slow"}],
            "aggregator": {"server": "agg", "max_tokens": 8},
            "chunks": STAIRCASE_CHUNKS,
        },
        {},
    ),
    "moa-two-layers-own-schedules": (
        {
            "kind": "moa",
            "mode": "staircase",
            "agent": {"max_tokens": 12},
            "layers": [
                {"proposer": [{"server": "fast"}, {"server": "slow"}], "chunks": [4, 8]},
                {"proposer": [{"server": "mid", "chunks": [3]}], "chunks": [6]},
            ],
            "aggregator": {"server": "agg", "max_tokens": 6},
            "chunks": {"aggregator": [2, 3]},
        },
        {},
    ),
    "debate-staircase-judge": (
        {
            "kind": "debate",
            "mode": "staircase",
            "agents": 2,
            "rounds": 2,
            "agent": {"max_tokens": 12},
            "debater": [{"server": "fast"}, {"server": "slow", "chunks": [4, 8]}],
            "judge": {"server": "agg", "max_tokens": 6, "chunks": [2, 3]},
            "chunks": [3, 8],
        },
        {},
    ),
    "graph-stream-per-agent-units-two-outputs": (
        {
            "kind": "graph",
            "mode": "stream",
            "unit": {"tokens": 3},
            "output": ["join", "right"],
            "agents": {
                "plan": {"steps": 3, "step_tokens": 2, "next": ["left", "right"], "server": "fast"},
                "left": {"max_tokens": 10, "chunks": [2, 4], "next": ["join"], "server": "mid"},
                "right": {"steps": 2, "next": ["join"], "server": "slow"},
                "join": {"steps": 3, "server": "agg"},
            },
        },
        {},
    ),
    "graph-serial": (
        {"kind": "graph", "mode": "serial", "unit": {"tokens": 3}, "agents": GRAPH},
        {},
    ),
    "graph-stream": (
        {"kind": "graph", "mode": "stream", "unit": {"tokens": 3}, "agents": GRAPH},
        {},
    ),
}


def scenario(
    tmp_path: Path, topology: dict[str, Any], lengths: dict[str, int], url: str | None
) -> Scenario:
    """One request; ``lengths`` of some agents' answers through a workload file."""
    servers = {}
    for name, timing in SPEEDS.items():
        profile = api_profile(ttft_s=timing.ttft_s, itl_s=timing.itl_s, name=f"eq-{name}")
        servers[name] = {
            "kind": "api",
            "profile": write_profile(tmp_path, profile),
            "prefix_caching": False,
            **({"endpoint": url} if url else {}),
        }
    agent = {"server": "agg", **topology.get("agent", {})}  # every agent names its own anyway
    workload: dict[str, Any] = {"requests": 1, "prompt_tokens": {"dist": "fixed", "value": 20}}
    if lengths:
        rows = tmp_path / "lengths.jsonl"
        rows.write_text(json.dumps({"prompt_tokens": 20, "output_tokens": lengths}) + "\n")
        workload = {"file": str(rows)}
    return scenario_from_dict(
        {
            "name": "equivalence",
            "seed": 3,
            "servers": servers,
            "topology": {**topology, "agent": agent},
            "workload": workload,
        }
    )


class RecordingSimulator(Simulator):
    """The simulator, keeping which upstream tokens every call's prompt carried."""

    included: dict[tuple[int, str], dict[str, int]]

    def start_call(self, call: Call) -> None:
        shown: dict[str, int] = {}
        for message in call.action.messages:
            for span in message.parts:
                if span.stream[0] == "output":  # type: ignore[index]
                    agent = span.stream[1]  # type: ignore[index]
                    shown[agent] = max(shown.get(agent, 0), span.end)
        self.included = getattr(self, "included", {})
        self.included[(call.request.index, call.action.call_id)] = shown
        super().start_call(call)


def calls(records: list[Record]) -> list[tuple[Any, ...]]:
    """Each call, with the tokens of each input its prompt held (its coverage)."""
    fields = ("req", "call", "agent", "round", "server", "tokens", "final")
    return [(*(r[name] for name in fields), r.get("read")) for r in records if r["type"] == "call"]


def endings(records: list[Record]) -> set[tuple[Any, ...]]:
    return {(r["req"], r["call"], r["status"]) for r in records if r["type"] == "call_end"}


@pytest.mark.parametrize("name", sorted(TOPOLOGIES))
def test_a_scenario_makes_the_same_calls_simulated_and_live(tmp_path: Path, name: str) -> None:
    topology, lengths = TOPOLOGIES[name]
    simulator = RecordingSimulator(scenario(tmp_path, topology, lengths, None))
    simulated = simulator.run().records
    with fake_server(timings={}) as server:
        live_scenario = scenario(tmp_path, topology, lengths, server.url)
        agents_on = {a.name: a.server for a in simulator.dag.agents}
        server.timings = {agent: SPEEDS[on] for agent, on in agents_on.items()}
        measured = asyncio.run(LiveRunner(live_scenario).run()).records
    agents = set(agents_on)
    live_included = {
        (r.req, r.call): {a: n for a, n in server.included(r).items() if a in agents}
        for r in server.received
    }

    assert calls(measured) == calls(simulated)
    assert endings(measured) == endings(simulated)
    assert live_included == simulator.included
    # the trace's coverage is what the server received (the agent's own words aside)
    for call in (r for r in measured if r["type"] == "call" and "read" in r):
        received = simulator.included[(call["req"], call["call"])]
        assert call["read"] == {a: received.get(a, 0) for a in call["read"]}
    assert {r.call for r in server.received} == {c[1] for c in calls(simulated)}
    assert any(status == "ok" for *_, status in endings(simulated))
