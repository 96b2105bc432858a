"""An in-process fake of an OpenAI-compatible vLLM server, for live-runner tests without vLLM.

It serves what ``live/`` uses — streaming chat and completions with running usage,
``/tokenize``, ``/detokenize``, ``/health``, ``/metrics``, ``/v1/models``,
``/reset_prefix_cache`` — on 127.0.0.1, in a thread of its own. Tokens are words: the prompt
is counted by splitting on whitespace, and a call of agent ``a`` streams the words ``a:k``,
numbered on from the agent's own words already in its prompt, so a test can read back which
tokens of which agent every prompt carried. Timing is set per agent (time to the first
token, then a fixed gap), and faults the real server cannot produce on demand (a failing
status, a rate limit's 429 with ``Retry-After``, a dropped or stalled stream, a malformed
chunk, an early stop) are injected per agent. Each request's JSON body is kept, so a test
can check which fields a client sent.

It lives under ``tests/`` because it imitates vLLM only as far as the runner relies on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

from live.proxy import free_port

MODEL = "fake-model"
CALL_HEADER = "X-Stairwise-Call"  # "<request> <call id>", sent by live/client.py
WORD = re.compile(r"(\S+):(\d+)")


@dataclass
class Timing:
    ttft_s: float = 0.05
    itl_s: float = 0.01


@dataclass
class Fault:
    """Injected into calls of ``agent`` (every agent if None), the first ``times`` of them."""

    kind: Literal["status", "rate_limited", "drop", "stall", "malformed", "short"]
    agent: str | None = None
    after_tokens: int = 0  # drop/stall/malformed/short: after streaming this many tokens
    status: int = 500
    times: int | None = None
    retry_after_s: float | None = None  # rate_limited: the Retry-After header (None: none)


@dataclass
class Received:
    """One generation request as the server saw it."""

    req: int
    call: str
    agent: str
    prompt: str
    max_tokens: int
    body: dict[str, Any]
    at: float  # when it arrived (time.perf_counter)
    ended: float | None = None  # when the server stopped serving it
    outcome: str = "running"  # finished | disconnected | failed


@dataclass
class FakeServer:
    timings: dict[str, Timing] = field(default_factory=dict)  # per agent; default Timing()
    faults: list[Fault] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    url: str = ""  # the OpenAI base URL, .../v1
    cache_resets: int = 0

    def included(self, call: Received) -> dict[str, int]:
        """Tokens of each agent's answer that the call's prompt carried (own ones included)."""
        counts: dict[str, int] = {}
        for agent, index in WORD.findall(call.prompt):
            counts[agent] = max(counts.get(agent, 0), int(index) + 1)
        return counts

    # --- the HTTP side -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/detokenize", self._detokenize)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/reset_prefix_cache", self._reset)
        self._generated = 0
        self._prompted = 0
        return app

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _reset(self, request: web.Request) -> web.Response:
        self.cache_resets += 1
        return web.Response(text="")

    async def _metrics(self, request: web.Request) -> web.Response:
        text = (
            "# TYPE vllm:prompt_tokens_total counter\n"
            f'vllm:prompt_tokens_total{{model_name="{MODEL}"}} {self._prompted}\n'
            "# TYPE vllm:generation_tokens_total counter\n"
            f'vllm:generation_tokens_total{{model_name="{MODEL}"}} {self._generated}\n'
        )
        return web.Response(text=text)

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"tokens": body["prompt"].split(), "count": 0})

    async def _detokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"prompt": " ".join(body["tokens"])})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        prompt = "\n".join(m["content"] for m in body["messages"])
        return await self._generate(request, body, prompt, chat=True)

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        return await self._generate(request, body, body["prompt"], chat=False)

    async def _generate(
        self, request: web.Request, body: dict[str, Any], prompt: str, chat: bool
    ) -> web.StreamResponse:
        started = time.perf_counter()
        req, _, call_id = request.headers.get(CALL_HEADER, "0 ?#1").partition(" ")
        agent = call_id.split("#")[0]
        call = Received(int(req), call_id, agent, prompt, int(body["max_tokens"]), body, started)
        self.received.append(call)
        fault = self._fault_for(agent)
        if fault is not None and fault.kind in ("status", "rate_limited"):
            call.outcome, call.ended = "failed", time.perf_counter()
            status, headers = fault.status, {}
            if fault.kind == "rate_limited":
                status = 429
                if fault.retry_after_s is not None:
                    headers["Retry-After"] = f"{fault.retry_after_s:g}"
            error = {"error": {"message": "injected"}}
            return web.json_response(error, status=status, headers=headers)
        timing = self.timings.get(agent, Timing())
        prompt_tokens = len(prompt.split())
        self._prompted += prompt_tokens
        own = [int(i) for a, i in WORD.findall(prompt) if a == agent]
        first = max(own) + 1 if own else 0
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            for k in range(call.max_tokens):
                if fault is not None and k == fault.after_tokens:
                    await self._misbehave(request, response, fault, call)
                    return response
                delay = started + timing.ttft_s + k * timing.itl_s - time.perf_counter()
                await asyncio.sleep(max(0.0, delay))
                text = f" {agent}:{first + k}"
                choice = {"index": 0, "finish_reason": None}
                choice |= {"delta": {"content": text}} if chat else {"text": text}
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": k + 1}
                await _send(response, {"choices": [choice], "usage": usage})
                self._generated += 1
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": call.max_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
            }
            await _send(response, {"choices": [], "usage": usage})
            await response.write(b"data: [DONE]\n\n")
            call.outcome = "finished"
        except (ConnectionResetError, asyncio.CancelledError):
            call.outcome = "disconnected"
            raise
        finally:
            call.ended = time.perf_counter()
        return response

    async def _misbehave(
        self, request: web.Request, response: web.StreamResponse, fault: Fault, call: Received
    ) -> None:
        call.outcome = "failed"
        if fault.kind == "stall":
            await asyncio.sleep(3600)
        elif fault.kind == "malformed":
            await response.write(b"data: {not json\n\n")
        elif fault.kind == "short":
            usage = {"prompt_tokens": 1, "completion_tokens": fault.after_tokens}
            await _send(response, {"choices": [], "usage": usage})
            await response.write(b"data: [DONE]\n\n")
        elif request.transport is not None:  # drop: the connection ends mid-stream
            request.transport.abort()

    def _fault_for(self, agent: str) -> Fault | None:
        for fault in self.faults:
            if fault.agent in (None, agent) and (fault.times is None or fault.times > 0):
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    payload = {"id": "fake", "object": "chunk", "created": 0, "model": MODEL, **chunk}
    await response.write(f"data: {json.dumps(payload)}\n\n".encode())


@contextlib.contextmanager
def fake_server(
    timings: dict[str, Timing] | None = None, faults: list[Fault] | None = None
) -> Iterator[FakeServer]:
    """A running fake server (stopped on exit); ``server.url`` is its OpenAI base URL."""
    server = FakeServer(timings or {}, faults or [])
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(server.app(), handle_signals=False, shutdown_timeout=0.2)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, name="fake-vllm", daemon=True)
    thread.start()
    ready.wait(10)
    server.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
