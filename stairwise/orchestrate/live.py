"""Where a scenario runs live, and the one function every live run goes through."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from live import local_server
from live.endpoints import on_local_server, through_latency_proxies, with_cold_cache
from live.runner import LiveResult, LiveRunner
from sim.driver import ProgressCallback
from sim.errors import ConfigError
from sim.scenario import Scenario
from sim.trace import ProbeRecord, append_record


def prepared(
    scenario: Scenario,
    local: bool = False,
    threads: int | None = None,
    cold_cache: bool = False,
    log: Callable[[str], None] = print,
    isolate: bool | None = None,
) -> Scenario:
    """The scenario pointed at the embedded local vLLM (``local``; started if needed) and set
    to empty the servers' prefix caches first (``cold_cache``; always on the local server)."""
    if local:
        scenario = on_local_server(scenario, threads, log=log, isolate=isolate)
    if cold_cache or local:
        scenario = with_cold_cache(scenario)
    return scenario


def run_live(
    scenario: Scenario,
    trace: str | Path | None = None,
    inject_network: bool = False,
    progress: ProgressCallback | None = None,
    probe: bool = False,
    profile_dir: Path | None = None,
    log: Callable[[str], None] = print,
    keep_text: bool = False,
) -> LiveResult:
    """Run a prepared scenario live once (``run``, ``validate`` and the profiling grid all
    come here: the place for anything to do before or after every live run).
    ``inject_network`` routes every server through a proxy that adds the scenario's network
    latency. ``probe``: measure each vLLM server's speed right before and right after the run
    (:mod:`stairwise.orchestrate.probe`), kept in the trace's header and a final ``probe`` record.
    Every trace says which profile each server is simulated on and whether it was measured
    on this machine. ``keep_text``: the trace keeps the user prompts and every call's prompt
    and text (for ``stairwise compare``). An isolated local engine keeps its cores: the run
    stays on the others, and the trace records how the local server ran."""
    with local_server.on_client_cores():
        return _run_live(
            scenario, trace, inject_network, progress, probe, profile_dir, log, keep_text
        )


def _run_live(
    scenario: Scenario,
    trace: str | Path | None,
    inject_network: bool,
    progress: ProgressCallback | None,
    probe: bool,
    profile_dir: Path | None,
    log: Callable[[str], None],
    keep_text: bool,
) -> LiveResult:
    from stairwise.orchestrate.probe import probe_record, probe_servers, profile_facts

    extra: dict[str, Any] = {"profiles": profile_facts(scenario, profile_dir)}
    state = local_server.running()
    if state is not None and any(state.settings.url in s.urls for s in scenario.servers.values()):
        extra["local_server"] = {
            "threads": state.settings.threads,
            "isolate": state.settings.isolate,
            "dtype": state.settings.dtype,
        }
    before = probe_servers(scenario, profile_dir, "before", log) if probe else {}
    if before:
        extra["probe"] = probe_record(before)
    with contextlib.ExitStack() as proxies:
        if inject_network:
            scenario = through_latency_proxies(scenario, proxies)
        runner = LiveRunner(
            scenario,
            trace_path=trace,
            header_extra=extra,
            profile_dir=profile_dir,
            keep_text=keep_text,
        )
        result = asyncio.run(runner.run(progress=progress))
    if before and not result.interrupted:
        try:
            after = probe_servers(scenario, profile_dir, "after", log)
        except ConfigError as exc:
            kept = f" (the run's trace is kept: {trace})" if trace is not None else ""
            raise ConfigError(f"{exc}{kept}") from None
        record: ProbeRecord = {
            "type": "probe",
            "t": result.records[-1]["t"],
            "servers": probe_record(before, after),
        }
        if trace is not None:
            append_record(trace, record)
        result.records.append(dict(record))
    return result
