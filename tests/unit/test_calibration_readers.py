"""Each trace reader on a real sample (tests/data, see SOURCES.md) and on broken files."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from calibration.readers import detect_format, read_tables
from calibration.readers.prometheus import parse_metrics, read_snapshot, run_totals
from calibration.replay import observed_summary
from sim import Simulator, scenario_from_dict
from sim.errors import ConfigError
from sim.metrics import summarize
from tests.helpers import vllm_profile, write_profile

DATA = Path(__file__).parent.parent / "data"


def one(path: Path, fmt: str = "auto", **selection: str):
    (table,) = read_tables([path], fmt, selection)
    return table


def test_distserve_exp_rows_match_the_file_own_latencies():
    path = DATA / "distserve-vllm-100-1-head.exp"
    raw = ast.literal_eval(path.read_text().splitlines()[0])
    table = one(path)
    assert table.format == "distserve" and len(table.requests) == len(raw) == 12
    assert table.settings["scheduler"] == "prefill_first"
    for row, request in zip(table.requests, raw, strict=True):
        assert row.prompt_tokens == request["prompt_len"]
        assert row.ttft_s * 1e3 == pytest.approx(request["ttft_ms"], rel=1e-6)
        assert row.e2e_s * 1e3 == pytest.approx(request["latency_ms"], rel=1e-6)
        assert row.tpot_s * 1e3 == pytest.approx(request["tpot_ms"], rel=1e-6)
    assert min(r.arrival_s for r in table.requests) == 0.0


def test_distserve_profile_becomes_step_rows_of_its_own_formula():
    table = one(DATA / "distserve-profiler-a100-80g.vllm.json", model="facebook/opt-13b", tp="1")
    a, b, c = json.loads((DATA / "distserve-profiler-a100-80g.vllm.json").read_text())[
        "facebook/opt-13b"
    ]["1"]["prefill"]
    prefill = next(
        s for s in table.steps if s.prefill_tokens == 512 and s.prefill_attention == 512**2
    )
    assert prefill.duration_s * 1e3 == pytest.approx(a + b * 512 + c * 512**2)
    with pytest.raises(ConfigError, match="facebook/opt-13b"):  # lists what the file has
        one(DATA / "distserve-profiler-a100-80g.vllm.json", model="opt-999")


def test_llmservingsim_requests_use_the_server_clock_and_meta():
    path = DATA / "llmservingsim" / "vllm" / "requests.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    table = one(path)
    row = table.requests[0]
    assert row.prompt_tokens == first["input_toks"] and row.output_tokens == first["output_toks"]
    assert row.ttft_s == pytest.approx(first["first_token_ts"] - first["queued_ts"])
    assert row.e2e_s == pytest.approx(first["last_token_ts"] - first["queued_ts"])
    assert table.settings["engine_version"] == "0.19.0"
    assert table.settings["max_num_batched_tokens"] == 2048
    assert min(r.network_delay_s for r in table.requests) == 0.0


def test_llmservingsim_layer_profile_sums_a_whole_step():
    table = one(DATA / "llmservingsim" / "profile" / "tp1", layers="32")
    decode = next(s for s in table.steps if s.decode_seqs == 1 and s.prefill_tokens == 0)
    prefill = next(s for s in table.steps if s.prefill_tokens == 2048 and s.decode_seqs == 0)
    assert 0.005 < decode.duration_s < prefill.duration_s  # 32 layers of µs-scale ops
    assert table.settings["enforce_eager"] is True
    with pytest.raises(ConfigError, match="layers"):
        one(DATA / "llmservingsim" / "profile" / "tp1")


def test_splitwise_rows_pair_a_prefill_and_a_decode_step():
    path = DATA / "splitwise-perf_model-llama2-70b-h100-tp4.csv"
    table = one(path, model="llama2-70b", hardware="h100-80gb", tp="4")
    lines = path.read_text().splitlines()
    assert len(table.steps) == 2 * (len(lines) - 1)
    first = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
    prefill, decode = table.steps[:2]
    assert prefill.duration_s == pytest.approx(float(first["prompt_time"]) / 1e3)
    assert decode.duration_s == pytest.approx(float(first["token_time"]) / 1e3)
    assert decode.decode_seqs == int(first["batch_size"])
    with pytest.raises(ConfigError, match=r"a100-80gb|h100-80gb"):
        one(path, hardware="tpu")


def test_argonne_batch_and_ttft_layouts():
    batch = one(DATA / "argonne-All_results-llama3-8b.csv", hardware="Nvidia H100 GPU")
    assert len(batch.steps) == 20
    row = next(s for s in batch.steps if s.decode_seqs == 16 * 127)  # L=128, batch 16
    assert row.prefill_tokens == 16 * 128 and row.steps > 127
    ttft = one(
        DATA / "argonne-all_results_TTFT_ITL.csv",
        hardware="Nvidia H100 GPU",
        model="meta-llama/Meta-Llama-3-8B",
    )
    (only,) = ttft.steps
    assert only.prefill_tokens == 16 * 1024 and only.decode_seqs == 0


def test_vllm_bench_detailed_result():
    table = one(DATA / "vllm-bench-detailed.json")
    assert table.format == "vllm-bench" and table.token_times
    assert len(table.requests) == 5 and len(table.served) == 4  # one request failed
    row = table.requests[0]
    assert row.e2e_s == pytest.approx(row.ttft_s + sum(row.itls_s))
    assert table.requests[2].arrival_s == pytest.approx(1052.595 - 1052.101)
    summary = observed_summary(table)
    assert summary["requests"] == 4 and summary["failed_requests"] == 1
    assert summary["itl_s"]["count"] == 4 * 7


def test_a_real_vllm_bench_serve_result_of_the_local_server():
    table = one(DATA / "vllm-bench-cpu-smollm2.json")
    data = json.loads((DATA / "vllm-bench-cpu-smollm2.json").read_text())
    assert len(table.served) == data["completed"] == 12
    assert [r.prompt_tokens for r in table.requests] == data["input_lens"]
    for row, itls in zip(table.requests, data["itls"], strict=True):
        assert row.output_tokens == 24
        assert row.e2e_s == pytest.approx(row.ttft_s + sum(itls), rel=1e-6)
    summary = observed_summary(table)
    assert summary["ttft_s"]["mean"] == pytest.approx(data["mean_ttft_ms"] / 1e3, rel=1e-6)


def test_prometheus_snapshot_of_a_real_vllm_server():
    snapshot = read_snapshot(DATA / "vllm-cpu-metrics.prom")
    assert snapshot.types["vllm:time_to_first_token_seconds"] == "histogram"
    totals = snapshot.totals()
    assert totals["vllm:request_success_total"] == 1.0
    assert totals["vllm:time_to_first_token_seconds_count"] == 1.0
    assert "vllm:time_to_first_token_seconds_bucket" not in totals


def test_prometheus_diff_subtracts_counters_and_keeps_gauges(tmp_path):
    text = (DATA / "vllm-cpu-metrics.prom").read_text()
    later = text.replace(
        'vllm:prompt_tokens_total{engine="0",model_name="smollm2"} ',
        'vllm:prompt_tokens_total{engine="0",model_name="smollm2"} 1000+',
    )
    before = parse_metrics(text, "before")
    value = before.totals()["vllm:prompt_tokens_total"]
    later = later.replace(f"1000+{value}", str(value + 1000))
    (tmp_path / "a.prom").write_text(text)
    (tmp_path / "b.prom").write_text(later)
    totals = run_totals([tmp_path / "a.prom", tmp_path / "b.prom"])
    assert totals["vllm:prompt_tokens_total"] == 1000
    assert totals["vllm:num_requests_running"] == before.totals()["vllm:num_requests_running"]


def test_stairwise_trace_from_the_simulator_round_trips(tmp_path):
    scenario = scenario_from_dict(
        {
            "servers": {
                "gpu": {"kind": "vllm", "profile": write_profile(tmp_path, vllm_profile())}
            },
            "topology": {"kind": "moa", "proposers": 2, "agent": {"max_tokens": 24}},
            "workload": {"requests": 4, "arrival": {"kind": "poisson", "rate_per_s": 2}},
        }
    )
    trace = tmp_path / "run.jsonl"
    result = Simulator(scenario, trace_path=trace).run()
    table = one(trace)
    assert table.format == "stairwise" and table.scenario is not None
    assert len(table.served) == 4
    assert all(r.agent_outputs == {"p1": 24, "p2": 24, "aggregator": 24} for r in table.requests)
    assert observed_summary(table) == summarize(result.records)


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("empty.exp", "", "empty file"),
        ("cut.exp", "[{'prompt_len': 5, 'output_len': 3", ":1: not a DistServe"),
        ("nan.json", '{"input_lens": [1], "output_lens": [2], "ttfts": [NaN]}', ":1: NaN"),
        ("cut.json", '{"input_lens": [1, 2], "output_lens": [2', ":1: not valid JSON"),
        ("wrong.json", '{"input_lens": [1], "output_lens": [2]}', "missing ttfts"),
        ("short.json", '{"input_lens": [1, 2], "output_lens": [2], "ttfts": [0.1]}', "output_lens"),
        ("neg.json", '{"input_lens": [1], "output_lens": [2], "ttfts": [-1]}', "ttfts[0]"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, name, content, needle):
    path = tmp_path / name
    path.write_text(content)
    fmt = "distserve" if name.endswith(".exp") else "vllm-bench"
    with pytest.raises(ConfigError, match=r"^" + str(path).replace(".", r"\.")) as error:
        one(path, fmt)
    assert needle in str(error.value)


def test_bad_lines_in_line_oriented_files(tmp_path):
    good = (DATA / "llmservingsim" / "vllm" / "requests.jsonl").read_text().splitlines()
    cases = {
        "cut.jsonl": [*good[:3], good[3][:40]],
        "nan.jsonl": [*good[:2], good[2].replace('"output_toks": ', '"output_toks": NaN, "x": ')],
        "missing.jsonl": [*good[:1], json.dumps({"input_toks": 3})],
    }
    expected = {
        "cut.jsonl": ":4: not a JSON",
        "nan.jsonl": ":3: NaN",
        "missing.jsonl": ":2: missing",
    }
    for name, lines in cases.items():
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        with pytest.raises(ConfigError, match=expected[name]):
            one(path, "llmservingsim")
    csv = tmp_path / "perf.csv"
    rows = (DATA / "splitwise-perf_model-llama2-70b-h100-tp4.csv").read_text().splitlines()
    csv.write_text("\n".join([rows[0], rows[1], rows[2].replace(rows[2].split(",")[7], "nan")]))
    with pytest.raises(ConfigError, match=r"perf\.csv:3: prompt_time is 'nan'"):
        one(csv, "splitwise")
    csv.write_text("\n".join([rows[0], rows[1], ",".join(rows[2].split(",")[:5])]))
    with pytest.raises(ConfigError, match=r"perf\.csv:3: expected 11 columns"):
        one(csv, "splitwise")


def test_a_stairwise_trace_cut_mid_line_is_refused_with_its_line(tmp_path):
    trace = tmp_path / "run.jsonl"
    scenario = scenario_from_dict(
        {
            "servers": {
                "gpu": {"kind": "vllm", "profile": write_profile(tmp_path, vllm_profile())}
            },
            "topology": {"kind": "graph", "agents": {"a": {"steps": 1}}},
            "workload": {"requests": 2},
        }
    )
    Simulator(scenario, trace_path=trace).run()
    lines = trace.read_text().splitlines()
    trace.write_text("\n".join([*lines[:4], lines[4][:25]]) + "\n")
    with pytest.raises(ConfigError, match=r"run\.jsonl:5: not a JSON"):
        one(trace)


def test_format_detection_and_unknown_formats(tmp_path):
    assert detect_format(DATA / "distserve-vllm-100-1-head.exp") == "distserve"
    assert detect_format(DATA / "vllm-bench-detailed.json") == "vllm-bench"
    assert detect_format(DATA / "llmservingsim" / "vllm" / "requests.jsonl") == "llmservingsim"
    assert detect_format(DATA / "splitwise-perf_model-llama2-70b-h100-tp4.csv") == "splitwise"
    odd = tmp_path / "odd.txt"
    odd.write_text("hello\n")
    with pytest.raises(ConfigError, match="cannot tell its format"):
        read_tables([odd])
    with pytest.raises(ConfigError, match="unknown format"):
        read_tables([odd], "csv")
