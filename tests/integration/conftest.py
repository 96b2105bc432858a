"""The real local vLLM server, started once per test session (and stopped if we started it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from live import local_server
from sim.scenario import Scenario, scenario_from_dict


@pytest.fixture(scope="session")
def vllm_url() -> Iterator[str]:
    already_running = local_server.running() is not None
    state = local_server.start(local_server.ServerSettings(), log=lambda message: None)
    # the tests' own live runs keep off an isolated engine's cores, as stairwise's runs do
    with local_server.on_client_cores():
        yield state.settings.url
    if not already_running:
        local_server.stop()


def live_scenario(url: str, topology: dict[str, Any], **extra: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "integration",
        "seed": 5,
        "servers": {
            "local": {
                "kind": "vllm",
                "profile": "vllm-cpu-smollm2-135m",
                "endpoint": url,
                "model": local_server.MODEL_NAME,
            }
        },
        "topology": topology,
        "workload": {"requests": 2, "prompt_tokens": {"dist": "fixed", "value": 48}},
        "live": {"cold_cache": True},
    }
    for key, value in extra.items():
        data[key] = value if not isinstance(value, dict) else {**data.get(key, {}), **value}
    return scenario_from_dict(data)
