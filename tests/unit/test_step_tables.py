"""Table-driven step cost (sim/step_tables.py) on a real sample of LLMServingSim's RTX PRO 6000
operator profile (tests/data/llmservingsim/profile/tp1): grid points, interpolation, the
sidecar file and its refusals, and a replay of the real run on the shipped ops profile."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from calibration.calibrate import decode_costs_from_tables
from calibration.readers import read_tables
from calibration.readers.llmservingsim import HEAD_OPS, ONCE_OPS, PER_LAYER_OPS, operator_arrays
from sim.errors import ConfigError
from sim.profile import StepCorrection, load_profile, parse_profile, save_profile
from sim.step_tables import TableStepCost, save_tables, tables_from_arrays

DATA = Path(__file__).parent.parent / "data" / "llmservingsim" / "profile" / "tp1"
GPU_DATA = Path(__file__).parents[3] / "shared" / "data" / "gpu"
LAYERS = 32


def _csv(name: str) -> list[dict[str, str]]:
    with (DATA / name).open() as f:
        return list(csv.DictReader(f))


ATTENTION = {
    tuple(int(r[k]) for k in ("prefill_chunk", "kv_prefill", "n_decode", "kv_decode")): float(
        r["time_us"]
    )
    for r in _csv("attention.csv")
}
DENSE = {(r["layer"], int(r["tokens"])): float(r["time_us"]) for r in _csv("dense.csv")}
HEADS = {(r["layer"], int(r["sequences"])): float(r["time_us"]) for r in _csv("per_sequence.csv")}


@pytest.fixture(scope="module")
def tables():
    return tables_from_arrays(
        operator_arrays(DATA), str(DATA), LAYERS, PER_LAYER_OPS, ONCE_OPS, HEAD_OPS
    )


def hand_step_us(chunk: int, before: int, decodes: int, context: int) -> float:
    """A step composed by hand from the CSV rows (the grid point and dense sizes must exist)."""
    tokens, sequences = chunk + decodes, decodes + (1 if chunk else 0)
    layer = ATTENTION[(chunk, before, decodes, context)]
    layer += sum(DENSE[(op, tokens)] for op in PER_LAYER_OPS)  # layernorm counted twice
    once = DENSE[("embedding", tokens)] + DENSE[("final_layernorm", tokens)]
    return LAYERS * layer + once + head("lm_head", sequences) + head("sampler", sequences)


def head(op: str, sequences: int) -> float:
    """A per-sequence op at ``sequences``, straight between the measured sizes around it."""
    sizes = sorted(n for o, n in HEADS if o == op)
    low = max(n for n in sizes if n <= sequences)
    high = min(n for n in sizes if n >= sequences)
    if low == high:
        return HEADS[(op, low)]
    share = (sequences - low) / (high - low)
    return HEADS[(op, low)] + share * (HEADS[(op, high)] - HEADS[(op, low)])


@pytest.mark.parametrize(
    "point",
    [
        (0, 0, 1, 512),
        (0, 0, 16, 2048),
        (128, 512, 128, 512),
        (2048, 2048, 0, 0),
        (128, 0, 128, 2048),
    ],
)
def test_a_grid_point_prices_as_the_hand_composed_sum(tables, point):
    chunk, before, decodes, context = point
    want = hand_step_us(*point)
    got = tables.step_us(chunk, before, 1 if chunk else 0, decodes, decodes * context)
    assert got == pytest.approx(want, rel=1e-12)
    cost = TableStepCost(tables, compute_scale=0.5, step_overhead_s=0.002)
    seconds = cost.seconds(chunk, 0.0, decodes, decodes * context, before, 1 if chunk else 0)
    assert seconds == pytest.approx(0.5 * want * 1e-6 + 0.002, rel=1e-12)


def test_between_grid_points_dense_ops_interpolate_linearly(tables):
    # 512 prefill tokens: dense ops between their 256- and 1024-token measurements
    def dense(op: str) -> float:
        low, high = DENSE[(op, 256)], DENSE[(op, 1024)]
        return low + (512 - 256) / (1024 - 256) * (high - low)

    want = LAYERS * (ATTENTION[(512, 512, 0, 0)] + sum(dense(op) for op in PER_LAYER_OPS))
    want += dense("embedding") + dense("final_layernorm")
    want += HEADS[("lm_head", 1)] + HEADS[("sampler", 1)]
    assert tables.step_us(512, 512, 1, 0, 0) == pytest.approx(want, rel=1e-12)


def test_attention_blends_the_corners_around_a_query(tables):
    # halfway between 16 and 128 decodes and between 512 and 2048 context, at chunk 0
    corners = [ATTENTION[(0, 0, d, k)] for d in (16, 128) for k in (512, 2048)]
    assert tables.attention_us(0, 0, 72, 1280) == pytest.approx(np.mean(corners), rel=1e-12)
    # above the grid: along the last two points (2048 → 4096 context adds what 512 → 2048 did,
    # scaled by the distance)
    low, high = ATTENTION[(0, 0, 1, 512)], ATTENTION[(0, 0, 1, 2048)]
    want = high + (4096 - 2048) / (2048 - 512) * (high - low)
    assert tables.attention_us(0, 0, 1, 4096) == pytest.approx(want, rel=1e-12)
    # below the grid: the first point
    assert tables.attention_us(0, 0, 1, 100) == pytest.approx(low, rel=1e-12)


def test_interpolation_is_monotone_where_the_table_is(tables):
    # decode attention grows with context and with batch in this table: so must every lookup
    for decodes in (1, 16, 128):
        measured = [ATTENTION[(0, 0, decodes, k)] for k in (512, 2048)]
        assert measured == sorted(measured)
    contexts = np.linspace(1, 6000, 300)
    for decodes in (1, 5, 16, 40, 128):
        curve = [tables.attention_us(0, 0, decodes, k) for k in contexts]
        assert np.all(np.diff(curve) >= 0)
    for context in (600, 1500, 3000):
        by_batch = [tables.attention_us(0, 0, d, context) for d in range(1, 129)]
        assert np.all(np.diff(by_batch) >= 0)
    # and whole decode steps, whose dense and per-sequence tables grow too
    steps = [tables.step_us(0, 0, 0, d, d * 1000) for d in range(1, 129)]
    assert np.all(np.diff(steps) >= 0)


def test_a_decode_run_prices_each_step_like_a_single_step(tables):
    cost = TableStepCost(tables, compute_scale=0.8, step_overhead_s=0.001)
    run = cost.decode_run(24, 24 * 700, 50)
    singles = [cost.seconds(0, 0.0, 24, 24 * 700 + 24 * k) for k in range(50)]
    np.testing.assert_allclose(run, singles, rtol=1e-12)


def test_the_profile_reader_step_rows_are_the_table_prices(tables):
    (table,) = read_tables([DATA], "llmservingsim-profile", {"layers": str(LAYERS)})
    row = next(s for s in table.steps if s.decode_seqs == 16 and s.prefill_tokens == 0)
    context = int(row.context_tokens / 16)
    assert row.duration_s * 1e6 == pytest.approx(hand_step_us(0, 0, 16, context), rel=1e-12)


def test_a_profile_with_tables_round_trips_through_json_and_sidecar(tmp_path, tables):
    profile = _ops_profile(tmp_path, tables)
    loaded = load_profile(str(tmp_path / "ops.json"))
    assert (tmp_path / "ops.npz").exists()
    before, after = profile.step_pricer(), loaded.step_pricer()
    args = (256, 0.0, 8, 8 * 900, 1024, 1)
    assert after.seconds(*args) == pytest.approx(before.seconds(*args), rel=1e-12)
    assert after.seconds(*args) != pytest.approx(profile.step.seconds(*args[:4]))


def _ops_profile(folder: Path, tables, request_overhead_s: float = 0.0):
    data = {
        "kind": "vllm",
        "name": "ops",
        "request_overhead_s": request_overhead_s,
        "provenance": {"engine": "vllm", "model": "m", "hardware": "h"},
        "step": {"base_s": 0.01},
        "operator_tables": {
            "file": "unused.npz",
            "layers": LAYERS,
            "per_layer_ops": list(PER_LAYER_OPS),
            "once_ops": list(ONCE_OPS),
            "per_sequence_ops": list(HEAD_OPS),
            "correction": {"compute_scale": 0.9, "step_overhead_s": 0.003},
        },
    }
    save_tables(folder / "unused.npz", tables.arrays)
    profile = parse_profile(data, str(folder / "source.json"))
    save_profile(profile, folder / "ops.json")
    return profile


@pytest.mark.parametrize(
    ("spoil", "needle"),
    [
        (lambda a: a["attention"].__setitem__((3, 4), np.nan), "attention row 4: not a finite"),
        (lambda a: a["attention"].__setitem__((0, 4), -1.0), "attention row 1: not a finite"),
        (lambda a: a.pop("dense/act_fn"), "no table for act_fn"),
        (lambda a: a.__setitem__("attention", a["attention"][:, :4]), "expected rows of 5"),
        (
            lambda a: a.__setitem__("attention", np.vstack([a["attention"], a["attention"][:1]])),
            "measured twice",
        ),
        (lambda a: a["dense/act_fn"].__setitem__((0, 0), 1.5), "whole numbers"),
    ],
)
def test_a_malformed_table_is_refused_in_one_line(tmp_path, tables, spoil, needle):
    arrays = {k: v.copy() for k, v in tables.arrays.items()}
    spoil(arrays)
    _ops_profile(tmp_path, tables)
    save_tables(tmp_path / "ops.npz", arrays)
    with pytest.raises(ConfigError, match=needle) as caught:
        load_profile(str(tmp_path / "ops.json"))
    assert "\n" not in str(caught.value) and "ops.npz" in str(caught.value)


def test_a_missing_or_unreadable_sidecar_is_refused_in_one_line(tmp_path, tables):
    _ops_profile(tmp_path, tables)
    (tmp_path / "ops.npz").write_text("not a zip")
    with pytest.raises(ConfigError, match="not a readable operator-table file"):
        load_profile(str(tmp_path / "ops.json"))
    (tmp_path / "ops.npz").unlink()
    with pytest.raises(ConfigError, match="not a readable operator-table file"):
        load_profile(str(tmp_path / "ops.json"))


RUN = GPU_DATA / "llmservingsim-llama31-8b-rtxpro6000" / "vllm" / "requests.jsonl"
# LLMServingSim's own simulator, from the same operator profile, misses this run's TTFT median by
# 8.6 % (its worst p50/p90 error; casys-kaist/LLMServingSim @5daddb21, bench/examples/RTXPRO6000/
# Llama-3.1-8B/validation/summary.txt). The profile alone must do at least as well; with the
# correction fitted on the run, the goal of 5 % holds.
LLMSERVINGSIM_WORST_PCT = 8.6
GOAL_PCT = 5.0


@pytest.mark.skipif(not RUN.exists(), reason="needs the public GPU data at ../shared/data/gpu")
def test_the_shipped_ops_profile_replays_the_real_run_like_llmservingsim():
    from calibration.replay import EngineSettings, compare

    (run,) = read_tables([RUN], "llmservingsim")
    shipped = load_profile("vllm-rtxpro6000-llama31-8b-ops")
    spec = shipped.operator_tables
    assert spec is not None and spec.layers == 32
    alone = shipped.model_copy(
        update={
            "operator_tables": spec.model_copy(update={"correction": StepCorrection()}),
            "request_overhead_s": 0.0,
        }
    )
    for profile, bound in ((alone, LLMSERVINGSIM_WORST_PCT), (shipped, GOAL_PCT)):
        result = compare(run, profile, EngineSettings())
        for metric in ("ttft_s", "tpot_s", "e2e_s"):
            for level in ("p50", "p90"):
                observed = result["observed"][metric][level]
                error = 100 * (result["predicted"][metric][level] - observed) / observed
                assert abs(error) <= bound, (metric, level, error, bound)


def test_the_correction_fit_recovers_a_planted_correction(tmp_path, tables):
    from dataclasses import replace

    from calibration.fit_replay import fit_table_correction
    from calibration.replay import EngineSettings
    from sim import Simulator, scenario_from_dict

    truth = _ops_profile(tmp_path, tables, 0.02)  # compute × 0.9 + 3 ms per step, 20 ms/request
    scenario = scenario_from_dict(
        {
            "seed": 5,
            "servers": {"gpu": {"kind": "vllm", "profile": str(tmp_path / "ops.json")}},
            "topology": {"kind": "graph", "unit": {"tokens": 64}, "agents": {"solo": {"steps": 1}}},
            "workload": {
                "requests": 40,
                "arrival": {"kind": "poisson", "rate_per_s": 4.0},
                "prompt_tokens": {"dist": "uniform", "low": 100, "high": 3000},
                "output_tokens": {"dist": "uniform", "low": 16, "high": 64},
            },
        }
    )
    trace = tmp_path / "trace.jsonl"
    Simulator(scenario, trace_path=trace).run()
    (table,) = read_tables([trace])
    generic = replace(table, scenario=None, format="test")  # the one-agent replay path
    spec = truth.operator_tables
    assert spec is not None
    alone = truth.model_copy(
        update={
            "operator_tables": spec.model_copy(update={"correction": StepCorrection()}),
            "request_overhead_s": 0.0,
        }
    )
    fit = fit_table_correction([generic], alone, EngineSettings(), max_evaluations=40)
    assert fit.profile.operator_tables is not None
    found = fit.profile.operator_tables.correction
    assert found.compute_scale == pytest.approx(0.9, rel=0.1)
    assert found.step_overhead_s == pytest.approx(0.003, abs=0.001)
    assert fit.profile.request_overhead_s == pytest.approx(0.02, abs=0.005)
    assert fit.quality["max_abs_err_pct"] < 10


def test_the_decode_costs_the_tables_imply_reproduce_their_decode_steps(tables):
    costs = decode_costs_from_tables(tables, 128)
    assert costs["decode_seq_s"] > 0 and costs["context_token_s"] > 0
    # the line through the tables' decode steps: its base is the step at no load
    base_s = (
        1e-6 * tables.step_us(0, 0, 0, 1, 128, 128)
        - costs["decode_seq_s"]
        - 128 * costs["context_token_s"]
    )
    errors = []
    for batch in (2, 8, 32, 128):
        for context in (256, 1024, 2048):
            table_s = 1e-6 * tables.step_us(0, 0, 0, batch, batch * context, context)
            line_s = (
                base_s + batch * costs["decode_seq_s"] + batch * context * costs["context_token_s"]
            )
            errors.append(abs(line_s / table_s - 1))
    assert np.median(errors) < 0.1, errors
