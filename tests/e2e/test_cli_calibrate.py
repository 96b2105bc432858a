"""`stairwise calibrate` and `stairwise replay` through the real console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from calibration.fit_replay import EXPONENT_CANDIDATES
from sim.profile import VllmProfile, load_profile

STAIRWISE = shutil.which("stairwise") or str(Path(sys.executable).parent / "stairwise")
DATA = Path(__file__).parent.parent / "data"
DISTSERVE = DATA / "distserve-vllm-100-1-head.exp"
SPLITWISE = DATA / "splitwise-perf_model-llama2-70b-h100-tp4.csv"


def stairwise(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([STAIRWISE, *map(str, args)], capture_output=True, text=True, timeout=300)


def one_line_error(out: subprocess.CompletedProcess[str], needle: str) -> None:
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_calibrate_from_a_request_trace_then_replay_it(tmp_path):
    profile_path = tmp_path / "opt13b.json"
    out = stairwise(
        "calibrate",
        "--from",
        DISTSERVE,
        "--format",
        "distserve",
        "-o",
        profile_path,
        "--model",
        "facebook/opt-13b",
        "--hardware",
        "A100-80GB",
        "--kv-capacity",
        "66144",
        "--max-num-seqs",
        "256",
        "--evaluations",
        "25",
    )
    assert out.returncode == 0, out.stderr
    assert "method: replay" in out.stdout
    profile = load_profile(str(profile_path))
    assert isinstance(profile, VllmProfile)
    assert profile.scheduler == "prefill_first"  # DistServe ran vLLM 0.2: the reader says so
    assert profile.provenance.sources == [str(DISTSERVE)]
    assert profile.provenance.settings["max_num_seqs"] == 256
    # each candidate batch exponent gets the budget
    assert profile.fit["replay"]["evaluations"] <= 25 * len(EXPONENT_CANDIDATES)
    assert "decode_seq_exponent" in profile.fit["fitted"]
    assert profile.step.decode_seq_exponent in EXPONENT_CANDIDATES
    assert profile.fit["kv_occupancy_peak_tokens"] > 1_000
    assert f"held up to {profile.fit['kv_occupancy_peak_tokens']:,} tokens" in out.stdout

    replayed = stairwise("replay", DISTSERVE, "--profile", profile_path, "--json")
    assert replayed.returncode == 0, replayed.stderr
    result = json.loads(replayed.stdout)
    assert set(result) == {"predicted", "observed", "error_pct"}
    assert set(result["error_pct"]) == {"ttft_p50", "ttft_p90", "tpot_p50", "e2e_p50"}
    assert set(result["predicted"]) == set(result["observed"])
    assert result["observed"]["requests"] == result["predicted"]["requests"] == 12
    observed = result["observed"]["ttft_s"]["p50"]
    expected = 100 * (result["predicted"]["ttft_s"]["p50"] - observed) / observed
    assert result["error_pct"]["ttft_p50"] == pytest.approx(expected)

    table = stairwise("replay", DISTSERVE, "--profile", profile_path)
    assert table.returncode == 0 and "TTFT p50" in table.stdout and "TPOT p50" in table.stdout


def calibrate_splitwise(output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return stairwise(
        "calibrate",
        "--from",
        SPLITWISE,
        "-o",
        output,
        "--model",
        "llama2-70b",
        "--hardware",
        "4x H100-80GB",
        *extra,
    )


def test_calibrate_directly_from_step_measurements(tmp_path):
    profile_path = tmp_path / "llama70b.json"
    out = calibrate_splitwise(
        profile_path,
        "--select",
        "model=llama2-70b",
        "--select",
        "hardware=h100-80gb",
        "--select",
        "tp=4",
        "--name",
        "h100-llama2-70b",
    )
    assert out.returncode == 0, out.stderr
    assert "method: direct" in out.stdout and "R²" in out.stdout
    profile = load_profile(str(profile_path))
    assert profile.name == "h100-llama2-70b" and profile.fit["steps"]["rows"] == 70
    one_line_error(stairwise("replay", SPLITWISE, "--profile", profile_path), "requests")


def test_shipped_gpu_profiles_load_by_name():
    out = stairwise("profiles")
    assert out.returncode == 0
    names = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert "vllm-a100-opt-13b" in names and "vllm-rtxpro6000-llama31-8b" in names
    for line in out.stdout.splitlines():
        name, _, described, *here = line.split("\t")
        profile = load_profile(name, exact=True)  # each line: that file, not this machine's variant
        assert profile.provenance.sources and profile.provenance.date
        assert described.endswith(profile.provenance.hardware)
        variant = load_profile(name).name
        assert here == ([f"(here: {variant})"] if variant != name else [])


@pytest.mark.parametrize(
    "name,content,fmt,needle",
    [
        ("empty.exp", "", "distserve", "empty.exp: empty file"),
        ("cut.exp", "[{'prompt_len': 55, 'output_len'", "distserve", "cut.exp:1: not a DistServe"),
        (
            "nan.json",
            '{"input_lens": [3], "output_lens": [4],\n"ttfts": [NaN]}',
            "vllm-bench",
            "nan.json:2: NaN is not a number",
        ),
        ("other.json", '{"hello": 1}', "vllm-bench", "not a detailed vllm bench result"),
        (
            "cut.jsonl",
            '{"type": "header", "schema": 1}\n{"type": "requ',
            "stairwise",
            "cut.jsonl:2: not a JSON",
        ),
        (
            "requests.jsonl",
            '{"input_toks": 5, "output_toks": NaN}',
            "llmservingsim",
            "requests.jsonl:1: NaN",
        ),
    ],
)
def test_bad_trace_files_exit_2_naming_file_and_line(tmp_path, name, content, fmt, needle):
    path = tmp_path / name
    path.write_text(content)
    for command in (
        [
            "calibrate",
            "--from",
            path,
            "--format",
            fmt,
            "-o",
            tmp_path / "p.json",
            "--model",
            "m",
            "--hardware",
            "h",
        ],
        ["replay", path, "--format", fmt, "--profile", "vllm-cpu-smollm2-135m"],
    ):
        one_line_error(stairwise(*command), needle)


def test_bad_options_and_profiles_exit_2(tmp_path):
    output = tmp_path / "p.json"
    one_line_error(stairwise("calibrate", "--from", DISTSERVE, "-o", output), "--model")
    for option, value in (("--kind", "gpu"), ("--max-num-seqs", "0"), ("--evaluations", "1")):
        one_line_error(
            stairwise(
                "calibrate",
                "--from",
                DISTSERVE,
                "-o",
                output,
                option,
                value,
                "--model",
                "m",
                "--hardware",
                "h",
            ),
            f"error: {option}:",
        )
    one_line_error(calibrate_splitwise(output, "--select", "gpu=h100"), "cannot select by gpu")
    one_line_error(
        calibrate_splitwise(output, "--select", "model=llama2-70b", "--fit", "speed_s"),
        "--fit: unknown step parameter",
    )
    one_line_error(
        calibrate_splitwise(
            output, "--select", "model=llama2-70b", "--fit", "base_s,decode_seq_exponent"
        ),
        "only a replay fit",
    )
    for floor, needle in (
        (("--floor", "prefill_token_s=fast"), "--floor prefill_token_s=fast: not a number"),
        (("--floor", "speed_s=1e-5"), "--floor: no floor for speed_s"),
        (("--floor", "prefill_token_s=-1"), "--floor: a floor must be a number >= 0"),
        (("--floors-from", "no-such-profile"), "no-such-profile"),
    ):
        one_line_error(calibrate_splitwise(output, "--select", "model=llama2-70b", *floor), needle)
    future = tmp_path / "future.json"
    future.write_text(
        json.dumps({**json.loads(Path(load_profile_path()).read_text()), "schema_version": 9})
    )
    one_line_error(stairwise("replay", DISTSERVE, "--profile", future), "schema_version 9")
    one_line_error(stairwise("replay", DISTSERVE, "--profile", "no-such-profile"), "no-such")


def load_profile_path() -> str:
    from sim.profile import SHIPPED_DIR

    return str(SHIPPED_DIR / "vllm-cpu-smollm2-135m.json")


def test_a_malformed_operator_table_exits_2_in_one_line(tmp_path):
    """A profile whose table sidecar holds a non-finite time: refused before any simulation."""
    import numpy as np

    from calibration.readers.llmservingsim import HEAD_OPS, ONCE_OPS, PER_LAYER_OPS, operator_arrays
    from sim.step_tables import save_tables

    arrays = operator_arrays(DATA / "llmservingsim" / "profile" / "tp1")
    arrays["attention"][0, 4] = np.inf
    save_tables(tmp_path / "ops.npz", arrays)
    profile = {
        "kind": "vllm",
        "name": "ops",
        "provenance": {"engine": "vllm", "model": "m", "hardware": "h"},
        "step": {"base_s": 0.01},
        "operator_tables": {
            "file": "ops.npz",
            "layers": 32,
            "per_layer_ops": list(PER_LAYER_OPS),
            "once_ops": list(ONCE_OPS),
            "per_sequence_ops": list(HEAD_OPS),
        },
    }
    (tmp_path / "ops.json").write_text(json.dumps(profile))
    trace = DATA / "llmservingsim" / "vllm" / "requests.jsonl"
    out = stairwise("replay", trace, "--profile", tmp_path / "ops.json")
    one_line_error(out, "ops.npz: attention row 1: not a finite non-negative number")


def test_calibrate_keeps_operator_tables_and_fits_their_correction(tmp_path):
    folder = DATA / "llmservingsim"
    output = tmp_path / "ops.json"
    out = stairwise(
        "calibrate",
        "--tables",
        "--from",
        folder / "profile" / "tp1",
        "--from",
        folder / "vllm" / "requests.jsonl",
        "--select",
        "layers=32",
        "--model",
        "m",
        "--hardware",
        "h",
        "--evaluations",
        "5",
        "-o",
        output,
    )
    assert out.returncode == 0, out.stderr
    assert "operator tables alone" in out.stdout and "serving-run correction" in out.stdout
    assert (tmp_path / "ops.npz").exists()
    profile = load_profile(str(output))
    assert isinstance(profile, VllmProfile) and profile.operator_tables is not None
    assert profile.operator_tables.file == "ops.npz" and profile.operator_tables.layers == 32
    assert {"tables_alone", "correction"} <= set(profile.fit)
    assert profile.fit["correction"]["evaluations"] <= 5
    replayed = stairwise("replay", folder / "vllm" / "requests.jsonl", "--profile", output)
    assert replayed.returncode == 0, replayed.stderr


def test_speed_spread_from_kept_live_runs_writes_the_profile_or_says_why_not(tmp_path):
    from tests.unit.test_speed_spread import PROFILE, live_trace, reading

    for i, factor in enumerate((0.9, 1.0, 1.1, 1.2, 1.05)):
        live_trace(tmp_path / f"run{i}.live.jsonl", reading(factor, factor), None, f"T{i}")
    out = stairwise("speed-spread", PROFILE, "--from", tmp_path, "-o", tmp_path / "p.json")
    assert out.returncode == 0, out.stderr
    assert f"5 runs against {PROFILE}" in out.stdout
    written = load_profile(str(tmp_path / "p.json"))
    assert isinstance(written, VllmProfile) and set(written.speed_rel_sd) == {"prefill", "decode"}
    assert written.step == load_profile(PROFILE, exact=True).step  # only the spread is added
    (tmp_path / "run4.live.jsonl").unlink()
    one_line_error(stairwise("speed-spread", PROFILE, "--from", tmp_path), "at least 5")
    # a folder that looks writable but takes no new file (a special filesystem): one line
    live_trace(tmp_path / "run4.live.jsonl", reading(1.0, 1.0), None, "T4")
    refused = stairwise("speed-spread", PROFILE, "--from", tmp_path, "-o", "/proc/spread.json")
    one_line_error(refused, "/proc/spread.json: No such file or directory")
