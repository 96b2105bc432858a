"""The simulator: the run's requests on simulated engines, under the shared driver.

It is an adapter of :class:`sim.driver.Driver` and owns time and nothing else: the protocol
decides what happens, the driver applies it and records the trace, engines decide how long
it takes, and the network adds delay to every message.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from sim.answers import AnswerStreams
from sim.dag import Dag, build_dag
from sim.driver import Call, Driver, ProgressCallback, plan_requests, random_streams
from sim.engines.api import ApiEngine
from sim.engines.base import CallResult, Engine, EngineCall
from sim.engines.vllm import VllmEngine
from sim.errors import ConfigError
from sim.kv_cache import TokenRun
from sim.metrics import DEFAULT_K, summarize
from sim.multistream import MultistreamRequests
from sim.network import DeltaStream, Link, latency_draws
from sim.profile import ApiProfile, VllmProfile, load_profile
from sim.protocol import Span, StartCall
from sim.scenario import (
    ApiServer,
    Scenario,
    VllmServer,
    continues_answers,
    workload_digests,
)
from sim.texts import estimate_tokens, template_runs
from sim.trace import Record, TraceWriter, make_header
from sim.workload import RequestSpec


@dataclass
class SimResult:
    records: list[Record]
    summary: dict[str, Any]
    events: int  # simulation events processed
    wall_s: float


@dataclass
class _SimCall:
    """The simulator's side of a call: where it runs and its stream back to the client."""

    engine: Engine
    stream: DeltaStream
    link: Link


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
        streams = random_streams(scenario.seed)
        given = profiles or {}
        self.profiles = {
            name: given[name] if name in given else load_profile(server.profile, profile_dir)
            for name, server in scenario.servers.items()
        }
        # text prompts are counted as the live runner does: by the answering agent's server
        answering = self.profiles[self.dag.agent(self.dag.output).server]
        self.requests = requests or plan_requests(
            scenario, self.dag, streams, answering.chars_per_token
        )
        self.engines: dict[str, list[Engine]] = {}
        for name, server in scenario.servers.items():
            profile = self.profiles[name]
            self.engines[name] = [
                self._engine(server, profile, streams.engine) for _ in range(server.replicas)
            ]
        latencies = {
            name: server.network or scenario.network.latency
            for name, server in scenario.servers.items()
        }
        self.links: dict[str, Link] = {
            name: Link(draws) for name, draws in latency_draws(latencies, streams.network).items()
        }
        self._chars_per_token = {
            a.name: self.profiles[a.server].chars_per_token for a in self.dag.agents
        }
        # only vLLM continues a final message; a strict endpoint answers after it
        self._continues = {
            a.name: continues_answers(scenario.servers[a.server]) for a in self.dag.agents
        }
        self._text_tokens: dict[tuple[str, float], int] = {}  # fixed texts, sized once
        self._answers = AnswerStreams()  # the tokens of every agent's answer
        # keyed by the text, not the agent: agents with the same system prompt share its KV
        # blocks in a prefix cache, as the real engine's token hashes do
        self._system_runs: dict[str, TokenRun] = {
            a.name: (
                ("text", a.system_prompt),
                0,
                estimate_tokens(a.system_prompt, self._chars_per_token[a.name]),
            )
            for a in self.dag.agents
        }
        self.events = 0
        header = make_header(
            "sim",
            scenario.model_dump(mode="json"),
            # the files decide the requests unless they are given (a replay of a trace, whose
            # header's paths may lie on another machine)
            workload_digests(scenario.workload) if requests is None else None,
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
        self.driver = Driver(
            scenario,
            self.dag,
            self.requests,
            self.trace,
            self,
            serve_whole=self._serve_multistream if self._multistream is not None else None,
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
        everything = self.env.event()

        def all_done() -> None:
            everything.succeed()

        self.driver.start(on_all_done=all_done, progress=progress)
        with _no_collections():
            self.env.run(until=everything)
            self.trace.close(self.env.now)
            # the summary too: its lists would otherwise set off collections that traverse
            # the whole run's objects, about a quarter of the summary's time in the reference run
            summary = summarize(self.trace.records, k=DEFAULT_K)
        engine_events = sum(
            getattr(e, "events", 0) for replicas in self.engines.values() for e in replicas
        )
        return SimResult(
            records=self.trace.records,
            summary=summary,
            events=self.events + engine_events,
            wall_s=time.perf_counter() - started,
        )

    # --- the driver's adapter ----------------------------------------------------------------

    def now(self) -> float:
        return self.env.now

    def _serve_multistream(self, spec: RequestSpec, done: Callable[[], None]) -> None:
        """The multistream what-if serves a request as one sequence, outside the protocol."""
        assert self._multistream is not None
        process = self.env.process(self._multistream.serve(spec))
        process.callbacks.append(lambda _event: done())

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        self.events += 1
        event = self.env.timeout(delay)
        event.callbacks.append(lambda _event: callback())

    def start_call(self, call: Call) -> None:
        action = call.action
        engine = self.engines[call.server][call.replica]
        link = self.links[call.server]
        call.handle = _SimCall(engine, DeltaStream(link, keep=action.final), link)
        prompt = self._token_runs(call.request, action)
        greedy = self.dag.agent(action.agent).temperature == 0
        output, output_start = self._answers.start_call(
            call.request.index,
            action.agent,
            action.out_start,
            action.tokens,
            call.server if greedy else None,
            prompt,
        )
        engine_call = EngineCall(
            key=(call.request.index, action.call_id),
            prompt=prompt,
            output=output,
            output_start=output_start,
            tokens=action.tokens,
            watch=action.watch,
            priority=self.dag.agent(action.agent).priority,
            progress=lambda times: self._on_progress(call, times),
            done=lambda result, times: self._on_done(call, result, times),
        )
        call.usage.prompt_tokens = engine_call.prompt_tokens
        self.call_later(link.delay(), lambda: engine.submit(engine_call))

    def cancel_call(self, call: Call) -> None:
        handle: _SimCall = call.handle
        call.usage.completion_tokens = handle.stream.count
        key = (call.request.index, call.action.call_id)
        self.call_later(handle.link.delay(), lambda: handle.engine.cancel(key))

    def _on_progress(self, call: Call, server_times: np.ndarray) -> None:
        stream: DeltaStream = call.handle.stream
        arrival = stream.add(server_times)
        count = stream.count
        self.call_later(max(0.0, arrival - self.env.now), lambda: self.driver.tokens(call, count))

    def _on_done(self, call: Call, result: CallResult, server_times: np.ndarray) -> None:
        arrival = call.handle.stream.add(server_times)
        self.call_later(max(0.0, arrival - self.env.now), lambda: self._deliver_end(call, result))

    def _deliver_end(self, call: Call, result: CallResult) -> None:
        if call.ended:
            return
        if call.action.final:
            arrivals = call.handle.stream.all_arrivals()
            self.driver.deltas(call, arrivals, [1] * len(arrivals))
        usage = call.usage
        usage.prompt_tokens, usage.cached_tokens = result.prompt_tokens, result.cached_tokens
        usage.completion_tokens, usage.queued_s = result.tokens, result.queued_s
        if result.status == "ok":
            self.driver.finished(call)
        else:
            self.driver.failed(call, result.status)

    # --- prompts as token runs ---------------------------------------------------------------

    def _token_runs(self, spec: RequestSpec, action: StartCall) -> list[TokenRun]:
        continue_final = action.continue_final and self._continues[action.agent]
        chars_per_token = self._chars_per_token[action.agent]
        return template_runs(
            action.messages, continue_final, lambda part: self._runs(spec, part, chars_per_token)
        )

    def _runs(self, spec: RequestSpec, span: Span, chars_per_token: float) -> list[TokenRun]:
        stream: tuple[Any, ...] = span.stream  # type: ignore[assignment]
        kind = stream[0]
        if kind == "output":
            return self._answers.runs(spec.index, stream[1], span.start, span.end)
        if kind == "system":
            return [self._system_runs[stream[1]]]
        if kind == "query":
            return [(("query", spec.index), 0, spec.prompt_tokens)]
        sized = (stream[1], chars_per_token)
        tokens = self._text_tokens.get(sized)
        if tokens is None:
            tokens = self._text_tokens[sized] = estimate_tokens(stream[1], chars_per_token)
        return [(stream, 0, tokens)]


@contextmanager
def _no_collections() -> Iterator[None]:
    """A run frees its objects by reference counting: it makes no reference cycles
    (``tests/unit/test_sim_memory.py`` holds every pinned scenario kind to that), so a
    collection during it only walks live objects and finds nothing. CPython still collects
    as the live objects grow — a queue building up, every request's records — and walks
    them again each time, even with young collections made rare: off for the run, 10⁴
    requests took 7 % less CPU and 10⁵ requests 11 % less (docs/design.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
