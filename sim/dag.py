"""Topologies unrolled into one vocabulary: a DAG of agents whose edges stream units.

``build_dag`` turns any topology of a scenario into a :class:`Dag`; the protocol, the
simulator and the live runner only ever see DAGs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import Literal

from sim.scenario import (
    AgentSettings,
    DebateTopology,
    GraphTopology,
    MoaTopology,
    RoundOptions,
    Scenario,
)
from sim.texts import DEFAULT_SYSTEM_PROMPT

WaitMode = Literal["stream", "all"]
Template = Literal["standard", "prefix_cache"]
CallMode = Literal["stream", "per_chunk"]


@dataclass(frozen=True)
class AgentNode:
    name: str
    role: str  # proposer | aggregator | debater | judge | agent: a label for tables and plots
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
    need: int  # inputs the first round waits for
    need_later: int  # inputs every later round waits for (all of them unless scope "all")
    chunks: tuple[int, ...]  # output unit sizes; the last one repeats
    template: Template
    # "stream": one call for as many units as there is nothing new to read between;
    # "per_chunk": one call per unit, each continuing the agent's text so far
    calls: CallMode = "stream"


@dataclass(frozen=True)
class Dag:
    agents: tuple[AgentNode, ...]  # in topological order
    outputs: tuple[str, ...]  # the agents whose answers the user sees

    @property
    def output(self) -> str:
        """The first user-facing agent: its server counts the user's prompt tokens."""
        return self.outputs[0]

    def agent(self, name: str) -> AgentNode:
        return self._by_name[name]

    def consumers(self, name: str) -> tuple[AgentNode, ...]:
        return self._consumers[name]

    @cached_property
    def _by_name(self) -> dict[str, AgentNode]:
        """Agents by name: the simulator looks one up for every call it starts."""
        return {a.name: a for a in self.agents}

    @cached_property
    def _consumers(self) -> dict[str, tuple[AgentNode, ...]]:
        """Each agent's readers, found once: every request's protocol asks for them."""
        return {n.name: tuple(a for a in self.agents if n.name in a.inputs) for n in self.agents}


@lru_cache(maxsize=1024)
def unit_ends(chunks: tuple[int, ...], total: int) -> tuple[int, ...]:
    """:func:`unit_boundaries`, shared: every request of a run asks for the same few."""
    return tuple(unit_boundaries(chunks, total))


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
        dag = _moa(topology, default_server)
    elif isinstance(topology, DebateTopology):
        dag = _debate(topology, default_server)
    else:
        dag = _graph(topology, default_server)
    return _with_call_modes(dag, topology.proposer_calls)


def _settings(default_server: str, *layers: AgentSettings) -> dict[str, object]:
    merged: dict[str, object] = {
        "server": default_server,
        "max_tokens": 256,
        "system_prompt": DEFAULT_SYSTEM_PROMPT,
        "temperature": 0.0,
        "priority": 0,
    }
    for layer in layers:
        merged.update(layer.model_dump(exclude_none=True, exclude={"chunks"}))
    return merged


def _node(
    name: str,
    role: str,
    settings: dict[str, object],
    inputs: tuple[str, ...],
    wait: WaitMode,
    options: RoundOptions,
    chunks: list[int],
) -> AgentNode:
    need = max(1, len(inputs) - options.redundancy) if inputs else 0
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
        need=need,
        need_later=need if options.redundancy_scope == "all" else len(inputs),
        chunks=tuple(chunks),
        template=options.template,
    )


def _with_call_modes(dag: Dag, proposer_calls: CallMode) -> Dag:
    """``proposer_calls`` applies to every agent whose answer the user does not read; the
    user's answer always streams."""
    if proposer_calls == "stream":
        return dag
    agents = tuple(
        a if a.name in dag.outputs else replace(a, calls=proposer_calls) for a in dag.agents
    )
    return Dag(agents, dag.outputs)


def _moa(t: MoaTopology, default_server: str) -> Dag:
    wait: WaitMode = "all" if t.mode == "standard" else "stream"
    layers = t.layer_proposers()
    agents: list[AgentNode] = []
    previous: tuple[str, ...] = ()
    for layer, ((_, proposers), schedule) in enumerate(
        zip(layers, t.layer_schedules(), strict=True), 1
    ):
        names = [
            f"p{i}" if len(layers) == 1 else f"l{layer}.p{i}" for i in range(1, len(proposers) + 1)
        ]
        for name, own in zip(names, proposers, strict=True):
            settings = _settings(default_server, t.agent, own)
            chunks = own.chunks or schedule
            agents.append(_node(name, "proposer", settings, previous, wait, t, chunks))
        previous = tuple(names)
    settings = _settings(default_server, t.agent, t.aggregator)
    agents.append(
        _node("aggregator", "aggregator", settings, previous, wait, t, t.chunks.aggregator)
    )
    return Dag(tuple(agents), ("aggregator",))


def _debate(t: DebateTopology, default_server: str) -> Dag:
    wait: WaitMode = "all" if t.mode == "standard" else "stream"
    debaters = t.debaters()
    agents: list[AgentNode] = []
    previous: tuple[str, ...] = ()
    for r in range(1, t.rounds + 1):
        names = tuple(f"r{r}.a{i}" for i in range(1, t.agents + 1))
        for name, own in zip(names, debaters, strict=True):
            settings = _settings(default_server, t.agent, own)
            agents.append(
                _node(name, "debater", settings, previous, wait, t, own.chunks or t.chunks)
            )
        previous = names
    if t.judge is None:
        return Dag(tuple(agents), (f"r{t.rounds}.a1",))
    settings = _settings(default_server, t.agent, t.judge)
    agents.append(_node("judge", "judge", settings, previous, wait, t, t.judge.chunks or t.chunks))
    return Dag(tuple(agents), ("judge",))


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
            max_tokens=spec.answer_tokens(t.unit.tokens),
        )
        settings = _settings(default_server, t.agent, own)
        chunks = spec.schedule(t.unit.tokens)
        agents.append(_node(name, "agent", settings, tuple(inputs[name]), wait, t, chunks))
    return Dag(tuple(agents), tuple(t.outputs()))
