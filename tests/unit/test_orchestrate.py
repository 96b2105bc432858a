"""Validation on the fake streaming server: kept live runs, failed runs, output paths."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from sim.errors import ConfigError
from sim.scenario import Scenario, scenario_from_dict
from stairwise import api
from tests.fake_server import Fault, Timing, fake_server
from tests.helpers import api_profile, write_profile


def solo(
    tmp_path: Path, url: str, prompt_tokens: int = 12, prompts: Path | None = None
) -> Scenario:
    profile = write_profile(tmp_path, api_profile(ttft_s=0.03, itl_s=0.01))
    workload = {"requests": 3, "prompt_tokens": {"dist": "fixed", "value": prompt_tokens}}
    if prompts is not None:
        workload = {"requests": 3, "prompts": str(prompts)}
    return scenario_from_dict(
        {
            "name": "solo",
            "servers": {"api": {"kind": "api", "profile": profile, "endpoint": url}},
            "topology": {"kind": "graph", "unit": {"tokens": 6}, "agents": {"a": {"steps": 2}}},
            "workload": workload,
        }
    )


def test_a_validation_runs_live_simulated_and_replayed_and_reuses_only_its_own_runs(tmp_path):
    out, report = tmp_path / "out", tmp_path / "pages" / "solo.html"
    with fake_server(timings={"a": Timing(0.03, 0.01)}) as server:
        scenario = solo(tmp_path, server.url)
        (first,) = api.validate_suite([scenario], out=out, local=False, report=report)
        assert report.read_bytes() == (out / "solo.html").read_bytes()
        calls_made = len(server.received)
        (again,) = api.validate_suite([scenario], out=out, live_from=[out], local=False)
        assert len(server.received) == calls_made  # read back, not run again
        other = solo(tmp_path, server.url, prompt_tokens=13)
        with pytest.raises(ConfigError, match=r"ran another scenario than solo"):
            api.validate_suite([other], out=tmp_path / "o2", live_from=[out], local=False)
    assert first.summary["live"]["requests"] == again.summary["live"]["requests"] == 3
    assert first.summary["live"] == again.summary["live"]
    assert first.worst_error() < math.inf


def test_kept_runs_know_their_prompt_file_by_its_contents_not_its_path(tmp_path):
    """A moved folder still finds its kept runs; an edited prompt file no longer does."""
    here = tmp_path / "here"
    here.mkdir()
    prompts = here / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("Hi.", "Why?")))
    out = here / "out"
    with fake_server(timings={"a": Timing(0.03, 0.01)}) as server:
        api.validate_suite([solo(here, server.url, prompts=prompts)], out=out, local=False)
        calls_made = len(server.received)
        moved = shutil.copytree(here, tmp_path / "moved")
        shutil.rmtree(here)
        scenario = solo(moved, server.url, prompts=moved / "prompts.jsonl")
        api.validate_suite([scenario], out=moved / "o2", live_from=[moved / "out"], local=False)
        assert len(server.received) == calls_made  # read back, not run again
        (moved / "prompts.jsonl").write_text(json.dumps({"prompt": "Something else?"}) + "\n")
        with pytest.raises(ConfigError, match=r"ran another scenario than solo"):
            api.validate_suite([scenario], out=moved / "o3", live_from=[moved / "out"], local=False)


def test_a_validation_whose_live_requests_all_failed_is_no_pass(tmp_path):
    with fake_server(faults=[Fault("status")]) as server:
        (result,) = api.validate_suite([solo(tmp_path, server.url)], out=tmp_path, local=False)
    assert result.summary["live"]["requests"] == 0
    assert result.worst_error() == math.inf


def test_output_paths_are_checked_before_any_run(tmp_path):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    unreachable = "http://127.0.0.1:9/v1"  # never contacted: the checks come first
    scenario = solo(tmp_path, unreachable)
    with pytest.raises(ConfigError, match=r"^--trace .*a-folder: is a folder"):
        api.run(scenario, trace=folder)
    with pytest.raises(ConfigError, match=r"^--report .*: .*a-file is a file, not a folder"):
        api.validate_suite([scenario], out=tmp_path, local=False, report=a_file / "r.html")
    with pytest.raises(ConfigError, match=r"^--out .*a-file: .*is a file, not a folder"):
        api.validate(scenario, out=a_file, local=False)
    with pytest.raises(ConfigError, match=r"^--output .*a-file is a file, not a folder"):
        api.calibrate(["never-read.json"], a_file / "profile.json")  # before the fit
