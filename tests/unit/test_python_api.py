"""The Python API does what the CLI does: calibrate, replay and report from a script."""

from __future__ import annotations

from pathlib import Path

import pytest

import stairwise
from sim.profile import VllmProfile

DATA = Path(__file__).parent.parent / "data"
DISTSERVE = DATA / "distserve-vllm-100-1-head.exp"


def test_calibrate_then_replay_then_report_from_python(tmp_path):
    output = tmp_path / "opt13b.json"
    profile = stairwise.calibrate(
        [DISTSERVE],
        output,
        model="facebook/opt-13b",
        hardware="A100",
        kv_capacity_tokens=66_144,
        max_evaluations=10,
        params=("base_s", "decode_seq_s"),
    )
    assert isinstance(profile, VllmProfile) and output.exists()
    assert profile.name == "opt13b" and profile.scheduler == "prefill_first"
    assert profile.fit["fitted"] == ["base_s", "decode_seq_s"]

    compared = stairwise.replay(DISTSERVE, str(output), max_num_seqs=256)
    assert set(compared) == {"predicted", "observed", "error_pct"}
    assert compared["observed"]["requests"] == compared["predicted"]["requests"] > 0

    traces = []
    for seed in (1, 2):
        trace = tmp_path / f"run{seed}.jsonl"
        stairwise.simulate("examples/staircase-moa.yaml", ["workload.requests=3"], seed, trace)
        traces.append(trace)
    written = stairwise.report(traces, tmp_path / "report.html", reference=2)
    assert written.runs == 2 and written.reference.startswith("run2")
    assert "Staircase timeline" in written.path.read_text()


def test_bad_options_raise_one_line_config_errors():
    with pytest.raises(stairwise.ConfigError, match="--evaluations"):  # named as in the CLI
        stairwise.calibrate([DISTSERVE], max_evaluations=0)
    with pytest.raises(stairwise.ConfigError, match="--max-num-seqs"):
        stairwise.replay(DISTSERVE, "vllm-a100-opt-13b", max_num_seqs=-1)
    with pytest.raises(stairwise.ConfigError, match="not both"):
        stairwise.validate("examples/staircase-moa.yaml", repeat=2, live_from=["out"])
    with pytest.raises(stairwise.ConfigError, match="either --from FILE"):
        stairwise.calibrate()
