"""Running sweeps: replications and intervals, resuming after a kill, the process pool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sim import simulate
from sim.errors import ConfigError
from sim.profile import load_profile, save_profile
from sim.scenario import load_scenario
from sim.sweep import sweep as run
from sim.sweep.replicate import replication_seed
from sim.sweep.runner import RESULTS_FILE

EXAMPLE = str(Path("examples/staircase-moa.yaml").resolve())


def sweep(*args, workers=1, **kwargs):
    """In this process unless a test asks for a pool: fast, and the same results."""
    return run(*args, workers=workers, **kwargs)


def spec(axes=None, replications=2, metrics=("ttft_s.p50", "e2e_s.p90")):
    return {
        "kind": "sweep",
        "name": "unit",
        "scenario": EXAMPLE,
        "overrides": ["workload.requests=8", "workload.arrival.rate_per_s=0.2"],
        "axes": axes or {"topology.chunks.proposer.0": [4, 16, 64], "topology.redundancy": [0, 1]},
        "replications": replications,
        "metrics": list(metrics),
    }


def test_replications_use_derived_seeds_and_student_t_prediction_intervals(tmp_path):
    # the shipped profile without its parameter uncertainty or speed spread: only the seeds
    certain = load_profile("vllm-cpu-smollm2-135m").model_copy(
        update={"step_rel_sd": {}, "speed_rel_sd": {}}
    )
    save_profile(certain, tmp_path / "certain.json")
    profile = f"servers.local.profile={tmp_path / 'certain.json'}"
    swept = spec({"topology.redundancy": [1]}, replications=3, metrics=["e2e_s.p50"])
    swept["overrides"].append(profile)
    result = sweep(swept)
    (row,) = result.rows
    base = load_scenario(
        EXAMPLE, ["workload.requests=8", "workload.arrival.rate_per_s=0.2", profile]
    )
    seeds = [replication_seed(base.seed, r) for r in range(3)]
    assert seeds[0] == base.seed and len(set(seeds)) == 3
    values = [
        simulate(base, ["topology.redundancy=1"], s, replications=1).summary["e2e_s"]["p50"]
        for s in seeds
    ]
    assert len(set(values)) == 3  # the replications really differ
    # where a fourth replication falls, 90 % of the time: a t interval of the log values
    logs = np.log(values)
    half = stats.t.ppf(0.95, 2) * np.std(logs, ddof=1) * np.sqrt(1 + 1 / 3)
    assert row["e2e_s.p50"] == pytest.approx(np.mean(values))
    assert row["e2e_s.p50.ci_low"] == pytest.approx(np.exp(np.mean(logs) - half))
    assert row["e2e_s.p50.ci_high"] == pytest.approx(np.exp(np.mean(logs) + half))


def test_an_interrupted_sweep_resumes_without_recomputing(tmp_path):
    out = tmp_path / "interrupted"

    def stop_after_three(done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(spec(), out=out, progress=stop_after_three)
    results = out / RESULTS_FILE
    kept = results.read_text()
    assert len(kept.splitlines()) == 1 + 3  # header + the three finished points

    resumed = sweep(spec(), out=out)
    assert (resumed.computed, resumed.resumed) == (3, 3)
    assert results.read_text().startswith(kept)  # finished rows were not written again
    keys = [line.split(",")[0] for line in results.read_text().splitlines()[1:]]
    assert len(keys) == len(set(keys)) == 6

    uninterrupted = sweep(spec(), out=tmp_path / "whole")
    assert resumed.rows == uninterrupted.rows
    again = sweep(spec(), out=out)
    assert (again.computed, again.resumed) == (0, 6) and again.rows == uninterrupted.rows


def test_a_row_torn_by_a_kill_is_cut_off_and_computed_again(tmp_path):
    whole = sweep(spec(), out=tmp_path)
    results = tmp_path / RESULTS_FILE
    text = results.read_text()
    results.write_text(text[: len(text) - 25])  # killed in the middle of the last row
    repaired = sweep(spec(), out=tmp_path)
    assert (repaired.computed, repaired.resumed) == (1, 5)
    assert repaired.rows == whole.rows
    assert sorted(results.read_text().splitlines()) == sorted(text.splitlines())


def test_results_of_another_sweep_are_never_mixed_in(tmp_path):
    sweep(spec(), out=tmp_path)
    with pytest.raises(ConfigError, match="holds results of another sweep"):
        sweep(spec(metrics=["tps.p50"]), out=tmp_path)


def test_a_process_pool_stores_the_same_rows_as_one_process(tmp_path):
    serial = sweep(spec(), workers=1, out=tmp_path / "serial")
    pooled = sweep(spec(), workers=2, out=tmp_path / "pooled")
    assert pooled.rows == serial.rows
    serial_lines = (tmp_path / "serial" / RESULTS_FILE).read_text().splitlines()
    pooled_lines = (tmp_path / "pooled" / RESULTS_FILE).read_text().splitlines()
    assert sorted(pooled_lines) == sorted(serial_lines)  # completion order may differ


def test_results_come_as_a_dataframe_with_intervals():
    frame = sweep(spec(metrics=["ttft_s.p90"])).dataframe()
    assert len(frame) == 6
    assert {"topology.redundancy", "ttft_s.p90", "ttft_s.p90.ci_low", "key"} <= set(frame.columns)
    # a later first chunk means a later first answer token
    by_chunk = frame.groupby("topology.chunks.proposer.0")["ttft_s.p90"].mean()
    assert by_chunk[4] < by_chunk[16] < by_chunk[64]
