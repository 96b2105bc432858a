"""The one driver of a run's requests, under the simulator and the live runner alike.

Three layers, as h11 has for HTTP: ``sim/protocol.py`` decides what one request does next
(sans-IO); this driver applies those decisions for every request of a run — dispatches
arrivals (one rule for open and closed loops), spreads calls over a server's replicas, keeps
each call's usage and writes the typed trace records; an :class:`Adapter` only keeps time and
starts and cancels calls (``sim/simulator.py`` with SimPy and engine models,
``live/runner.py`` with asyncio and HTTP). So a scenario makes the same calls simulated and
live; only their timing differs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, Protocol

import numpy as np

from sim.coverage import tokens_read
from sim.dag import Dag
from sim.protocol import (
    Action,
    CancelCall,
    FinishRequest,
    ReleaseUnit,
    RequestProtocol,
    StartCall,
)
from sim.scenario import Scenario
from sim.texts import CHARS_PER_TOKEN_GUESS
from sim.trace import (
    CallEndRecord,
    CallRecord,
    CallStatus,
    DeltasRecord,
    RequestEndRecord,
    RequestRecord,
    TraceWriter,
    UnitRecord,
)
from sim.workload import RequestSpec, build_requests

ProgressCallback = Callable[[int, int], None]  # (requests done, requests in all)


class RandomStreams(NamedTuple):
    """Independent streams from the scenario's seed: the simulator and the live runner draw
    the same arrivals and lengths from the first two."""

    arrivals: np.random.Generator
    lengths: np.random.Generator
    network: np.random.Generator
    engine: np.random.Generator


def random_streams(seed: int) -> RandomStreams:
    return RandomStreams(*(np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(4)))


def plan_requests(
    scenario: Scenario,
    dag: Dag,
    streams: RandomStreams,
    chars_per_token: float = CHARS_PER_TOKEN_GUESS,
) -> list[RequestSpec]:
    """The run's requests (arrivals, prompt and answer lengths) from the seeded streams."""
    return build_requests(
        scenario.workload, dag, streams.arrivals, streams.lengths, chars_per_token
    )


@dataclass
class CallUsage:
    """What a call got so far; adapters keep it current, so a cancelled or failed call still
    reports what it received."""

    prompt_tokens: int | None = None  # the whole prompt as the server counts it
    cached_tokens: int | None = None
    completion_tokens: int = 0
    queued_s: float | None = None  # simulated only
    attempts: int = 1  # live: 1 + retries before the first token


@dataclass(eq=False)
class Call:
    """One started call, as the driver hands it to an adapter."""

    request: RequestSpec
    action: StartCall
    server: str
    replica: int
    usage: CallUsage = field(default_factory=CallUsage)
    handle: Any = None  # the adapter's own state of this call
    ended: bool = False
    # live: the prompt as sent and the text produced, recorded with ``keep_text`` only
    prompt_text: list[dict[str, str]] | str | None = None
    output_text: str | None = None


class Adapter(Protocol):
    """What the simulator and the live runner provide, and nothing more."""

    def now(self) -> float:
        """Seconds since the run started."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> None: ...

    def start_call(self, call: Call) -> None:
        """Begin the call; report back with :meth:`Driver.tokens`, :meth:`Driver.deltas`,
        then :meth:`Driver.finished` or :meth:`Driver.failed`."""
        ...

    def cancel_call(self, call: Call) -> None:
        """Stop the call (its ``usage`` as it stands is recorded right after)."""
        ...


@dataclass
class _Request:
    spec: RequestSpec
    protocol: RequestProtocol
    calls: dict[str, Call] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)  # server -> the replica it is on


class Driver:
    """Applies the protocol's actions for every request of a run and records them."""

    def __init__(
        self,
        scenario: Scenario,
        dag: Dag,
        requests: list[RequestSpec],
        trace: TraceWriter,
        adapter: Adapter,
        serve_whole: Callable[[RequestSpec, Callable[[], None]], None] | None = None,
        keep_text: bool = False,
    ) -> None:
        """``serve_whole``: requests served outside the protocol (the simulator's multistream
        what-if), called with a request and the callback for its end; the driver still
        dispatches and counts them. ``keep_text``: record the user prompts and every call's
        prompt and output text the adapter gives (live ``run --keep-text``)."""
        self.dag = dag
        self.keep_text = keep_text
        self.requests = requests
        self.trace = trace
        self.adapter = adapter
        self._serve_whole = serve_whole
        arrival = scenario.workload.arrival
        self._users = getattr(arrival, "concurrency", 1)
        self._think_s = getattr(arrival, "think_time_s", 0.0)
        self._active = {name: [0] * s.replicas for name, s in scenario.servers.items()}
        self._assigned = {name: [0] * s.replicas for name, s in scenario.servers.items()}
        self._running: dict[int, _Request] = {}
        self._user_queues: dict[int, deque[RequestSpec]] = {}  # request -> its user's next ones
        self._finished = 0
        self._stopped = False
        self._progress: ProgressCallback | None = None
        self._on_all_done: Callable[[], None] = lambda: None

    @property
    def all_done(self) -> bool:
        return self._finished == len(self.requests)

    def start(
        self,
        on_all_done: Callable[[], None],
        progress: ProgressCallback | None = None,
    ) -> None:
        """Dispatch the arrivals. A request with an arrival time (a rate, or a workload
        file's ``arrival_s``) is sent then; the others go to the closed loop's users in turn,
        each sending its next request when its last one ends (after the think time)."""
        self._on_all_done, self._progress = on_all_done, progress
        now = self.adapter.now()
        for spec in self.requests:
            if spec.arrival_s is not None:
                self.adapter.call_later(max(0.0, spec.arrival_s - now), partial(self._begin, spec))
        closed = [spec for spec in self.requests if spec.arrival_s is None]
        for user in range(min(self._users, len(closed))):
            self._next_of(deque(closed[user :: self._users]))
        if not self.requests:
            on_all_done()

    def _next_of(self, queue: deque[RequestSpec]) -> None:
        if queue:
            spec = queue.popleft()
            self._user_queues[spec.index] = queue
            self._begin(spec)

    def _begin(self, spec: RequestSpec) -> None:
        if self._stopped:
            return
        if self._serve_whole is not None:
            self._serve_whole(spec, partial(self._request_ended, spec.index))
            return
        state = _Request(spec, RequestProtocol(self.dag, spec.output_tokens))
        self._running[spec.index] = state
        record: RequestRecord = {
            "type": "request",
            "req": spec.index,
            "t": self.adapter.now(),
            "prompt_tokens": spec.prompt_tokens,
        }
        if self.keep_text and spec.prompt is not None:
            record["prompt"] = spec.prompt
        self.trace.write(record)
        self._apply(state, state.protocol.start())

    # --- what the adapters report ----------------------------------------------------------

    def tokens(self, call: Call, count: int) -> None:
        """The call has produced ``count`` tokens so far (an adapter may skip counts). Its
        last token counts when the call ends (:meth:`finished`): the simulator reports only
        unit boundaries inside a call, and a live stream's last piece would otherwise release
        the final unit — and cancel the call as no longer needed — before it ends."""
        if call.ended:
            return
        call.usage.completion_tokens = max(call.usage.completion_tokens, count)
        if call.action.watch and count < call.action.tokens:
            state = self._running[call.request.index]
            self._apply(state, state.protocol.tokens(call.action.call_id, count))

    def deltas(self, call: Call, times: list[float], counts: list[int]) -> None:
        """Pieces of the call received at ``times``; recorded for the user's answer only."""
        if call.ended or not call.action.final:
            return
        record: DeltasRecord = {
            "type": "deltas",
            "req": call.request.index,
            "call": call.action.call_id,
            "t": times,
            "n": counts,
        }
        self.trace.write(record)

    def finished(self, call: Call) -> None:
        """The call ended normally; ``call.usage.completion_tokens`` is what it produced."""
        if call.ended:
            return
        self._end(call, "ok", "")
        state = self._running[call.request.index]
        produced = call.usage.completion_tokens
        self._apply(state, state.protocol.finished(call.action.call_id, produced))

    def failed(self, call: Call, reason: str) -> None:
        if call.ended:
            return
        self._end(call, "failed", reason)
        state = self._running[call.request.index]
        self._apply(state, state.protocol.failed(call.action.call_id, reason))

    def interrupt(self, reason: str = "interrupted") -> None:
        """Cancel every running call and send nothing more (e.g. Ctrl-C); unfinished requests
        stay unfinished."""
        self._stopped = True
        for state in list(self._running.values()):
            for call_id in list(state.calls):
                self._cancel(state, call_id, reason)

    # --- protocol actions ------------------------------------------------------------------

    def _apply(self, state: _Request, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StartCall):
                self._start(state, action)
            elif isinstance(action, ReleaseUnit):
                unit: UnitRecord = {
                    "type": "unit",
                    "req": state.spec.index,
                    "agent": action.agent,
                    "unit": action.unit,
                    "tokens": action.tokens,
                    "t": self.adapter.now(),
                }
                self.trace.write(unit)
            elif isinstance(action, CancelCall):
                self._cancel(state, action.call_id, action.reason)
            elif isinstance(action, FinishRequest):
                end: RequestEndRecord = {
                    "type": "request_end",
                    "req": state.spec.index,
                    "t": self.adapter.now(),
                    "ok": action.ok,
                    "reason": action.reason,
                    "answer_tokens": {
                        name: agent.total for name, agent in state.protocol.agents.items()
                    },
                }
                self.trace.write(end)
                del self._running[state.spec.index]
                self._request_ended(state.spec.index)

    def _start(self, state: _Request, action: StartCall) -> None:
        node = self.dag.agent(action.agent)
        server = node.server
        if server not in state.replicas:  # a request stays on one replica: its cache is there
            state.replicas[server] = self._least_loaded(server)
        replica = state.replicas[server]
        self._active[server][replica] += 1
        call = Call(state.spec, action, server, replica)
        state.calls[action.call_id] = call
        record: CallRecord = {
            "type": "call",
            "req": state.spec.index,
            "call": action.call_id,
            "agent": action.agent,
            "round": action.round,
            "server": server,
            "replica": replica,
            "t": self.adapter.now(),
            "tokens": action.tokens,
            "final": action.final,
        }
        if node.inputs:
            record["read"] = tokens_read(action.messages, node.inputs)
        self.trace.write(record)
        self.adapter.start_call(call)

    def _least_loaded(self, server: str) -> int:
        """The replica with the fewest calls running; among those, the one given the fewest
        requests so far — idle replicas take turns, so a hosted endpoint's per-minute budget
        is spent evenly across its replicas, not all on the first idle one."""
        active, assigned = self._active[server], self._assigned[server]
        replica = min(range(len(active)), key=lambda r: (active[r], assigned[r]))
        assigned[replica] += 1
        return replica

    def _cancel(self, state: _Request, call_id: str, reason: str) -> None:
        call = state.calls.get(call_id)
        if call is None or call.ended:
            return
        self.adapter.cancel_call(call)
        self._end(call, "cancelled", reason)

    def _end(self, call: Call, status: CallStatus, reason: str) -> None:
        call.ended = True
        self._active[call.server][call.replica] -= 1
        del self._running[call.request.index].calls[call.action.call_id]
        usage = call.usage
        record: CallEndRecord = {
            "type": "call_end",
            "req": call.request.index,
            "call": call.action.call_id,
            "t": self.adapter.now(),
            "status": status,
            "prompt_tokens": usage.prompt_tokens,
            "cached_tokens": usage.cached_tokens,
            "completion_tokens": usage.completion_tokens,
            "queued_s": usage.queued_s,
            "reason": reason,
            "attempts": usage.attempts,
        }
        if self.keep_text and call.prompt_text is not None:
            record["prompt_text"] = call.prompt_text
            record["text"] = call.output_text or ""
        self.trace.write(record)

    def _request_ended(self, index: int) -> None:
        self._finished += 1
        if self._progress is not None:
            self._progress(self._finished, len(self.requests))
        queue = self._user_queues.pop(index, None)
        if queue:
            if self._think_s:
                self.adapter.call_later(self._think_s, partial(self._next_of, queue))
            else:
                self._next_of(queue)
        if self.all_done:
            self._on_all_done()
