"""The SimPy driver: the workload's requests through the protocol onto simulated engines.

It owns time and nothing else: the protocol decides what happens, engines decide how long
it takes, the network adds delay to every message, and the trace records it all.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from sim.dag import Dag, build_dag
from sim.engines.api import ApiEngine
from sim.engines.base import CallResult, Engine, EngineCall
from sim.engines.vllm import VllmEngine
from sim.errors import ConfigError
from sim.kv_cache import TokenRun
from sim.metrics import DEFAULT_K, summarize
from sim.multistream import MultistreamRequests
from sim.network import DeltaStream, Link
from sim.profile import ApiProfile, VllmProfile, load_profile
from sim.protocol import (
    Action,
    CancelCall,
    FinishRequest,
    ReleaseUnit,
    RequestProtocol,
    Span,
    StartCall,
)
from sim.scenario import ApiServer, Scenario, VllmServer
from sim.texts import MESSAGE_CLOSE_TOKENS, MESSAGE_OPEN_TOKENS, estimate_tokens
from sim.trace import Record, TraceWriter, make_header
from sim.workload import RequestSpec, build_requests

ProgressCallback = Callable[[int, int], None]  # (requests done, requests in all)


@dataclass
class SimResult:
    records: list[Record]
    summary: dict[str, Any]
    events: int  # simulation events processed
    wall_s: float


@dataclass
class _Call:
    req: int
    action: StartCall
    engine: Engine
    stream: DeltaStream
    link: Link
    prompt_tokens: int


class _Request:
    def __init__(self, spec: RequestSpec, protocol: RequestProtocol, done: simpy.Event) -> None:
        self.spec = spec
        self.protocol = protocol
        self.done = done
        self.replicas: dict[str, Engine] = {}


class Simulator:
    def __init__(
        self,
        scenario: Scenario,
        requests: list[RequestSpec] | None = None,
        trace_path: str | Path | None = None,
        profile_dir: Path | None = None,
        profiles: dict[str, VllmProfile | ApiProfile] | None = None,
    ) -> None:
        """``profiles`` replaces named servers' profiles with objects (calibration tries many
        candidate profiles without writing files)."""
        self.scenario = scenario
        self.env = simpy.Environment()
        self.dag: Dag = build_dag(scenario)
        arrivals_rng, lengths_rng, network_rng, engine_rng = (
            np.random.default_rng(s) for s in np.random.SeedSequence(scenario.seed).spawn(4)
        )
        given = profiles or {}
        self.profiles = {
            name: given[name] if name in given else load_profile(server.profile, profile_dir)
            for name, server in scenario.servers.items()
        }
        # text prompts are counted as the live runner does: by the answering agent's server
        answering = self.profiles[self.dag.agent(self.dag.output).server]
        self.requests = requests or build_requests(
            scenario.workload, self.dag, arrivals_rng, lengths_rng, answering.chars_per_token
        )
        self.engines: dict[str, list[Engine]] = {}
        self.links: dict[str, Link] = {}
        for name, server in scenario.servers.items():
            profile = self.profiles[name]
            self.engines[name] = [
                self._engine(server, profile, engine_rng) for _ in range(server.replicas)
            ]
            self.links[name] = Link(server.network or scenario.network.latency, network_rng)
        self._chars_per_token = {
            a.name: self.profiles[a.server].chars_per_token for a in self.dag.agents
        }
        self._system_tokens = {
            a.name: estimate_tokens(a.system_prompt, self._chars_per_token[a.name])
            for a in self.dag.agents
        }
        self._calls: dict[tuple[int, str], _Call] = {}
        self._states: dict[int, _Request] = {}
        self.events = 0
        header = make_header(
            "sim",
            scenario.model_dump(mode="json"),
            profiles={n: p.model_dump(mode="json") for n, p in self.profiles.items()},
        )
        self.trace = TraceWriter(header, trace_path, flush=False)
        self._multistream = (
            MultistreamRequests(
                self.env, scenario, self.dag, self.profiles, self.engines, self.links, self.trace
            )
            if scenario.topology.mode == "multistream"
            else None
        )

    def _engine(
        self,
        server: VllmServer | ApiServer,
        profile: VllmProfile | ApiProfile,
        rng: np.random.Generator,
    ) -> Engine:
        if isinstance(server, VllmServer) and isinstance(profile, VllmProfile):
            return VllmEngine(self.env, profile, server)
        if isinstance(server, ApiServer) and isinstance(profile, ApiProfile):
            return ApiEngine(self.env, profile, server, rng)
        raise ConfigError(
            f"server kind {server.kind!r} cannot run profile {profile.name!r} "
            f"(a {profile.kind} profile)"
        )

    # --- running --------------------------------------------------------------------------

    def run(self, progress: ProgressCallback | None = None) -> SimResult:
        started = time.perf_counter()
        self._progress = progress
        self._finished = 0
        all_done = self.env.all_of([self._launch(spec) for spec in self._open_loop()] or [])
        closed = [spec for spec in self.requests if spec.arrival_s is None]
        users = getattr(self.scenario.workload.arrival, "concurrency", 1)
        loops = [self.env.process(self._user(closed[u::users])) for u in range(users)]
        everything = self.env.all_of([all_done, *loops])
        self.env.run(until=everything)
        self.trace.close(self.env.now)
        engine_events = sum(
            getattr(e, "events", 0) for replicas in self.engines.values() for e in replicas
        )
        records = self.trace.records
        return SimResult(
            records=records,
            summary=summarize(records, k=DEFAULT_K),
            events=self.events + engine_events,
            wall_s=time.perf_counter() - started,
        )

    def _open_loop(self) -> list[RequestSpec]:
        return [spec for spec in self.requests if spec.arrival_s is not None]

    def _launch(self, spec: RequestSpec) -> simpy.Process:
        return self.env.process(self._arrive_then_run(spec))

    def _arrive_then_run(self, spec: RequestSpec) -> Generator[simpy.Event, Any, None]:
        assert spec.arrival_s is not None
        yield self.env.timeout(spec.arrival_s)
        yield from self._request(spec)

    def _user(self, specs: list[RequestSpec]) -> Generator[simpy.Event, Any, None]:
        think = getattr(self.scenario.workload.arrival, "think_time_s", 0.0)
        for spec in specs:
            yield from self._request(spec)
            if think:
                yield self.env.timeout(think)

    def _request(self, spec: RequestSpec) -> Generator[simpy.Event, Any, None]:
        if self._multistream is not None:
            yield from self._multistream.serve(spec)
            self._count_finished()
            return
        state = _Request(spec, RequestProtocol(self.dag, spec.output_tokens), self.env.event())
        self._states[spec.index] = state
        self.trace.write(
            {
                "type": "request",
                "req": spec.index,
                "t": self.env.now,
                "prompt_tokens": spec.prompt_tokens,
            }
        )
        self._apply(state, state.protocol.start())
        yield state.done
        del self._states[spec.index]
        self._count_finished()

    def _count_finished(self) -> None:
        self._finished += 1
        if self._progress is not None:
            self._progress(self._finished, len(self.requests))

    # --- protocol actions -------------------------------------------------------------------------

    def _apply(self, state: _Request, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StartCall):
                self._start_call(state, action)
            elif isinstance(action, ReleaseUnit):
                self.trace.write(
                    {
                        "type": "unit",
                        "req": state.spec.index,
                        "agent": action.agent,
                        "unit": action.unit,
                        "tokens": action.tokens,
                        "t": self.env.now,
                    }
                )
            elif isinstance(action, CancelCall):
                self._cancel(state, action)
            elif isinstance(action, FinishRequest):
                self.trace.write(
                    {
                        "type": "request_end",
                        "req": state.spec.index,
                        "t": self.env.now,
                        "ok": action.ok,
                        "reason": action.reason,
                    }
                )
                state.done.succeed()

    def _at(self, when: float, callback: Callable[[], None]) -> None:
        self.events += 1
        event = self.env.timeout(max(0.0, when - self.env.now))
        event.callbacks.append(lambda _event: callback())

    def _start_call(self, state: _Request, action: StartCall) -> None:
        req = state.spec.index
        server = self.dag.agent(action.agent).server
        if server not in state.replicas:  # a request stays on one replica: its cache is there
            state.replicas[server] = min(self.engines[server], key=lambda e: e.load())
        engine = state.replicas[server]
        link = self.links[server]
        prompt = self._token_runs(state.spec, action)
        prompt_tokens = sum(end - start for _, start, end in prompt)
        stream = DeltaStream(link, keep=action.final)
        call = _Call(req, action, engine, stream, link, prompt_tokens)
        self._calls[(req, action.call_id)] = call
        self.trace.write(
            {
                "type": "call",
                "req": req,
                "call": action.call_id,
                "agent": action.agent,
                "round": action.round,
                "server": server,
                "t": self.env.now,
                "tokens": action.tokens,
                "final": action.final,
                "prompt_tokens": prompt_tokens,
            }
        )
        engine_call = EngineCall(
            key=(req, action.call_id),
            prompt=prompt,
            output=("output", req, action.agent),
            output_start=action.out_start,
            tokens=action.tokens,
            watch=action.watch,
            progress=lambda times: self._on_progress(call, times),
            done=lambda result, times: self._on_done(call, result, times),
        )
        self._at(self.env.now + link.delay(), lambda: engine.submit(engine_call))

    def _on_progress(self, call: _Call, server_times: np.ndarray) -> None:
        arrival = call.stream.add(server_times)
        count = call.stream.count
        self._at(arrival, lambda: self._deliver_tokens(call, count))

    def _deliver_tokens(self, call: _Call, count: int) -> None:
        if self._calls.get((call.req, call.action.call_id)) is not call:
            return
        state = self._state_of(call)
        self._apply(state, state.protocol.tokens(call.action.call_id, count))

    def _on_done(self, call: _Call, result: CallResult, server_times: np.ndarray) -> None:
        arrival = call.stream.add(server_times)
        self._at(max(arrival, self.env.now), lambda: self._deliver_end(call, result))

    def _deliver_end(self, call: _Call, result: CallResult) -> None:
        key = (call.req, call.action.call_id)
        if self._calls.get(key) is not call:
            return
        del self._calls[key]
        ok = result.status == "ok"
        if call.action.final:
            arrivals = call.stream.all_arrivals()
            self.trace.write(
                {
                    "type": "deltas",
                    "req": call.req,
                    "call": call.action.call_id,
                    "t": arrivals,
                    "n": [1] * len(arrivals),
                }
            )
        self._write_call_end(call, "ok" if ok else "failed", result, reason=result.status)
        state = self._state_of(call)
        if ok:
            actions = state.protocol.finished(call.action.call_id, produced=result.tokens)
        else:
            actions = state.protocol.failed(call.action.call_id, result.status)
        self._apply(state, actions)

    def _cancel(self, state: _Request, action: CancelCall) -> None:
        call = self._calls.pop((state.spec.index, action.call_id), None)
        if call is None:
            return
        self._write_call_end(call, "cancelled", None, reason=action.reason)
        key = (call.req, action.call_id)
        engine = call.engine
        self._at(self.env.now + call.link.delay(), lambda: engine.cancel(key))

    def _write_call_end(
        self, call: _Call, status: str, result: CallResult | None, reason: str
    ) -> None:
        self.trace.write(
            {
                "type": "call_end",
                "req": call.req,
                "call": call.action.call_id,
                "t": self.env.now,
                "status": status,
                "prompt_tokens": result.prompt_tokens if result else call.prompt_tokens,
                "cached_tokens": result.cached_tokens if result else None,
                "completion_tokens": result.tokens if result else call.stream.count,
                "queued_s": result.queued_s if result else None,
                "reason": "" if status == "ok" else reason,
            }
        )

    def _state_of(self, call: _Call) -> _Request:
        return self._states[call.req]

    # --- prompts as token runs ---------------------------------------------------------------

    def _token_runs(self, spec: RequestSpec, action: StartCall) -> list[TokenRun]:
        messages, continue_final = action.messages, action.continue_final
        chars_per_token = self._chars_per_token[action.agent]
        runs: list[TokenRun] = []
        for index, message in enumerate(messages):
            runs.append((("open", message.role), 0, MESSAGE_OPEN_TOKENS))
            runs += [self._run(spec, part, chars_per_token) for part in message.parts]
            if not (continue_final and index == len(messages) - 1):
                runs.append((("close",), 0, MESSAGE_CLOSE_TOKENS))
        if not continue_final:
            runs.append((("open", "assistant"), 0, MESSAGE_OPEN_TOKENS))
        return runs

    def _run(self, spec: RequestSpec, span: Span, chars_per_token: float) -> TokenRun:
        kind = span.stream[0]  # type: ignore[index]
        if kind == "system":
            agent = span.stream[1]  # type: ignore[index]
            return (span.stream, 0, self._system_tokens[agent])
        if kind == "query":
            return (("query", spec.index), 0, spec.prompt_tokens)
        if kind == "output":
            return (("output", spec.index, span.stream[1]), span.start, span.end)  # type: ignore[index]
        text = span.stream[1]  # type: ignore[index]
        return (span.stream, 0, estimate_tokens(text, chars_per_token))
