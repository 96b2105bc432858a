"""Multi-stream decoding as a what-if: a request's agents as parallel token streams of one
sequence (``topology.mode: multistream``).

A multi-stream model decodes several token streams in one forward pass and lets each stream
read the others' tokens a step later — no re-prompt, no re-prefill. No engine serves one yet, so
the simulator alone models it, with its assumptions as named parameters
(:class:`sim.scenario.MultistreamSettings`):

* each engine step advances every active stream by one token, and the shared context grows by
  that many tokens in the KV cache;
* a step with K streams costs the engine's decode step plus ``K − 1`` query tokens at
  ``stream_token_s`` each (default: the profile's per-token prefill cost);
* a stream sees the other streams' tokens ``lag_steps`` steps after they were produced;
* a stream with inputs starts when its start rule holds: ``need`` (``n − redundancy``) inputs
  produced their first unit (or finished); it then reads every input as it grows;
* a stream stops when no consumer can read its tokens any more; the request ends with the
  output stream.

Since every stream advances one token per step, which streams run at which step follows from
the DAG and the answer lengths alone (:func:`plan_streams`, pure); the engine supplies only the
step times. :class:`MultistreamRequests` serves a request as one engine sequence on the
simulator's clock and writes the same trace records a protocol-driven request writes, so
``sim.metrics`` compares the modes on one scale.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from sim.dag import Dag, unit_boundaries
from sim.engines.base import CallResult, Engine, EngineCall
from sim.kv_cache import TokenRun
from sim.network import DeltaStream, Link
from sim.profile import ApiProfile, VllmProfile
from sim.scenario import MultistreamSettings, Scenario
from sim.texts import MESSAGE_CLOSE_TOKENS, MESSAGE_OPEN_TOKENS, estimate_tokens
from sim.trace import (
    CallEndRecord,
    CallRecord,
    CallStatus,
    DeltasRecord,
    RequestEndRecord,
    RequestRecord,
    TraceRecord,
    TraceWriter,
    UnitRecord,
)
from sim.workload import RequestSpec


@dataclass(frozen=True)
class StreamRun:
    """One agent's stream: the step producing its first token (0: the prefill step) and how
    many tokens it produces — fewer than its answer length when it is cut."""

    agent: str
    start: int
    tokens: int
    answer: int

    @property
    def last(self) -> int:
        return self.start + self.tokens - 1


@dataclass(frozen=True)
class StreamPlan:
    streams: tuple[StreamRun, ...]  # in the DAG's topological order
    output: str
    steps: int  # engine steps of the request, the prefill step included

    def stream(self, agent: str) -> StreamRun:
        return next(s for s in self.streams if s.agent == agent)

    def widths(self) -> np.ndarray:
        """Streams producing a token at each step."""
        change = np.zeros(self.steps + 1, dtype=int)
        for s in self.streams:
            if s.tokens > 0:
                change[s.start] += 1
                change[s.last + 1] -= 1
        return np.cumsum(change[:-1])


def plan_streams(dag: Dag, output_tokens: Mapping[str, int], lag_steps: int = 1) -> StreamPlan:
    """Which step each stream starts and stops at, for a request's answer lengths."""
    answers = {  # the protocol's rule: at least one token, at most max_tokens
        a.name: min(a.max_tokens, max(1, output_tokens.get(a.name, a.max_tokens)))
        for a in dag.agents
    }
    start: dict[str, int] = {}
    ready: dict[str, int] = {}  # the step producing the last token of its first unit
    for node in dag.agents:
        if node.inputs:
            start[node.name] = sorted(ready[i] for i in node.inputs)[node.need - 1] + lag_steps
        else:
            start[node.name] = 0
        ready[node.name] = start[node.name] + min(node.chunks[0], answers[node.name]) - 1
    end_step = start[dag.output] + answers[dag.output] - 1
    last: dict[str, int] = {}
    for node in reversed(dag.agents):
        consumers = dag.consumers(node.name)
        if node.name == dag.output or not consumers:
            readable = end_step  # the user's answer, or read by nobody: runs to the end
        else:  # tokens a running consumer still reads, ``lag_steps`` later
            reads = [last[c.name] - lag_steps for c in consumers if last[c.name] >= start[c.name]]
            readable = max(reads, default=-1)
        last[node.name] = min(start[node.name] + answers[node.name] - 1, readable)
    streams = tuple(
        StreamRun(
            agent=a.name,
            start=start[a.name],
            tokens=max(0, last[a.name] - start[a.name] + 1),
            answer=answers[a.name],
        )
        for a in dag.agents
    )
    return StreamPlan(streams, dag.output, end_step + 1)


@dataclass(frozen=True)
class StreamSchedule:
    """What an engine needs to run a multi-stream sequence as one batch entry: how many
    streams (query tokens, KV tokens) each step has, and what a stream beyond the first costs."""

    changes: tuple[int, ...]  # the steps where the width changes; the first is 0
    widths: tuple[int, ...]  # the width from each change on
    token_s: float  # seconds per step for each stream beyond the first

    @classmethod
    def of(cls, plan: StreamPlan, token_s: float) -> StreamSchedule:
        widths = plan.widths()
        changes = [0, *(int(i) for i in np.flatnonzero(np.diff(widths)) + 1)]
        return cls(tuple(changes), tuple(int(widths[c]) for c in changes), token_s)

    def width(self, step: int) -> int:
        return self.widths[bisect_right(self.changes, step) - 1]


class MultistreamRequests:
    """Serves each request as one multi-stream sequence on the simulator's engines and clock."""

    def __init__(
        self,
        env: simpy.Environment,
        scenario: Scenario,
        dag: Dag,
        profiles: Mapping[str, VllmProfile | ApiProfile],
        engines: Mapping[str, list[Engine]],
        links: Mapping[str, Link],
        trace: TraceWriter,
    ) -> None:
        self.env = env
        self.dag = dag
        self.server = dag.agent(dag.output).server  # the scenario put every agent there
        profile = profiles[self.server]
        assert isinstance(profile, VllmProfile), "the scenario allows vllm servers only"
        settings = getattr(scenario.topology, "multistream", None) or MultistreamSettings()
        self.lag_steps = settings.lag_steps
        self.token_s = (
            profile.step.prefill_token_s
            if settings.stream_token_s is None
            else settings.stream_token_s
        )
        self.engines = engines[self.server]
        self.link = links[self.server]
        self.trace = trace
        system_prompts = dict.fromkeys(a.system_prompt for a in dag.agents)  # once each
        self.system_runs: list[TokenRun] = [
            (("text", text), 0, estimate_tokens(text, profile.chars_per_token))
            for text in system_prompts
        ]

    def serve(self, spec: RequestSpec) -> Generator[simpy.Event, Any, None]:
        sent = self.env.now
        self.trace.write(
            RequestRecord(type="request", req=spec.index, t=sent, prompt_tokens=spec.prompt_tokens)
        )
        plan = plan_streams(self.dag, spec.output_tokens, self.lag_steps)
        schedule = StreamSchedule.of(plan, self.token_s)
        finished = self.env.event()
        reported: list[np.ndarray] = []

        def done(result: CallResult, times: np.ndarray) -> None:
            finished.succeed((result, times))

        call = EngineCall(
            key=(spec.index, "multistream"),
            prompt=self._prompt(spec),
            output=("output", spec.index, "multistream"),
            output_start=0,
            tokens=plan.steps,
            watch=schedule.changes[1:],
            progress=reported.append,
            done=done,
            streams=schedule,
        )
        engine = min(self.engines, key=lambda e: e.load())
        yield self.env.timeout(self.link.delay())
        engine.submit(call)
        result, times = yield finished
        step_times = np.concatenate([*reported, times])
        yield from self._record(spec, sent, plan, result, step_times, call.prompt_tokens)

    def _prompt(self, spec: RequestSpec) -> list[TokenRun]:
        """Every agent's system prompt and the query, prefilled once for all streams."""
        return [
            (("open", "system"), 0, MESSAGE_OPEN_TOKENS),
            *self.system_runs,
            (("close",), 0, MESSAGE_CLOSE_TOKENS),
            (("open", "user"), 0, MESSAGE_OPEN_TOKENS),
            (("query", spec.index), 0, spec.prompt_tokens),
            (("close",), 0, MESSAGE_CLOSE_TOKENS),
            (("open", "assistant"), 0, MESSAGE_OPEN_TOKENS),
        ]

    def _record(
        self,
        spec: RequestSpec,
        sent: float,
        plan: StreamPlan,
        result: CallResult,
        step_times: np.ndarray,
        prompt_tokens: int,
    ) -> Generator[simpy.Event, Any, None]:
        """The request's trace records, as a protocol-driven request writes them: one call
        per stream (the shared prompt counted on the first, so it is paid once) from its first
        step to the sequence's end (its KV is held until then; a cut stream is ``cancelled``),
        unit releases, the answer's deltas through the network, and the request's end."""
        records: list[TraceRecord] = []
        req, ok = spec.index, result.status == "ok"
        answer_end = sent
        running = [s for s in plan.streams if s.tokens > 0] if ok else [plan.streams[0]]
        for index, stream in enumerate(running):
            call_id, final = f"{stream.agent}#1", stream.agent == plan.output
            first = index == 0
            began = sent if stream.start == 0 else float(step_times[stream.start - 1])
            produced = step_times[stream.start : stream.last + 1] if ok else np.empty(0)
            # every stream's tokens stay in the shared context until the sequence ends
            ended = float(step_times[-1]) if len(step_times) else self.env.now
            records.append(
                CallRecord(
                    type="call",
                    req=req,
                    call=call_id,
                    agent=stream.agent,
                    round=1,
                    server=self.server,
                    t=began,
                    tokens=stream.answer,
                    final=final,
                )
            )
            node = self.dag.agent(stream.agent)
            for unit, end in enumerate(unit_boundaries(node.chunks, len(produced)), 1):
                records.append(
                    UnitRecord(
                        type="unit",
                        req=req,
                        agent=stream.agent,
                        unit=unit,
                        tokens=end,
                        t=float(produced[end - 1]),
                    )
                )
            if final and len(produced):
                deltas = DeltaStream(self.link, keep=True)
                answer_end = ended = deltas.add(produced)
                arrivals = deltas.all_arrivals()
                records.append(
                    DeltasRecord(
                        type="deltas", req=req, call=call_id, t=arrivals, n=[1] * len(arrivals)
                    )
                )
            status: CallStatus = "ok" if stream.tokens == stream.answer else "cancelled"
            if not ok:
                status = "failed"
            records.append(
                CallEndRecord(
                    type="call_end",
                    req=req,
                    call=call_id,
                    t=ended,
                    status=status,
                    prompt_tokens=prompt_tokens if first else 0,
                    cached_tokens=result.cached_tokens if first else 0,
                    completion_tokens=stream.tokens if ok else 0,
                    queued_s=result.queued_s if first else 0.0,
                    reason=_reason(status, stream, plan, result),
                )
            )
        answer_end = max(answer_end, self.env.now)
        yield self.env.timeout(answer_end - self.env.now)
        for record in records:
            self.trace.write(record)
        self.trace.write(
            RequestEndRecord(
                type="request_end",
                req=req,
                t=self.env.now,
                ok=ok,
                reason="" if ok else f"{plan.output}: {result.status}",
            )
        )


def _reason(status: str, stream: StreamRun, plan: StreamPlan, result: CallResult) -> str:
    if status == "failed":
        return result.status
    if status == "cancelled":
        return "request finished" if stream.last == plan.steps - 1 else "no longer needed"
    return ""
