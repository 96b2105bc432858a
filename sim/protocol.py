"""The orchestration logic of one user request, as a sans-IO state machine.

It decides when each agent may start, what prompt each round gets, when a unit is
released, which slow inputs are skipped and which calls are no longer needed — and does no
I/O and keeps no clock. Drivers (the SimPy simulator, the asyncio live runner) feed it what
happened (:meth:`RequestProtocol.tokens`, :meth:`finished`, :meth:`failed`) and carry out the
actions it returns. Sim and live can therefore differ in timing, never in algorithm.

Prompts are described as messages made of :class:`Span` s — ranges of token streams (an
agent's system prompt, the user query, an agent's output, a fixed text) — so the simulator
can count and hash tokens while the live runner renders the same structure as text.

Actions, messages and spans are immutable values, named tuples: a request builds some
hundred of them, and a frozen dataclass costs twice as much to build.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from sim.dag import AgentNode, Dag, unit_ends
from sim.texts import AGGREGATE_HEADER, answer_label

Role = Literal["system", "user", "assistant"]


class Span(NamedTuple):
    """Tokens ``start:end`` of a stream. Fixed texts have ``end = -1`` (whole text)."""

    stream: Hashable  # ("system", agent) | ("query",) | ("output", agent) | ("text", str)
    start: int = 0
    end: int = -1


class Message(NamedTuple):
    role: Role
    parts: tuple[Span, ...]


class StartCall(NamedTuple):
    """Generate exactly ``tokens`` tokens for ``agent`` from ``messages``."""

    call_id: str
    agent: str
    round: int
    messages: tuple[Message, ...]
    continue_final: bool  # the last (assistant) message is continued, not answered anew
    tokens: int
    out_start: int  # where this call's output starts in the agent's whole answer
    watch: tuple[int, ...]  # token counts within the call at which a unit ends (call end excluded)
    final: bool  # the output is (part of) the answer the user sees


class ReleaseUnit(NamedTuple):
    agent: str
    unit: int  # 1-based
    tokens: int  # the agent's released tokens so far


class CancelCall(NamedTuple):
    call_id: str
    reason: str


class FinishRequest(NamedTuple):
    ok: bool
    reason: str = ""


Action = StartCall | ReleaseUnit | CancelCall | FinishRequest


@dataclass(slots=True)
class _Agent:
    node: AgentNode
    total: int
    boundaries: tuple[int, ...]
    consumers: tuple[str, ...]
    # the agents it reads and those that read it, linked once the request's agents exist
    sources: list[_Agent] = field(default_factory=list)
    readers: list[_Agent] = field(default_factory=list)
    generated: int = 0  # own tokens produced so far (in finished calls and live progress)
    units: int = 0  # units released
    released: int = 0  # tokens in released units
    rounds: int = 0
    call: str | None = None
    call_start: int = 0
    call_end: int = 0
    done: bool = False  # finished, failed or cancelled: produces nothing more
    dropped: bool = False  # failed or cancelled before finishing
    included: dict[str, int] = field(default_factory=dict)  # tokens of each input shown so far
    transcript: list[Message] = field(default_factory=list)  # prefix_cache template only


class RequestProtocol:
    """One request through the DAG. ``output_tokens`` is each agent's answer length."""

    def __init__(self, dag: Dag, output_tokens: Mapping[str, int]) -> None:
        self.dag = dag
        self.agents: dict[str, _Agent] = {}
        for node in dag.agents:
            total = min(node.max_tokens, max(1, output_tokens.get(node.name, node.max_tokens)))
            self.agents[node.name] = _Agent(
                node=node,
                total=total,
                boundaries=unit_ends(node.chunks, total),
                consumers=tuple(c.name for c in dag.consumers(node.name)),
            )
        for agent in self.agents.values():
            agent.sources = [self.agents[name] for name in agent.node.inputs]
            agent.readers = [self.agents[name] for name in agent.consumers]
        self._calls: dict[str, str] = {}  # call id -> agent
        self.outcome: FinishRequest | None = None
        # the agents a call may be cancelled for (not read by the user, read by others) and
        # their readers: looked up once, as the check runs after every unit and call end
        self._cancellable = [
            (agent, agent.readers)
            for agent in self.agents.values()
            if agent.consumers and agent.node.name not in dag.outputs
        ]

    # --- events -------------------------------------------------------------------------

    def start(self) -> list[Action]:
        actions: list[Action] = []
        for agent in self.agents.values():
            actions += self._maybe_start(agent)
        return actions

    def tokens(self, call_id: str, count: int) -> list[Action]:
        """The call has produced ``count`` tokens so far (a driver may skip counts)."""
        agent = self._agent_of(call_id)
        if agent is None:
            return []
        agent.generated = max(agent.generated, min(agent.call_end, agent.call_start + count))
        actions = self._release(agent)
        return actions + self._cancel_unneeded() if actions else actions

    def finished(self, call_id: str, produced: int | None = None) -> list[Action]:
        """The call ended; ``produced`` < the tokens asked for means the model stopped early,
        which ends the agent's answer there."""
        agent = self._agent_of(call_id)
        if agent is None:
            return []
        if produced is not None and agent.call_start + produced < agent.call_end:
            agent.call_end = agent.total = agent.call_start + produced
            agent.boundaries = (*[b for b in agent.boundaries if b < agent.total], agent.total)
        agent.generated = agent.call_end
        actions = self._release(agent)
        self._append_own_output(agent)
        agent.call = None
        del self._calls[call_id]
        if agent.generated >= agent.total:
            agent.done = True
            if all(self.agents[name].done for name in self.dag.outputs):
                return actions + self._finish(FinishRequest(ok=True))
            actions += self._after_done(agent)
        else:
            actions += self._maybe_start(agent)
        return actions + self._cancel_unneeded()

    def failed(self, call_id: str, reason: str) -> list[Action]:
        """The call died. Its agent is dropped; redundancy may cover it downstream."""
        agent = self._agent_of(call_id)
        if agent is None:
            return []
        del self._calls[call_id]
        agent.call = None
        agent.done = agent.dropped = True
        if agent.node.name in self.dag.outputs:
            return self._finish(FinishRequest(ok=False, reason=f"{agent.node.name}: {reason}"))
        return self._after_done(agent) + self._cancel_unneeded()

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def active_calls(self) -> list[str]:
        return list(self._calls)

    # --- internals ---------------------------------------------------------------------------

    def _agent_of(self, call_id: str) -> _Agent | None:
        name = self._calls.get(call_id)
        return self.agents[name] if name is not None and self.outcome is None else None

    def _release(self, agent: _Agent) -> list[Action]:
        actions: list[Action] = []
        while (
            agent.units < len(agent.boundaries) and agent.boundaries[agent.units] <= agent.generated
        ):
            agent.units += 1
            agent.released = agent.boundaries[agent.units - 1]
            actions.append(ReleaseUnit(agent.node.name, agent.units, agent.released))
        if actions:
            for reader in agent.readers:
                actions += self._maybe_start(reader)
        return actions

    def _after_done(self, agent: _Agent) -> list[Action]:
        actions: list[Action] = []
        for reader in agent.readers:
            actions += self._maybe_start(reader)
        return actions

    def _maybe_start(self, agent: _Agent) -> list[Action]:
        if agent.done or agent.call is not None or self.outcome is not None:
            return []
        node, inputs = agent.node, agent.sources
        next_round = agent.rounds + 1
        if inputs:
            ready = 0  # a plain loop: this runs for every reader after every unit
            for source in inputs:
                if source.done or (node.wait != "all" and source.units >= next_round):
                    ready += 1
            if ready < (node.need if next_round == 1 else node.need_later):
                return []
        start = agent.generated
        nothing_new = not inputs or node.wait == "all" or all(i.done for i in inputs)
        if nothing_new and node.calls == "stream":
            end = agent.total  # nothing more will arrive: answer the rest in one call
        else:
            end = next(b for b in agent.boundaries if b > start)
        agent.rounds = next_round
        agent.call = f"{agent.node.name}#{next_round}"
        agent.call_start, agent.call_end = start, end
        self._calls[agent.call] = agent.node.name
        messages, continue_final = self._prompt(agent)
        watch = tuple(b - start for b in agent.boundaries if start < b < end)
        return [
            StartCall(
                call_id=agent.call,
                agent=agent.node.name,
                round=next_round,
                messages=messages,
                continue_final=continue_final,
                tokens=end - start,
                out_start=start,
                watch=watch,
                final=agent.node.name in self.dag.outputs,
            )
        ]

    def _prompt(self, agent: _Agent) -> tuple[tuple[Message, ...], bool]:
        name = agent.node.name
        system = Span(("system", name))
        query = Span(("query",))
        inputs = agent.sources
        if agent.node.template == "prefix_cache" and inputs:
            return self._append_prompt(agent, system, query, inputs)
        system_parts = [system]
        if inputs:
            system_parts.append(Span(("text", AGGREGATE_HEADER)))
            for index, source in enumerate(inputs, 1):
                system_parts += [Span(("text", answer_label(index))), *self._upstream(source, 0)]
        messages = [Message("system", tuple(system_parts)), Message("user", (query,))]
        if agent.generated > 0:
            messages.append(Message("assistant", (Span(("output", name), 0, agent.generated),)))
        return tuple(messages), agent.generated > 0

    def _append_prompt(
        self, agent: _Agent, system: Span, query: Span, inputs: list[_Agent]
    ) -> tuple[tuple[Message, ...], bool]:
        """Append-only transcript, so the server's prefix cache re-prefills only new units."""
        new_parts: list[Span] = []
        for index, source in enumerate(inputs, 1):
            shown = agent.included.get(source.node.name, 0)
            if source.released > shown:
                new_parts += [Span(("text", answer_label(index))), *self._upstream(source, shown)]
                agent.included[source.node.name] = source.released
        if not agent.transcript:
            agent.transcript = [
                Message("system", (system,)),
                Message("user", (query, Span(("text", AGGREGATE_HEADER)), *new_parts)),
            ]
        elif new_parts:
            agent.transcript.append(Message("user", tuple(new_parts)))
        continue_final = agent.transcript[-1].role == "assistant"
        return tuple(agent.transcript), continue_final

    @staticmethod
    def _upstream(source: _Agent, start: int) -> list[Span]:
        if source.released <= start:
            return []
        return [Span(("output", source.node.name), start, source.released)]

    def _append_own_output(self, agent: _Agent) -> None:
        if agent.node.template != "prefix_cache" or not agent.transcript:
            return
        own = Span(("output", agent.node.name), agent.call_start, agent.call_end)
        last = agent.transcript[-1]
        if last.role == "assistant":
            agent.transcript[-1] = Message("assistant", (*last.parts, own))
        else:
            agent.transcript.append(Message("assistant", (own,)))

    def _cancel_unneeded(self) -> list[Action]:
        """Stop calls whose output no consumer will read again."""
        actions: list[Action] = []
        changed = True
        while changed:
            changed = False
            for agent, readers in self._cancellable:  # the user reads every output to its end
                if agent.done or not _read_no_more(readers):
                    continue
                agent.done = agent.dropped = True
                changed = True
                if agent.call is not None:
                    actions.append(CancelCall(agent.call, "no longer needed"))
                    del self._calls[agent.call]
                    agent.call = None
        return actions

    def _finish(self, outcome: FinishRequest) -> list[Action]:
        actions: list[Action] = [CancelCall(c, "request finished") for c in self._calls]
        self._calls.clear()
        for agent in self.agents.values():
            agent.call = None
            # unlinked, as nothing is decided after the outcome: agents reading each other
            # are a reference cycle, which would keep the request's agents, prompts and
            # spans alive until a full collection instead of freeing them now
            agent.sources, agent.readers = [], []
        self._cancellable = []
        self.outcome = outcome
        return [*actions, outcome]


def _read_no_more(readers: list[_Agent]) -> bool:
    """Whether every reader is done or has started its last call: a plain loop, not all()
    over a generator, as it runs after every unit and call end of every request."""
    for reader in readers:
        if not reader.done and (reader.call is None or reader.call_end != reader.total):
            return False
    return True
