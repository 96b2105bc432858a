"""A local HTTP proxy in front of a real server: network latency and faults on demand.

Every request is delayed by one latency draw before it is forwarded, and every streamed
server-sent event by its own draw (in order, as TCP would deliver them) — the simulator's
network model, made real so it can be validated. Faults that a healthy server never
produces (HTTP 500s, streams cut or stalled mid-way, connections reset) are injected for
requests whose body contains a marker. Run it as a process:
``python -m live.proxy CONFIG_JSON PORT`` (see :func:`start_proxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Literal

import httpx
import numpy as np
from aiohttp import ClientSession, ClientTimeout, StreamReader, web
from pydantic import BaseModel, ConfigDict, Field

from sim.distributions import LatencyDist


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["status", "drop", "stall", "reset"]
    match: str | None = Field(None, description="applies to requests whose body contains this")
    times: int | None = Field(None, ge=1, description="how many matching requests; None: all")
    status: int = Field(500, description="kind=status: the HTTP status returned")
    after_events: int = Field(0, ge=0, description="drop/stall: events passed through first")


class ProxyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upstream: str  # base URL of the real server, e.g. http://127.0.0.1:8011
    latency: LatencyDist | None = None
    seed: int = 0
    faults: list[Fault] = Field(default_factory=list)


class Proxy:
    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.remaining = [f.times for f in config.faults]

    def _delay(self) -> float:
        latency = self.config.latency
        return 0.0 if latency is None else float(latency.sample_s(self.rng, 1)[0])

    def _fault_for(self, body: bytes) -> Fault | None:
        for index, fault in enumerate(self.config.faults):
            if fault.match is not None and fault.match.encode() not in body:
                continue
            if self.remaining[index] is not None:
                if self.remaining[index] == 0:
                    continue
                self.remaining[index] -= 1  # type: ignore[operator]
            return fault
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._fault_for(body)
        await asyncio.sleep(self._delay())
        if fault is not None and fault.kind == "reset":
            if request.transport is not None:
                request.transport.close()
            raise ConnectionResetError("injected reset")
        if fault is not None and fault.kind == "status":
            return web.json_response(
                {"error": {"message": "injected fault", "code": fault.status}},
                status=fault.status,
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        url = self.config.upstream.rstrip("/") + request.path_qs
        async with (
            ClientSession(timeout=ClientTimeout(total=None)) as session,
            session.request(request.method, url, data=body, headers=headers) as upstream,
        ):
            response = web.StreamResponse(status=upstream.status)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                    response.headers[key] = value
            await response.prepare(request)
            await self._relay(upstream.content, response, fault)
            return response

    async def _relay(
        self, source: StreamReader, response: web.StreamResponse, fault: Fault | None
    ) -> None:
        """Forward events one by one, each at max(previous, received + its own delay).

        Reading runs ahead of writing, so a delay postpones an event without holding back
        the reception of the next one (as a network would).
        """
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def receive() -> None:
            last_due = 0.0
            async for event in _events(source):
                last_due = max(last_due, time.monotonic() + self._delay())
                await queue.put((last_due, event))
            await queue.put(None)

        receiver = asyncio.create_task(receive())
        sent = 0
        try:
            while (item := await queue.get()) is not None:
                due, event = item
                if fault is not None and sent >= fault.after_events:
                    if fault.kind == "drop":
                        response.force_close()
                        raise ConnectionResetError("injected drop")
                    await asyncio.sleep(3600)  # stall: hold the connection, send nothing
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await response.write(event)
                sent += 1
        finally:
            receiver.cancel()
        await response.write_eof()


HOP_HEADERS = {"host", "connection", "keep-alive", "transfer-encoding", "content-length"}


async def _events(source: StreamReader) -> AsyncIterator[bytes]:
    """Split a byte stream into server-sent events (blank-line separated)."""
    buffer = b""
    async for data in source.iter_any():
        buffer += data
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            yield event + b"\n\n"
    if buffer:
        yield buffer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(config: ProxyConfig, port: int) -> None:
    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_route("*", "/{tail:.*}", Proxy(config).handle)
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, handle_signals=True, shutdown_timeout=1.0
    )


@contextlib.contextmanager
def start_proxy(config: ProxyConfig, port: int) -> Iterator[str]:
    """Run the proxy in its own process (its delays then cost the client no CPU time);
    yields its base URL (with /v1)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    process = subprocess.Popen(
        [sys.executable, "-m", "live.proxy", config.model_dump_json(), str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 30
        while True:
            try:
                httpx.get(url + "/health", timeout=1.0)
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.time() > deadline:
                    error = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"proxy did not start: {error[-300:]}") from None
                time.sleep(0.1)
        yield url + "/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    serve(ProxyConfig.model_validate(json.loads(sys.argv[1])), int(sys.argv[2]))
