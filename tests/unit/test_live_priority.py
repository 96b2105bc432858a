"""The live client sends a request priority to vLLM servers that schedule by priority only."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from live.client import Endpoint
from sim.scenario import ApiServer, LiveSettings, VllmServer


class Sent(Exception):
    """Stops the call once the request body is known."""


def body_sent(server: Any, priority: int) -> dict[str, Any]:
    endpoint = Endpoint("s", server, URL, LiveSettings(retries=0), clock=lambda: 0.0)
    captured: dict[str, Any] = {}

    async def create(**kwargs: Any) -> Any:
        captured.update(kwargs["extra_body"] or {})  # a strict endpoint gets none
        raise Sent

    endpoint.client.chat.completions.create = create  # type: ignore[method-assign]

    async def call() -> None:
        pieces = endpoint._pieces([{"role": "user", "content": "hi"}], 4, False, 0.0, "", priority)
        async for _ in pieces:
            pass

    with pytest.raises(Sent):
        asyncio.run(call())
    return captured


URL = "http://127.0.0.1:1/v1"


def test_a_priority_server_gets_the_priority():
    server = VllmServer(profile="p", endpoint=URL, scheduling_policy="priority")
    assert body_sent(server, -1)["priority"] == -1


@pytest.mark.parametrize(
    "server",
    [VllmServer(profile="p", endpoint=URL), ApiServer(kind="api", profile="p", endpoint=URL)],
)
def test_other_servers_never_see_a_priority_field(server):
    assert "priority" not in body_sent(server, 0)
