"""Where a scenario's servers are reached: the embedded local vLLM, or through latency proxies."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from sim.scenario import Scenario, VllmServer


def on_local_server(
    scenario: Scenario,
    threads: int | None = None,
    port: int = 8011,
    log: Callable[[str], None] = print,
    isolate: bool | None = None,
) -> Scenario:
    """Every vLLM server of the scenario pointed at the embedded local server (started if
    needed, scheduling by priority if a server asks; it keeps running for the next run until
    `stairwise server stop`)."""
    from live import local_server

    was_running = local_server.running() is not None
    settings = local_server.settings_for(
        port=port,
        threads=threads,
        isolate=isolate,
        scheduling_policy=local_scheduling_policy(scenario),
    )
    state = local_server.start(settings, log=log)
    if not was_running:
        log("the local vLLM server keeps running for the next run: `stairwise server stop` ends it")
    servers: dict[str, Any] = {}
    for name, server in scenario.servers.items():
        if isinstance(server, VllmServer):
            server = server.model_copy(  # one server: a run with replicas is refused
                update={
                    "endpoint": state.settings.url,
                    "endpoints": None,
                    "model": local_server.MODEL_NAME,
                }
            )
        servers[name] = server
    return scenario.model_copy(update={"servers": servers})


def local_scheduling_policy(scenario: Scenario) -> str:
    """priority if any vLLM server of the scenario schedules by priority: with every request
    at priority 0 a priority server serves first come, first served, so one server fits all."""
    policies = {s.scheduling_policy for s in scenario.servers.values() if isinstance(s, VllmServer)}
    return "priority" if "priority" in policies else "fcfs"


def through_latency_proxies(scenario: Scenario, stack: contextlib.ExitStack) -> Scenario:
    """One latency proxy per server replica (closed with ``stack``), the scenario pointed at
    them."""
    from live.proxy import ProxyConfig, free_port, start_proxy

    servers: dict[str, Any] = {}
    for index, (name, server) in enumerate(scenario.servers.items()):
        proxied = []
        for replica, url in enumerate(server.urls):
            config = ProxyConfig(
                upstream=url.rstrip("/").removesuffix("/v1"),
                latency=server.network or scenario.network.latency,
                seed=scenario.seed + index + 1000 * replica,
            )
            proxied.append(stack.enter_context(start_proxy(config, free_port())))
        if server.endpoints is not None:
            servers[name] = server.model_copy(update={"endpoints": proxied})
        elif proxied:
            servers[name] = server.model_copy(update={"endpoint": proxied[0]})
        else:
            servers[name] = server
    return scenario.model_copy(update={"servers": servers})


def with_cold_cache(scenario: Scenario) -> Scenario:
    """The live runner empties the servers' prefix caches before the run."""
    return scenario.model_copy(
        update={"live": scenario.live.model_copy(update={"cold_cache": True})}
    )
