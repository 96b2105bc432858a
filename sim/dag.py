"""Topologies unrolled into one vocabulary: a DAG of agents whose edges stream units.

``build_dag`` turns any topology of a scenario into a :class:`Dag`; the protocol, the
simulator and the live runner only ever see DAGs.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

from sim.scenario import (
    AgentSettings,
    DebateTopology,
    GraphTopology,
    MoaTopology,
    Scenario,
)
from sim.texts import DEFAULT_SYSTEM_PROMPT

WaitMode = Literal["stream", "all"]
Template = Literal["standard", "prefix_cache"]


@dataclass(frozen=True)
class AgentNode:
    name: str
    role: str  # proposer | aggregator | debater | agent: a label for tables and plots
    server: str
    max_tokens: int
    system_prompt: str
    temperature: float
    priority: int  # vLLM request priority (lower first); 0 unless the scenario sets one
    inputs: tuple[str, ...]
    # "stream": answer in rounds, round j starting once `need` inputs released unit j (a
    # multistream stream starts once `need` inputs released unit 1, then reads on);
    # "all": one call once `need` inputs finished. Irrelevant for agents without inputs.
    wait: WaitMode
    need: int
    chunks: tuple[int, ...]  # output unit sizes; the last one repeats
    template: Template


@dataclass(frozen=True)
class Dag:
    agents: tuple[AgentNode, ...]  # in topological order
    output: str  # the agent whose answer the user sees

    def agent(self, name: str) -> AgentNode:
        return self._by_name[name]

    def consumers(self, name: str) -> list[AgentNode]:
        return [a for a in self.agents if name in a.inputs]

    @cached_property
    def _by_name(self) -> dict[str, AgentNode]:
        """Agents by name: the simulator looks one up for every call it starts."""
        return {a.name: a for a in self.agents}


def unit_boundaries(chunks: tuple[int, ...], total: int) -> list[int]:
    """Cumulative ends of the units that cut a stream of ``total`` tokens."""
    ends: list[int] = []
    position, index = 0, 0
    while position < total:
        position = min(total, position + chunks[min(index, len(chunks) - 1)])
        ends.append(position)
        index += 1
    return ends


def build_dag(scenario: Scenario) -> Dag:
    topology = scenario.topology
    default_server = next(iter(scenario.servers))
    if isinstance(topology, MoaTopology):
        return _moa(topology, default_server)
    if isinstance(topology, DebateTopology):
        return _debate(topology, default_server)
    return _graph(topology, default_server)


def _settings(default_server: str, *layers: AgentSettings) -> dict[str, object]:
    merged: dict[str, object] = {
        "server": default_server,
        "max_tokens": 256,
        "system_prompt": DEFAULT_SYSTEM_PROMPT,
        "temperature": 0.0,
        "priority": 0,
    }
    for layer in layers:
        merged.update(layer.model_dump(exclude_none=True))
    return merged


def _node(
    name: str,
    role: str,
    settings: dict[str, object],
    inputs: tuple[str, ...],
    wait: WaitMode,
    redundancy: int,
    chunks: list[int],
    template: Template,
) -> AgentNode:
    return AgentNode(
        name=name,
        role=role,
        server=str(settings["server"]),
        max_tokens=int(settings["max_tokens"]),  # type: ignore[call-overload]
        system_prompt=str(settings["system_prompt"]),
        temperature=float(settings["temperature"]),  # type: ignore[arg-type]
        priority=int(settings["priority"]),  # type: ignore[call-overload]
        inputs=inputs,
        wait=wait,
        need=max(1, len(inputs) - redundancy) if inputs else 0,
        chunks=tuple(chunks),
        template=template,
    )


def _moa(t: MoaTopology, default_server: str) -> Dag:
    wait: WaitMode = "all" if t.mode == "standard" else "stream"
    proposer_settings = t.proposer if isinstance(t.proposer, list) else [t.proposer] * t.proposers
    agents: list[AgentNode] = []
    previous: tuple[str, ...] = ()
    for layer in range(1, t.layers + 1):
        names = tuple(
            f"p{i}" if t.layers == 1 else f"l{layer}.p{i}" for i in range(1, t.proposers + 1)
        )
        for name, own in zip(names, proposer_settings, strict=True):
            settings = _settings(default_server, t.agent, own)
            chunks = t.chunks.proposer if not previous else t.chunks.aggregator
            agents.append(
                _node(name, "proposer", settings, previous, wait, t.redundancy, chunks, t.template)
            )
        previous = names
    settings = _settings(default_server, t.agent, t.aggregator)
    agents.append(
        _node(
            "aggregator",
            "aggregator",
            settings,
            previous,
            wait,
            t.redundancy,
            t.chunks.aggregator,
            t.template,
        )
    )
    return Dag(tuple(agents), "aggregator")


def _debate(t: DebateTopology, default_server: str) -> Dag:
    wait: WaitMode = "all" if t.mode == "standard" else "stream"
    settings = _settings(default_server, t.agent)
    agents: list[AgentNode] = []
    previous: tuple[str, ...] = ()
    for r in range(1, t.rounds + 1):
        names = tuple(f"r{r}.a{i}" for i in range(1, t.agents + 1))
        agents += [
            _node(n, "debater", settings, previous, wait, t.redundancy, t.chunks, t.template)
            for n in names
        ]
        previous = names
    return Dag(tuple(agents), f"r{t.rounds}.a1")


def _graph(t: GraphTopology, default_server: str) -> Dag:
    wait: WaitMode = "all" if t.mode == "serial" else "stream"
    inputs: dict[str, list[str]] = {name: [] for name in t.agents}
    for name, spec in t.agents.items():
        for nxt in spec.next:
            inputs[nxt].append(name)
    order: list[str] = []
    pending = dict(inputs)
    while pending:  # Kahn's algorithm; the scenario validator already rejected cycles
        ready = [n for n, ins in pending.items() if all(i in order for i in ins)]
        order += ready
        for n in ready:
            del pending[n]
    agents = []
    for name in order:
        spec = t.agents[name]
        own = AgentSettings(
            server=spec.server,
            system_prompt=spec.system_prompt,
            temperature=spec.temperature,
            max_tokens=spec.steps * t.unit.tokens,
        )
        settings = _settings(default_server, t.agent, own)
        agents.append(
            _node(
                name,
                "agent",
                settings,
                tuple(inputs[name]),
                wait,
                t.redundancy,
                [t.unit.tokens],
                t.template,
            )
        )
    sinks = [n for n, spec in t.agents.items() if not spec.next]
    return Dag(tuple(agents), t.output or sinks[0])
