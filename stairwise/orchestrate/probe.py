"""The engine probe run live: how fast each of a scenario's vLLM servers is right now.

``run`` and ``validate`` call :func:`probe_servers` right before and right after each live run
and keep both readings with the run (:mod:`calibration.probe` says what is measured and how the
factors are found). A probe that cannot reach its server is bad input like any unreachable
endpoint: one line, exit 2; the run's trace, already written, stays.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calibration.probe import ProbeReading, drift_pct, probe_scenarios, read_probe, rescaled
from calibration.speed import RunSpeed
from live import local_server
from sim.errors import ConfigError
from sim.profile import VllmProfile, load_profile, measured_here
from sim.scenario import Scenario, VllmServer
from sim.trace import Record, read_trace

Readings = dict[str, ProbeReading]  # server name -> reading


def probed_servers(
    scenario: Scenario, profile_dir: Path | None = None
) -> dict[str, tuple[VllmServer, VllmProfile]]:
    """The servers a probe can measure: vLLM servers with an endpoint and a vllm profile."""
    found = {}
    for name, server in scenario.servers.items():
        if isinstance(server, VllmServer) and server.endpoint is not None:
            profile = load_profile(server.profile, profile_dir)
            if isinstance(profile, VllmProfile):
                found[name] = (server, profile)
    return found


def probe_servers(
    scenario: Scenario,
    profile_dir: Path | None = None,
    when: str = "",
    log: Callable[[str], None] = print,
) -> Readings:
    """Probe every server of :func:`probed_servers` once (5-40 s each on the local CPU
    engine, by its hardware). Two scenario servers on one endpoint are probed once. A probe
    is a live run: it keeps off an isolated local engine's cores as every run does."""
    with local_server.on_client_cores():
        return _probe_servers(scenario, profile_dir, when, log)


def _probe_servers(
    scenario: Scenario,
    profile_dir: Path | None,
    when: str,
    log: Callable[[str], None],
) -> Readings:
    from live.runner import LiveRunner

    readings: Readings = {}
    by_endpoint: dict[str, ProbeReading] = {}
    for name, (server, profile) in probed_servers(scenario, profile_dir).items():
        assert server.endpoint is not None
        if server.endpoint in by_endpoint and by_endpoint[server.endpoint].profile == profile.name:
            readings[name] = by_endpoint[server.endpoint]
            continue
        entry = server.model_dump(mode="json") | {"replicas": 1}
        scenarios = probe_scenarios(
            entry, seed=secrets.randbelow(2**31), chars_per_token=profile.chars_per_token
        )
        log(f"probing {name} ({server.endpoint}) {when}".rstrip())
        try:
            runs = [asyncio.run(LiveRunner(s).run()) for s in scenarios]
        except ConfigError as exc:
            raise ConfigError(f"engine probe {when}: {exc}".replace("  ", " ")) from None
        if any(r.interrupted for r in runs):
            raise KeyboardInterrupt
        failed = sum(r.summary["failed_requests"] for r in runs)
        if failed:
            raise ConfigError(f"engine probe {when}: {failed} probe requests on {name} failed")
        reading = read_probe(name, profile, scenarios, [r.records for r in runs])
        readings[name] = by_endpoint[server.endpoint] = reading
    return readings


def profile_facts(scenario: Scenario, profile_dir: Path | None = None) -> dict[str, Any]:
    """Per server: the profile that simulates it and whether it was measured on this machine
    (a CPU engine's speed is its machine's; a profile from elsewhere is a guess here)."""
    facts = {}
    for name, server in scenario.servers.items():
        try:
            profile = load_profile(server.profile, profile_dir)
        except ConfigError:
            continue  # a live run does not need its profile
        facts[name] = {
            "profile": profile.name,
            "measured_here": measured_here(profile),
            "speed_rel_sd": getattr(profile, "speed_rel_sd", {}),
        }
    return facts


DRIFT_FLOOR_PCT = 10.0  # a speed change below this is within one probe's resolution here


def unreliable(before: ProbeReading, after: ProbeReading) -> bool:
    """The engine changed speed during the run by more than the probes can resolve."""
    return drift_pct(before, after) > max(DRIFT_FLOOR_PCT, before.noise_pct, after.noise_pct)


def probe_record(before: Readings, after: Readings | None = None) -> dict[str, Any]:
    """What a trace keeps of the probes: per server, before/after readings and their drift."""
    record: dict[str, Any] = {}
    for name, first in before.items():
        entry: dict[str, Any] = {"profile": first.profile, "before": first.to_dict()}
        if after is not None and name in after:
            entry["after"] = after[name].to_dict()
            entry["drift_pct"] = drift_pct(first, after[name])
            entry["unreliable"] = unreliable(first, after[name])
        record[name] = entry
    return record


def mean_factors(readings: list[Readings], server: str) -> tuple[float, float]:
    """The server's prefill and decode factors averaged over every probe that read it."""
    found = [r[server] for r in readings if server in r]
    return (
        sum(r.prefill_factor for r in found) / len(found),
        sum(r.decode_factor for r in found) / len(found),
    )


def rescaled_profiles(
    scenario: Scenario, readings: list[Readings], profile_dir: Path | None = None
) -> dict[str, VllmProfile]:
    """Each probed server's profile rescaled to the engine's speed during the runs: the mean
    of the factors of every probe around them (a run sits between its before and after).
    Factors read against another profile (a kept trace re-compared with ``--profile``) do
    not apply to this one: that server is left out."""
    return {
        name: rescaled(profile, *mean_factors(readings, name))
        for name, (_, profile) in probed_servers(scenario, profile_dir).items()
        if any(name in r for r in readings)
        and all(r[name].profile == profile.name for r in readings if name in r)
    }


def readings_of(records: list[Record]) -> tuple[Readings, Readings]:
    """The probes a live trace kept: before the run (its header) and after (a ``probe``
    record), so kept traces (``validate --live-from``) are rescaled like fresh ones."""
    header = records[0] if records and records[0].get("type") == "header" else {}
    before = {
        name: ProbeReading.from_dict(entry["before"])
        for name, entry in header.get("probe", {}).items()
    }
    after: Readings = {}
    for record in records:
        if record.get("type") == "probe":
            after |= {
                name: ProbeReading.from_dict(entry["after"])
                for name, entry in record["servers"].items()
                if "after" in entry
            }
    return before, after


def run_speeds(paths: list[Path], profile: str) -> list[RunSpeed]:
    """Each probed server's speed in every live trace under ``paths`` (trace files, or
    folders searched for them: ``validate``'s and ``run --trace``'s alike) whose probes read
    it against ``profile``, oldest first."""
    traces: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [*path.rglob("*.jsonl"), *path.rglob("*.jsonl.gz")]
            traces += sorted(p for p in found if _is_live_trace(p))
        elif path.is_file():
            traces.append(path)
        else:
            raise ConfigError(f"--from {path}: no such file or folder")
    speeds = []
    for trace in traces:
        records = read_trace(trace)
        before, after = readings_of(records)
        created = str(records[0].get("created", "")) if records else ""
        for server in sorted(before.keys() | after.keys()):
            probes = [r[server] for r in (before, after) if server in r]
            if all(p.profile == profile for p in probes):
                factors = [(p.prefill_factor, p.decode_factor) for p in probes]
                speeds.append(RunSpeed.of_probes(str(trace), created, server, profile, factors))
    return sorted(speeds, key=lambda s: (s.created, s.trace, s.server))


def _is_live_trace(path: Path) -> bool:
    """Whether a file in a searched folder starts as a live trace (anything else there, a
    simulated trace or another JSON-lines file, is passed over)."""
    try:
        with gzip.open(path, "rt") if path.suffix == ".gz" else path.open() as file:
            header = json.loads(file.readline())
    except (OSError, ValueError, EOFError):
        return False
    return (
        isinstance(header, dict)
        and header.get("type") == "header"
        and header.get("source") == "live"
    )
