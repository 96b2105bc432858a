"""How far a run's engine speed strays from its profile, from the probes kept with live runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from calibration.speed import MIN_RUNS, RunSpeed, read_speed_log, speed_spread, write_speed_log
from sim.errors import ConfigError
from stairwise.orchestrate.probe import run_speeds

PROFILE = "vllm-cpu-smollm2-135m-zen4"


def reading(prefill: float, decode: float, profile: str = PROFILE) -> dict:
    return {
        "server": "local",
        "profile": profile,
        "prefill_factor": prefill,
        "decode_factor": decode,
        "cells": [],
    }


def live_trace(path: Path, before: dict, after: dict | None, created: str) -> Path:
    """A kept live trace as validate leaves it: probes before (header) and after (a record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    entry: dict = {"profile": before["profile"], "before": before}
    records = [
        {
            "type": "header",
            "schema": 1,
            "source": "live",
            "created": created,
            "probe": {"local": entry},
        },
        {"type": "end", "t": 1.0, "interrupted": False},
    ]
    if after is not None:
        records.append({"type": "probe", "t": 1.0, "servers": {"local": {**entry, "after": after}}})
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def runs_at(*factors: float) -> list[RunSpeed]:
    return [RunSpeed(f"r{i}", "", "local", PROFILE, f, f) for i, f in enumerate(factors)]


def test_a_run_s_speed_is_the_geometric_mean_of_its_probes(tmp_path):
    live_trace(tmp_path / "a.live.jsonl", reading(1.0, 0.8), reading(1.21, 1.25), "2026-12-03T09")
    live_trace(tmp_path / "b.live.jsonl", reading(1.3, 1.1), None, "2026-12-03T08")
    live_trace(tmp_path / "c.live.jsonl", reading(2.0, 2.0, "another-profile"), None, "2026-12-03")
    (tmp_path / "a.sim.jsonl").write_text('{"type": "header", "source": "sim"}\n')
    (tmp_path / "notes.jsonl").write_text("not a trace at all\n")  # passed over, not an error
    live_trace(tmp_path / "run" / "trace.jsonl", reading(1.0, 1.0), None, "2026-12-03T10")
    runs = run_speeds([tmp_path], PROFILE)
    names = [Path(r.trace).name for r in runs]
    assert names == ["b.live.jsonl", "a.live.jsonl", "trace.jsonl"]  # oldest first
    assert (runs[0].prefill, runs[0].decode) == (1.3, 1.1)  # only a probe before
    assert runs[1].prefill == pytest.approx(1.1) and runs[1].decode == pytest.approx(1.0)


def test_the_spread_is_taken_around_the_profile_not_around_the_runs_mean():
    """Runs all 10 % slower than the profile stray 10 % from it, though they agree."""
    steady_but_slow = speed_spread(runs_at(*[1.1] * MIN_RUNS))
    sigma = math.log(1.1)
    assert steady_but_slow["decode"] == pytest.approx(math.sqrt(math.expm1(sigma**2)), abs=1e-4)
    on_profile = speed_spread(runs_at(*[1.0] * MIN_RUNS))
    assert on_profile == {"prefill": 0.0, "decode": 0.0}
    either_way = speed_spread(runs_at(1.2, 1 / 1.2, 1.2, 1 / 1.2, 1.2, 1 / 1.2))
    assert either_way["prefill"] > steady_but_slow["prefill"]


def test_too_few_runs_or_probes_of_several_profiles_say_why():
    with pytest.raises(ConfigError, match=f"at least {MIN_RUNS}"):
        speed_spread(runs_at(1.0, 1.1))
    mixed = [*runs_at(*[1.0] * MIN_RUNS), RunSpeed("x", "", "local", "other", 1.0, 1.0)]
    with pytest.raises(ConfigError, match="several profiles"):
        speed_spread(mixed)


def test_a_speed_log_round_trips_and_a_bad_one_is_named(tmp_path):
    runs = runs_at(1.0, 1.1, 0.9)
    write_speed_log(runs, tmp_path / "speed.jsonl")
    assert read_speed_log(tmp_path / "speed.jsonl") == runs
    (tmp_path / "bad.jsonl").write_text('{"trace": 1}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl: not a speed log"):
        read_speed_log(tmp_path / "bad.jsonl")


def test_a_fresh_local_profile_takes_the_shipped_spread_until_its_own_is_measured():
    from sim.profile import load_profile, parse_profile
    from stairwise.orchestrate.profiling import LOCAL_PROFILE, with_local_speed_spread
    from tests.helpers import vllm_profile

    fresh = with_local_speed_spread(parse_profile(vllm_profile(), "fresh"))
    shipped = load_profile(LOCAL_PROFILE)
    assert fresh.speed_rel_sd == shipped.speed_rel_sd and shipped.speed_rel_sd
    assert f"speed_rel_sd: {shipped.name}'s, assumed" in fresh.provenance.notes
    measured = parse_profile({**vllm_profile(), "speed_rel_sd": {"decode": 0.3}}, "own")
    assert with_local_speed_spread(measured).speed_rel_sd == {"decode": 0.3}
