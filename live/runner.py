"""The asyncio driver: the same scenario as the simulator, executed against real servers.

It drives the shared sans-IO protocol (``sim.protocol``) with real HTTP streams and records
every streamed piece in the trace the simulator also writes, flushed as it goes: a crash or
Ctrl-C loses nothing already recorded, and the summary covers what completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from live.client import CallFailed, Endpoint, Piece, Usage
from live.server_metrics import scrape
from live.texts import AnswerText, PromptMaker, render_completion_prompt, render_messages
from sim.dag import Dag, build_dag
from sim.errors import ConfigError
from sim.metrics import summarize
from sim.protocol import (
    Action,
    CancelCall,
    FinishRequest,
    ReleaseUnit,
    RequestProtocol,
    Span,
    StartCall,
)
from sim.scenario import ClosedArrival, Scenario
from sim.trace import Record, TraceWriter, make_header
from sim.workload import RequestSpec, build_requests

ProgressCallback = Callable[[int, int], None]


@dataclass
class LiveResult:
    records: list[Record]
    summary: dict[str, Any]
    interrupted: bool
    client: dict[str, float]  # the runner's own overhead


@dataclass
class _Request:
    spec: RequestSpec
    prompt: str
    protocol: RequestProtocol
    done: asyncio.Event = field(default_factory=asyncio.Event)
    answers: dict[str, AnswerText] = field(default_factory=dict)
    tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)


class LoopLag:
    """How late the event loop wakes up: an upper bound on client-side timestamp error."""

    def __init__(self, period_s: float = 0.01) -> None:
        self.period_s = period_s
        self.lags: list[float] = []

    async def watch(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(self.period_s)
            self.lags.append(time.perf_counter() - before - self.period_s)

    def summary(self) -> dict[str, float]:
        if not self.lags:
            return {"loop_lag_p50_ms": 0.0, "loop_lag_p99_ms": 0.0, "loop_lag_max_ms": 0.0}
        p50, p99 = np.percentile(self.lags, [50, 99])
        return {
            "loop_lag_p50_ms": float(p50 * 1e3),
            "loop_lag_p99_ms": float(p99 * 1e3),
            "loop_lag_max_ms": float(max(self.lags) * 1e3),
        }


class LiveRunner:
    def __init__(
        self,
        scenario: Scenario,
        trace_path: str | Path | None = None,
        requests: list[RequestSpec] | None = None,
        header_extra: dict[str, Any] | None = None,
    ) -> None:
        self.scenario = scenario
        self.header_extra = header_extra or {}
        self.dag: Dag = build_dag(scenario)
        arrivals_rng, lengths_rng, _, _ = (
            np.random.default_rng(s) for s in np.random.SeedSequence(scenario.seed).spawn(4)
        )  # the same streams the simulator draws from: the same arrivals and lengths
        self.requests = requests or build_requests(
            scenario.workload, self.dag, arrivals_rng, lengths_rng
        )
        self.trace_path = trace_path
        self._t0 = time.perf_counter()
        self.endpoints = {
            name: Endpoint(name, server, scenario.live, self.clock)
            for name, server in scenario.servers.items()
        }
        self._states: dict[int, _Request] = {}
        self._finished = 0
        self._progress: ProgressCallback | None = None

    def clock(self) -> float:
        return time.perf_counter() - self._t0

    # --- the run ------------------------------------------------------------------------------

    async def run(self, progress: ProgressCallback | None = None) -> LiveResult:
        try:
            return await self._run(progress)
        finally:
            for endpoint in self.endpoints.values():
                await endpoint.close()

    async def _run(self, progress: ProgressCallback | None) -> LiveResult:
        self._progress = progress
        for endpoint in self.endpoints.values():
            await endpoint.check()
        async with httpx.AsyncClient() as http:
            prompts = await self._prompts(http)
            header = make_header("live", self.scenario.model_dump(mode="json"), **self.header_extra)
            self.trace = TraceWriter(header, self.trace_path, flush=True)
            if self.scenario.live.cold_cache:
                await self._reset_prefix_caches(http)
            self._t0 = time.perf_counter()
            await self._scrape(http, "before")
            lag = LoopLag()
            lag_task = asyncio.create_task(lag.watch())
            cpu0 = time.process_time()
            interrupted = False
            try:
                with _ctrl_c_cancels_this_task():
                    await self._send_all(prompts)
            except asyncio.CancelledError:
                interrupted = True
                await self._cancel_everything()
            finally:
                lag_task.cancel()
            wall = self.clock()
            client = {
                "cpu_s": time.process_time() - cpu0,
                "cpu_share": (time.process_time() - cpu0) / wall if wall > 0 else 0.0,
                **lag.summary(),
            }
            if not interrupted:
                await self._scrape(http, "after")
        self.trace.close(self.clock(), interrupted=interrupted, client=client)
        records = self.trace.records
        return LiveResult(records, summarize(records), interrupted, client)

    async def _prompts(self, http: httpx.AsyncClient) -> dict[int, tuple[str, int]]:
        """Each request's user prompt (exact token length via the output agent's server)."""
        server_name = self.dag.agent(self.dag.output).server
        server = self.scenario.servers[server_name]
        endpoint = self.endpoints[server_name]
        tokenizing = server.endpoint if server.kind == "vllm" else None
        maker = PromptMaker(tokenizing, endpoint.model, self.scenario.seed)
        prompts: dict[int, tuple[str, int]] = {}
        for spec in self.requests:
            if spec.prompt is not None:
                prompts[spec.index] = (spec.prompt, await maker.count(http, spec.prompt))
            else:
                prompts[spec.index] = await maker.make(http, spec.index, spec.prompt_tokens)
        return prompts

    async def _reset_prefix_caches(self, http: httpx.AsyncClient) -> None:
        for name, server in self.scenario.servers.items():
            if server.kind != "vllm" or server.endpoint is None:
                continue
            url = server.endpoint.rstrip("/").removesuffix("/v1") + "/reset_prefix_cache"
            response = await http.post(url)
            if response.status_code != 200:
                raise ConfigError(
                    f"servers.{name}: cannot empty its prefix cache (HTTP "
                    f"{response.status_code}; the server needs VLLM_SERVER_DEV_MODE=1)"
                )

    async def _scrape(self, http: httpx.AsyncClient, when: str) -> None:
        for name, server in self.scenario.servers.items():
            if server.endpoint is None:
                continue
            values = await scrape(http, server.endpoint)
            if values is not None:
                self.trace.write(
                    {
                        "type": "server_metrics",
                        "server": name,
                        "when": when,
                        "t": self.clock(),
                        "values": values,
                    }
                )

    async def _send_all(self, prompts: dict[int, tuple[str, int]]) -> None:
        arrival = self.scenario.workload.arrival
        if isinstance(arrival, ClosedArrival):
            queue = list(self.requests)
            users = [
                self._user(queue[u :: arrival.concurrency], prompts, arrival.think_time_s)
                for u in range(arrival.concurrency)
            ]
            await asyncio.gather(*users)
        else:
            await asyncio.gather(*(self._arrive(spec, prompts) for spec in self.requests))

    async def _arrive(self, spec: RequestSpec, prompts: dict[int, tuple[str, int]]) -> None:
        await asyncio.sleep(max(0.0, (spec.arrival_s or 0.0) - self.clock()))
        await self._request(spec, *prompts[spec.index])

    async def _user(
        self, specs: list[RequestSpec], prompts: dict[int, tuple[str, int]], think_s: float
    ) -> None:
        for spec in specs:
            await self._request(spec, *prompts[spec.index])
            if think_s:
                await asyncio.sleep(think_s)

    async def _request(self, spec: RequestSpec, prompt: str, prompt_tokens: int) -> None:
        state = _Request(spec, prompt, RequestProtocol(self.dag, spec.output_tokens))
        self._states[spec.index] = state
        self.trace.write(
            {
                "type": "request",
                "req": spec.index,
                "t": self.clock(),
                "prompt_tokens": prompt_tokens,
            }
        )
        self._apply(state, state.protocol.start())
        await state.done.wait()
        self._finished += 1
        if self._progress is not None:
            self._progress(self._finished, len(self.requests))

    async def _cancel_everything(self) -> None:
        tasks = [t for s in self._states.values() for t in s.tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- protocol actions ------------------------------------------------------------------------

    def _apply(self, state: _Request, actions: list[Action]) -> None:
        req = state.spec.index
        for action in actions:
            if isinstance(action, StartCall):
                task = asyncio.create_task(self._call(state, action))
                state.tasks[action.call_id] = task
            elif isinstance(action, ReleaseUnit):
                self.trace.write(
                    {
                        "type": "unit",
                        "req": req,
                        "agent": action.agent,
                        "unit": action.unit,
                        "tokens": action.tokens,
                        "t": self.clock(),
                    }
                )
            elif isinstance(action, CancelCall):
                running = state.tasks.get(action.call_id)
                if running is not None and not running.done():
                    running.cancel(msg=action.reason)
            elif isinstance(action, FinishRequest):
                self.trace.write(
                    {
                        "type": "request_end",
                        "req": req,
                        "t": self.clock(),
                        "ok": action.ok,
                        "reason": action.reason,
                    }
                )
                state.done.set()

    def _text_of(self, state: _Request) -> Callable[[Span], str]:
        def text_of(span: Span) -> str:
            kind = span.stream[0]  # type: ignore[index]
            if kind == "system":
                return self.dag.agent(span.stream[1]).system_prompt  # type: ignore[index]
            if kind == "query":
                return state.prompt
            if kind == "output":
                answer = state.answers.get(span.stream[1])  # type: ignore[index]
                return answer.slice(span.start, span.end) if answer else ""
            return str(span.stream[1])  # type: ignore[index]

        return text_of

    async def _call(self, state: _Request, action: StartCall) -> None:
        req = state.spec.index
        agent = self.dag.agent(action.agent)
        endpoint = self.endpoints[agent.server]
        answer = state.answers.setdefault(action.agent, AnswerText())
        text_of = self._text_of(state)
        messages: list[dict[str, str]] | str
        if endpoint.server.api == "chat":
            messages = render_messages(action.messages, text_of)
        else:
            messages = render_completion_prompt(action.messages, text_of, action.continue_final)
        self.trace.write(
            {
                "type": "call",
                "req": req,
                "call": action.call_id,
                "agent": action.agent,
                "round": action.round,
                "server": agent.server,
                "t": self.clock(),
                "tokens": action.tokens,
                "final": action.final,
                "prompt_tokens": None,
            }
        )
        usage = Usage()
        received = 0

        def on_piece(piece: Piece) -> None:
            nonlocal received
            answer.extend(piece.text, action.out_start + piece.tokens)
            self.trace.write(
                {
                    "type": "deltas",
                    "req": req,
                    "call": action.call_id,
                    "t": [piece.t],
                    "n": [piece.tokens - received],
                }
            )
            received = piece.tokens
            if action.watch:
                self._apply(state, state.protocol.tokens(action.call_id, piece.tokens))

        try:
            await endpoint.stream(
                messages, action.tokens, action.continue_final, agent.temperature, usage, on_piece
            )
        except asyncio.CancelledError:
            self._end_call(req, action, "cancelled", usage, reason="no longer needed")
            raise
        except CallFailed as failure:
            self._end_call(req, action, "failed", usage, reason=str(failure))
            self._apply(state, state.protocol.failed(action.call_id, str(failure)))
            return
        self._end_call(req, action, "ok", usage)
        self._apply(state, state.protocol.finished(action.call_id, usage.completion_tokens))

    def _end_call(
        self, req: int, action: StartCall, status: str, usage: Usage, reason: str = ""
    ) -> None:
        self.trace.write(
            {
                "type": "call_end",
                "req": req,
                "call": action.call_id,
                "t": self.clock(),
                "status": status,
                "prompt_tokens": usage.prompt_tokens,
                "cached_tokens": usage.cached_tokens,
                "completion_tokens": usage.completion_tokens,
                "queued_s": None,
                "reason": reason,
                "attempts": usage.attempts,
            }
        )


@contextlib.contextmanager
def _ctrl_c_cancels_this_task() -> Iterator[None]:
    """Ctrl-C cancels the sending (the run then ends with what it recorded) whatever SIGINT
    handler the process had: asyncio.run only installs its own over Python's default one."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    except (NotImplementedError, RuntimeError, ValueError):  # not Unix, or not the main thread
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
