"""Profiling a live vLLM for calibration: a designed grid of single-agent runs, one trace each."""

from __future__ import annotations

import asyncio
import os
import platform
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from calibration.profiling import ProfilingGrid
from sim.driver import ProgressCallback
from sim.errors import ConfigError
from sim.profile import Profile, VllmProfile, cpu_description, load_profile
from sim.scenario import scenario_from_dict
from stairwise.orchestrate.live import prepared, run_live

DEFAULT_GRID = ProfilingGrid(
    prompt_lengths=(32, 128, 512, 1024, 1536),
    concurrencies=(1, 4, 16),
    cached_prefixes=(0, 512),
    output_tokens=128,
    rounds=3,
)


def profile_live(
    endpoint: str | None,
    model: str | None,
    local: bool,
    grid: ProfilingGrid,
    trace_dir: Path,
    progress: ProgressCallback | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[Path], float]:
    """Run the grid on ``endpoint`` (or the embedded local vLLM), one trace per cell in
    ``trace_dir`` (cells finished by an earlier, interrupted profiling are kept); also
    measure the tokenizer's characters per token on plain English."""
    from calibration.profiling import cell_scenario, profiling_plan
    from live import local_server

    server: dict[str, Any] = {"kind": "vllm", "profile": "vllm-cpu-smollm2-135m"}
    if local:
        state = local_server.start(log=log)
        server |= {"endpoint": state.settings.url, "model": local_server.MODEL_NAME}
    else:
        server |= {"endpoint": endpoint, "model": model}
    chars_per_token = _measure_chars_per_token(server["endpoint"], server["model"])
    cells = profiling_plan(
        grid.prompt_lengths,
        grid.concurrencies,
        grid.cached_prefixes,
        grid.output_tokens,
        grid.rounds,
    )
    trace_dir.mkdir(parents=True, exist_ok=True)
    traces = []
    for done, cell in enumerate(cells):
        if progress is not None:
            progress(done, len(cells))
        trace = trace_dir / f"{cell.name}.jsonl"
        traces.append(trace)
        if trace.exists() and '"type":"end"' in trace.read_text()[-300:]:
            continue
        scenario = scenario_from_dict(cell_scenario(cell, server, chars_per_token), cell.name)
        if run_live(prepared(scenario, cold_cache=True), trace).interrupted:
            raise KeyboardInterrupt
    return traces, chars_per_token


def on_this_machine(endpoint: str | None) -> bool:
    """An endpoint served by this machine: its speed is this machine's."""
    from urllib.parse import urlparse

    return endpoint is not None and urlparse(endpoint).hostname in ("127.0.0.1", "localhost", "::1")


def local_facts() -> dict[str, Any]:
    """What the embedded server is: the provenance and engine facts of its profile."""
    from live import local_server

    state = local_server.running()
    dtype = state.settings.dtype if state is not None else local_server.default_dtype()
    return {
        "model": f"SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to {dtype})",
        "hardware": f"{os.cpu_count()} {platform.machine()} cores ({cpu_description()}), no GPU",
        "engine": "vllm-cpu",
        "engine_version": version("vllm-cpu"),
        "block_size": 128,  # vLLM's CPU backend
        "kv_capacity_tokens": 93_184,  # what the server reports for VLLM_CPU_KVCACHE_SPACE=2
        # one API-server process prepares one request at a time: a burst reaches the engine
        # spread out (the shipped local profiles are fitted so, calibration/shipped.py)
        "request_overhead_serial": True,
    }


LOCAL_PROFILE = "vllm-cpu-smollm2-135m"  # the shipped local profile (this machine's variant)


def with_local_speed_spread(profile: Profile) -> Profile:
    """A fresh ``calibrate --local`` profile measured one twenty-minute window: it takes the
    shipped local profile's run-to-run speed spread (said in its notes), so its intervals
    still hold the hours that follow, until ``stairwise speed-spread`` measures this
    machine's own from kept runs."""
    shipped = load_profile(LOCAL_PROFILE)
    if not isinstance(profile, VllmProfile) or not isinstance(shipped, VllmProfile):
        return profile
    if profile.speed_rel_sd or not shipped.speed_rel_sd:
        return profile
    note = (
        f"speed_rel_sd: {shipped.name}'s, assumed (`stairwise speed-spread` measures this "
        "machine's from kept live runs)"
    )
    provenance = profile.provenance.model_copy(
        update={"notes": f"{profile.provenance.notes}; {note}".lstrip("; ")}
    )
    update = {"speed_rel_sd": shipped.speed_rel_sd, "provenance": provenance}
    return profile.model_copy(update=update)


def _measure_chars_per_token(endpoint: str, model: str | None) -> float:
    from live.texts import measure_chars_per_token

    try:
        return asyncio.run(measure_chars_per_token(endpoint, model))
    except (httpx.HTTPError, KeyError, ValueError):
        message = f"{endpoint}: cannot count tokens (a vLLM server has /tokenize)"
        raise ConfigError(message) from None
