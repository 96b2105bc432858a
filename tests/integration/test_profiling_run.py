"""`stairwise calibrate --local` on a small grid: the designed profiling run, for real."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.live


def test_a_small_profiling_run_fits_a_profile_of_this_machine(vllm_url, tmp_path):
    output = tmp_path / "cpu.json"
    command = [
        sys.executable,
        "-m",
        "stairwise.cli",
        "calibrate",
        "--local",
        "-o",
        str(output),
        "--prompts",
        "32,256",
        "--concurrency",
        "1,3",
        "--cached",
        "0",
        "--output-tokens",
        "16",
        "--rounds",
        "2",
        "--evaluations",
        "12",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    profile = json.loads(output.read_text())
    traces = sorted(output.with_suffix(".traces").glob("*.jsonl"))
    assert len(traces) == 4 and sorted(profile["provenance"]["sources"]) == [str(t) for t in traces]
    step = profile["step"]
    # a decode step of this 135M model on 2 cores takes tens of milliseconds
    assert 0.005 < step["base_s"] + step["decode_seq_s"] < 0.2
    assert step["prefill_token_s"] > 0 and 3.0 < profile["chars_per_token"] < 6.0
    assert profile["fit"]["single_sequence"]["ttft_rel_err_p50"] < 0.5
    # one window cannot see the hours after it: the shipped profile's speed spread, said so
    assert profile["speed_rel_sd"].keys() == {"prefill", "decode"}
    assert "speed_rel_sd: vllm-cpu-smollm2-135m" in profile["provenance"]["notes"]
