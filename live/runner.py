"""The live runner: the same scenario as the simulator, executed against real servers.

It is an adapter of the shared driver (``sim.driver``): it keeps the run's clock and starts
and cancels real HTTP streams; the driver applies the protocol's decisions and records every
streamed piece of the answer in the trace the simulator also writes, flushed as it goes: a
crash or Ctrl-C loses nothing already recorded, and the summary covers what completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from live.client import CallFailed, Endpoint, Piece
from live.server_metrics import scrape
from live.texts import AnswerText, PromptMaker, render_completion_prompt, render_messages
from sim.dag import Dag, build_dag
from sim.driver import Call, Driver, ProgressCallback, plan_requests, random_streams
from sim.errors import ConfigError
from sim.metrics import summarize
from sim.profile import load_profile
from sim.protocol import Span, StartCall
from sim.scenario import Scenario, ServerBase, workload_digests
from sim.texts import estimate_tokens, template_runs
from sim.trace import Record, ServerMetricsRecord, TraceWriter, make_header
from sim.workload import RequestSpec


@dataclass
class LiveResult:
    records: list[Record]
    summary: dict[str, Any]
    interrupted: bool
    client: dict[str, float]  # the runner's own overhead


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
        profile_dir: Path | None = None,
        keep_text: bool = False,
    ) -> None:
        """``profile_dir``: where relative profile paths start (the scenario file's folder);
        an ``api`` server's profile gives the characters per token its texts are sized by.
        ``keep_text``: record the user prompts and every call's prompt and output text in
        the trace (never a key or a header)."""
        self.scenario = scenario
        self.profile_dir = profile_dir
        self.keep_text = keep_text
        # a workload of natural answers lets the model stop when it wants (max_tokens caps it)
        self.exact_lengths = scenario.workload.output_tokens != "natural"
        self.header_extra = header_extra or {}
        self.dag: Dag = build_dag(scenario)
        self.requests = requests or plan_requests(scenario, self.dag, random_streams(scenario.seed))
        self.trace_path = trace_path
        self._t0 = time.perf_counter()
        self.endpoints = {  # server -> one endpoint per replica, spread as simulated
            name: [
                Endpoint(name, server, url, scenario.live, self.clock)
                for url in _urls(name, server)
            ]
            for name, server in scenario.servers.items()
        }
        self._prompts: dict[int, str] = {}
        self._query_tokens: dict[int, int] = {}
        self._chars_per_token: dict[str, float] = {}
        self._answers: dict[tuple[int, str], AnswerText] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._crash: BaseException | None = None
        self._everything = asyncio.Event()  # set when every request ended (or on a crash)

    def clock(self) -> float:
        return time.perf_counter() - self._t0

    def _all_endpoints(self) -> list[Endpoint]:
        return [endpoint for replicas in self.endpoints.values() for endpoint in replicas]

    # --- the run ------------------------------------------------------------------------------

    async def run(self, progress: ProgressCallback | None = None) -> LiveResult:
        try:
            return await self._run(progress)
        finally:
            for endpoint in self._all_endpoints():
                await endpoint.close()

    async def _run(self, progress: ProgressCallback | None) -> LiveResult:
        for endpoint in self._all_endpoints():
            await endpoint.check()
        async with httpx.AsyncClient() as http:
            requests = await self._prompts_of(http)
            header = make_header(
                "live",
                self.scenario.model_dump(mode="json"),
                workload_digests(self.scenario.workload),
                **self.header_extra,
            )
            self.trace = TraceWriter(header, self.trace_path, flush=True)
            self.driver = Driver(
                self.scenario, self.dag, requests, self.trace, self, keep_text=self.keep_text
            )
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
                    await self._send_all(progress)
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
        if self._crash is not None:
            raise self._crash
        records = self.trace.records
        return LiveResult(records, summarize(records), interrupted, client)

    async def _prompts_of(self, http: httpx.AsyncClient) -> list[RequestSpec]:
        """Each request's user prompt, with its exact token length by the output agent's
        server (the requests as the driver sends them)."""
        server_name = self.dag.agent(self.dag.output).server
        server = self.scenario.servers[server_name]
        endpoint = self.endpoints[server_name][0]
        if server.kind == "vllm":
            maker = PromptMaker(endpoint.base_url, endpoint.model, self.scenario.seed)
        else:  # a hosted endpoint has no tokenizer route: its profile's characters per token
            chars = self.chars_per_token(server_name)
            maker = PromptMaker(None, endpoint.model, self.scenario.seed, chars)
        requests = []
        for spec in self.requests:
            if spec.prompt is not None:
                prompt, tokens = spec.prompt, await maker.count(http, spec.prompt)
            else:
                prompt, tokens = await maker.make(http, spec.index, spec.prompt_tokens)
            self._prompts[spec.index] = prompt
            self._query_tokens[spec.index] = tokens
            requests.append(replace(spec, prompt_tokens=tokens, prompt=prompt))
        return requests

    def chars_per_token(self, server: str) -> float:
        """How the server's model counts characters, from its profile (as the simulator)."""
        if server not in self._chars_per_token:
            profile = load_profile(self.scenario.servers[server].profile, self.profile_dir)
            self._chars_per_token[server] = profile.chars_per_token
        return self._chars_per_token[server]

    def _prompt_estimate(self, req: int, action: StartCall, text_of: Callable[[Span], str]) -> int:
        """A strict endpoint's prompt tokens as the simulator counts them (its ``tpm`` charge):
        upstream answers by their token counts, other texts by characters per token, every
        message in its template, then the answer's opening."""
        chars = self.chars_per_token(self.dag.agent(action.agent).server)

        def span_runs(span: Span) -> list[tuple[Hashable, int, int]]:
            kind = span.stream[0]  # type: ignore[index]
            if kind == "output":
                return [(span.stream, span.start, span.end)]
            if kind == "query":
                return [(span.stream, 0, self._query_tokens[req])]
            return [(span.stream, 0, estimate_tokens(text_of(span), chars))]

        runs = template_runs(action.messages, False, span_runs)  # strict: every message closed
        return sum(end - start for _, start, end in runs)

    async def _reset_prefix_caches(self, http: httpx.AsyncClient) -> None:
        for endpoint in self._all_endpoints():
            name = endpoint.name
            if self.scenario.servers[name].kind != "vllm":
                continue
            url = endpoint.base_url.removesuffix("/v1") + "/reset_prefix_cache"
            response = await http.post(url)
            if response.status_code != 200:
                raise ConfigError(
                    f"servers.{name}: cannot empty its prefix cache (HTTP "
                    f"{response.status_code}; the server needs VLLM_SERVER_DEV_MODE=1)"
                )

    async def _scrape(self, http: httpx.AsyncClient, when: str) -> None:
        for name, replicas in self.endpoints.items():
            if self.scenario.servers[name].kind != "vllm":
                continue  # a hosted endpoint is asked nothing beyond the OpenAI API
            for index, endpoint in enumerate(replicas):
                values = await scrape(http, endpoint.base_url)
                if values is None:
                    continue
                self.trace.write(
                    ServerMetricsRecord(
                        type="server_metrics",
                        server=name if len(replicas) == 1 else f"{name}[{index}]",
                        when="before" if when == "before" else "after",
                        t=self.clock(),
                        values=values,
                    )
                )

    async def _send_all(self, progress: ProgressCallback | None) -> None:
        self.driver.start(on_all_done=self._everything.set, progress=progress)
        await self._everything.wait()

    async def _cancel_everything(self) -> None:
        self.driver.interrupt()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the driver's adapter ------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(delay, self._guarded, callback)

    def start_call(self, call: Call) -> None:
        task = asyncio.create_task(self._call(call))
        call.handle = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel_call(self, call: Call) -> None:
        task: asyncio.Task[None] = call.handle
        if not task.done():
            task.cancel()

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run a driver step; an error there is a bug that ends the run (re-raised after the
        trace is closed), never a run that waits forever."""
        try:
            step()
        except Exception as exc:
            self._crash = exc
            self._everything.set()

    def _text_of(self, req: int) -> Callable[[Span], str]:
        def text_of(span: Span) -> str:
            kind = span.stream[0]  # type: ignore[index]
            if kind == "system":
                return self.dag.agent(span.stream[1]).system_prompt  # type: ignore[index]
            if kind == "query":
                return self._prompts[req]
            if kind == "output":
                answer = self._answers.get((req, span.stream[1]))  # type: ignore[index]
                return answer.slice(span.start, span.end) if answer else ""
            return str(span.stream[1])  # type: ignore[index]

        return text_of

    async def _call(self, call: Call) -> None:
        """Stream one call; whatever goes wrong is recorded as a failed call."""
        req, action = call.request.index, call.action
        agent = self.dag.agent(action.agent)
        endpoint = self.endpoints[call.server][call.replica]
        answer = self._answers.setdefault((req, action.agent), AnswerText())
        received = 0

        call.output_text = ""

        def on_piece(piece: Piece) -> None:
            nonlocal received
            call.output_text = (call.output_text or "") + piece.text
            answer.extend(piece.text, action.out_start + piece.tokens)
            self.driver.deltas(call, [piece.t], [piece.tokens - received])
            received = piece.tokens
            self.driver.tokens(call, piece.tokens)

        try:
            text_of = self._text_of(req)
            messages: list[dict[str, str]] | str
            if endpoint.server.api == "chat":
                messages = render_messages(action.messages, text_of)
            else:
                messages = render_completion_prompt(action.messages, text_of, action.continue_final)
            limited = endpoint.gate.limited
            estimate = self._prompt_estimate(req, action, text_of) if limited else 0
            call.prompt_text = messages
            await endpoint.stream(
                messages,
                action.tokens,
                action.continue_final,
                agent.temperature,
                call.usage,
                on_piece,
                tag=f"{req} {action.call_id}",
                priority=agent.priority,
                prompt_tokens=estimate,
                exact=self.exact_lengths,
            )
        except asyncio.CancelledError:
            return  # the driver cancelled it and has recorded why
        except CallFailed as failure:
            reason = str(failure)
        except Exception as exc:  # a bug or an unforeseen client error: one failed call
            reason = f"unexpected {type(exc).__name__}: {exc}".splitlines()[0]
        else:
            self._guarded(lambda: self.driver.finished(call))
            return
        self._guarded(lambda: self.driver.failed(call, reason))


def _urls(name: str, server: ServerBase) -> list[str]:
    """Each replica's base URL, or a one-line refusal."""
    urls = server.urls
    if not urls:
        raise ConfigError(f"servers.{name}.endpoint is required for live runs (or use --local)")
    if len(urls) != server.replicas:
        raise ConfigError(
            f"servers.{name}.replicas: {server.replicas} copies need one URL each for a live "
            f"run: list them in servers.{name}.endpoints"
        )
    return urls


@contextlib.contextmanager
def _ctrl_c_cancels_this_task() -> Iterator[None]:
    """Ctrl-C cancels the sending (the run then ends with what it recorded) whatever SIGINT
    state the process inherited: asyncio.run only installs its handler over Python's default
    one, and a process started with SIGINT blocked (Ray's process launcher blocks it, for
    one) never sees the signal at all — the run then finished as if not interrupted."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    try:
        loop.add_signal_handler(signal.SIGINT, task.cancel)
    except (NotImplementedError, RuntimeError, ValueError):  # not Unix, or not the main thread
        yield
        return
    blocked = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
