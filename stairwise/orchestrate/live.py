"""Where a scenario runs live, and the one function every live run goes through."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

from live.endpoints import on_local_server, through_latency_proxies, with_cold_cache
from live.runner import LiveResult, LiveRunner
from sim.driver import ProgressCallback
from sim.scenario import Scenario


def prepared(
    scenario: Scenario,
    local: bool = False,
    threads: int = 2,
    cold_cache: bool = False,
    log: Callable[[str], None] = print,
) -> Scenario:
    """The scenario pointed at the embedded local vLLM (``local``; started if needed) and set
    to empty the servers' prefix caches first (``cold_cache``; always on the local server)."""
    if local:
        scenario = on_local_server(scenario, threads, log=log)
    if cold_cache or local:
        scenario = with_cold_cache(scenario)
    return scenario


def run_live(
    scenario: Scenario,
    trace: str | Path | None = None,
    inject_network: bool = False,
    progress: ProgressCallback | None = None,
) -> LiveResult:
    """Run a prepared scenario live once (``run``, ``validate`` and the profiling grid all
    come here: the place for anything to do before or after every live run).
    ``inject_network`` routes every server through a proxy that adds the scenario's network
    latency."""
    with contextlib.ExitStack() as proxies:
        if inject_network:
            scenario = through_latency_proxies(scenario, proxies)
        return asyncio.run(LiveRunner(scenario, trace_path=trace).run(progress=progress))
