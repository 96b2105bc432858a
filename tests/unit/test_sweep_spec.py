"""Sweep files: validation, sampling methods and the point keys that make resuming safe."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sim.errors import ConfigError
from sim.profile import SHIPPED_DIR
from sim.scenario import load_scenario
from sim.sweep import load_sweep, parse_sweep, resolve_sweep
from sim.sweep.samplers import sample_points
from sim.sweep.spec import AxisRange, LhsMethod, RandomMethod

EXAMPLE = Path("examples/staircase-moa.yaml").resolve()


def spec(**fields):
    return {"kind": "sweep", "scenario": str(EXAMPLE), "axes": {"topology.redundancy": [0, 1]}} | (
        fields
    )


def test_a_grid_is_every_combination_in_axis_order():
    axes = {"a": [1, 2, 3], "b": ["x", "y"], "c": AxisRange(low=1, high=100, num=3, log=True)}
    points = sample_points(axes, parse_sweep(spec(), "s").method)
    expected = list(itertools.product([1, 2, 3], ["x", "y"], [1.0, 10.0, 100.0]))
    assert [(p["a"], p["b"]) for p in points] == [(a, b) for a, b, _ in expected]
    assert [p["c"] for p in points] == pytest.approx([c for _, _, c in expected])


def test_a_latin_hypercube_hits_every_stratum_of_every_axis_once():
    n = 40
    axes = {
        "lin": AxisRange(low=0, high=40),
        "log": AxisRange(low=1, high=1e4, log=True),
        "cat": list(range(n)),
    }
    points = sample_points(axes, LhsMethod(kind="lhs", n=n, seed=3))
    assert sorted(int(p["lin"]) for p in points) == list(range(n))  # one per unit stratum
    log_strata = sorted(int(np.log10(p["log"]) / 4 * n) for p in points)
    assert log_strata == list(range(n))
    assert sorted(p["cat"] for p in points) == list(range(n))  # every value exactly once


def test_random_points_are_seeded_and_stay_inside_the_ranges():
    axes = {"rate": AxisRange(low=0.1, high=0.5), "n": AxisRange(low=2, high=4, integer=True)}
    first = sample_points(axes, RandomMethod(kind="random", n=200, seed=1))
    again = sample_points(axes, RandomMethod(kind="random", n=200, seed=1))
    other = sample_points(axes, RandomMethod(kind="random", n=200, seed=2))
    assert first == again != other
    assert all(0.1 <= p["rate"] < 0.5 for p in first)
    assert {p["n"] for p in first} == {2, 3, 4}  # integer ranges include both ends


def test_points_apply_lists_indices_and_whole_values(tmp_path):
    sweep = resolve_sweep(
        parse_sweep(
            spec(
                axes={
                    "topology.chunks.proposer.0": [4],
                    "topology.chunks.aggregator": [[16, 32]],
                    "workload.arrival": [{"kind": "constant", "rate_per_s": 0.5}],
                },
                overrides=["workload.requests=7"],
            ),
            "s.yaml",
        ),
        tmp_path,
        "s.yaml",
    )
    (point,) = sweep.points
    topology = point.scenario["topology"]
    assert topology["chunks"] == {"proposer": [4, 128, 256], "aggregator": [16, 32]}
    assert point.scenario["workload"]["arrival"] == {"kind": "constant", "rate_per_s": 0.5}
    assert point.scenario["workload"]["requests"] == 7


def test_keys_follow_the_configuration_not_its_spelling(tmp_path):
    def key(axes, **fields):
        return resolve_sweep(parse_sweep(spec(axes=axes, **fields), "s"), tmp_path, "s").points

    by_index = key({"topology.chunks.proposer.0": [8, 16]})
    by_list = key({"topology.chunks.proposer": [[8, 128, 256], [16, 128, 256]]})
    assert [p.key for p in by_index] == [p.key for p in by_list]
    assert by_index[0].key != by_index[1].key
    assert key({"topology.chunks.proposer.0": [8]}, replications=5)[0].key != by_index[0].key


def test_keys_follow_a_profiles_content_not_its_path(tmp_path):
    """Moving a sweep's folder must not recompute its points; editing its profile must."""

    def keys(folder):
        profile = folder / "profile.json"
        sweep = spec(overrides=[f"servers.local.profile={profile}"])
        return [p.key for p in resolve_sweep(parse_sweep(sweep, "s"), folder, "s").points]

    here, moved = tmp_path / "here", tmp_path / "moved"
    for folder in (here, moved):
        folder.mkdir()
        shutil.copy(SHIPPED_DIR / "vllm-cpu-smollm2-135m.json", folder / "profile.json")
    assert keys(here) == keys(moved)
    data = json.loads((moved / "profile.json").read_text())
    data["step"]["base_s"] *= 2
    (moved / "profile.json").write_text(json.dumps(data))
    assert keys(moved)[0] != keys(here)[0]


@pytest.mark.parametrize(
    ("field", "row"), [("file", {"prompt_tokens": 50}), ("prompts", {"prompt": "Why?"})]
)
def test_keys_follow_a_workload_files_content_not_its_path(tmp_path, field, row):
    """An inline scenario's relative workload or prompt file is read beside the sweep file;
    a moved folder keeps its keys, an edited file changes them."""

    def keys(folder):
        scenario = load_scenario(EXAMPLE).model_dump(mode="json")
        scenario["workload"][field] = "requests.jsonl"
        sweep = resolve_sweep(parse_sweep(spec(scenario=scenario), "s"), folder, "s")
        assert sweep.points[0].scenario["workload"][field] == str(folder / "requests.jsonl")
        return [p.key for p in sweep.points]

    here, moved = tmp_path / "here", tmp_path / "moved"
    for folder in (here, moved):
        folder.mkdir()
        (folder / "requests.jsonl").write_text(json.dumps(row) + "\n")
    assert keys(here) == keys(moved)
    (moved / "requests.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    assert keys(moved)[0] != keys(here)[0]


def test_invalid_points_stop_the_sweep_or_are_left_out(tmp_path):
    axes = {"topology.proposers": [2, 3], "topology.redundancy": [0, 1, 2]}
    with pytest.raises(ConfigError, match=r"point topology.proposers=2, topology.redundancy=2"):
        resolve_sweep(parse_sweep(spec(axes=axes), "s.yaml"), tmp_path, "s.yaml")
    sweep = resolve_sweep(
        parse_sweep(spec(axes=axes, invalid_points="skip"), "s.yaml"), tmp_path, "s.yaml"
    )
    assert len(sweep.points) == 5 and sweep.skipped == 1


def test_a_relative_scenario_path_is_read_beside_the_sweep_file(tmp_path):
    (tmp_path / "base.yaml").write_text(EXAMPLE.read_text())
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("kind: sweep\nscenario: base.yaml\naxes: {topology.redundancy: [1]}\n")
    (point,) = load_sweep(sweep_file).points
    assert point.scenario["name"] == "staircase-moa-3x1" and point.values == {
        "topology.redundancy": 1
    }


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"kind": "sweeep"}, "kind"),
        ({"axis": {}}, "axis: unknown field"),
        ({"axes": {}}, "axes"),
        ({"axes": {"topology redundancy": [1]}}, "not a dotted scenario path"),
        ({"axes": {"topology.redundancy": []}}, "axes.topology.redundancy"),
        (
            {"axes": {"topology.redundancy": 1}},
            "axes.topology.redundancy: Input should be a valid list",
        ),
        ({"axes": {"workload.requests": {"low": 5, "high": 1, "num": 3}}}, "must be greater"),
        ({"axes": {"workload.requests": {"low": 1, "high": 5}}}, "needs num"),
        ({"method": {"kind": "sobol", "n": 3}}, "method"),
        ({"method": {"kind": "lhs"}}, "method.n: required field missing"),
        ({"replications": 0}, "replications"),
        ({"metrics": ["ttft_s.p95"]}, "unknown metric 'ttft_s.p95'"),
        ({"metrics": ["ttft_s"]}, "is a group"),
        ({"axes": {"topology.sugar": [1]}}, "topology.sugar: unknown field"),
        ({"axes": {"topology.redundancy": [5]}}, "redundancy (5) must be less than proposers"),
        ({"scenario": "no-such.yaml"}, "cannot read"),
        ({"overrides": ["nonsense"]}, "dotted.path=value"),
    ],
)
def test_bad_sweep_files_are_one_line_naming_the_field(tmp_path, change, needle):
    with pytest.raises(ConfigError) as excinfo:
        resolve_sweep(parse_sweep(spec(**change), "bad.yaml"), tmp_path, "bad.yaml")
    message = str(excinfo.value)
    assert needle in message and "\n" not in message


def test_a_sweep_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="a sweep must be a mapping"):
        load_sweep(path)


def test_the_example_sweep_file_is_valid():
    sweep = load_sweep("examples/sweep-chunks.yaml")
    assert len(sweep.points) == 15 and sweep.spec.replications == 3
