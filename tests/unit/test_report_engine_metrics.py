"""Engine metrics: /metrics deltas of a live run and what the call records say."""

from __future__ import annotations

import pytest

from reports.engine_metrics import HIT_RATE, highlights, server_deltas, trace_figures


def snapshot(server, when, values):
    return {"type": "server_metrics", "server": server, "when": when, "t": 0.0, "values": values}


def test_deltas_sum_each_runs_after_minus_before():
    records = [
        {"type": "header"},
        snapshot("a", "before", {"hits": 100, "queries": 400, "gauge": 3, "note": "text"}),
        snapshot("a", "before", {"hits": 999, "queries": 999}),  # a second "before" is ignored
        snapshot("b", "before", {"hits": 5}),  # no "after": no deltas for b
        snapshot("a", "after", {"hits": 700, "queries": 900, "gauge": 1, "new": 7}),
        # a pooled trace: the next repetition, on a server restarted in between
        snapshot("a", "before", {"hits": 0, "queries": 0, "gauge": 0}),
        snapshot("a", "after", {"hits": 808, "queries": 1100, "gauge": 0}),
    ]
    # only metrics in both snapshots of a pair; the text value is not a number
    assert server_deltas(records) == {"a": {"hits": 1408.0, "queries": 1600.0, "gauge": -2.0}}


def test_highlights_sum_labelled_series_and_turn_histograms_into_means():
    deltas = {
        'vllm:prefix_cache_hits_total{model_name="m"}': 1000.0,
        'vllm:prefix_cache_hits_total{model_name="n"}': 408.0,
        "vllm:prefix_cache_queries_total": 1600.0,
        "vllm:request_queue_time_seconds_sum": 3.0,
        "vllm:request_queue_time_seconds_count": 10.0,
        "vllm:request_prefill_time_seconds_sum": 1.0,
        "vllm:request_prefill_time_seconds_count": 0.0,  # no requests: no mean
    }
    picked = highlights(deltas)
    assert picked["prefix-cache hits (tokens)"] == 1408.0
    assert picked[HIT_RATE] == pytest.approx(1408 / 1600)
    assert picked["mean queue time (s)"] == pytest.approx(0.3)
    assert "mean prefill time (s)" not in picked
    assert highlights({}) == {}


def test_trace_figures_count_calls_cache_hits_and_queue_time():
    def end(status, prompt, cached, queued):
        return {"type": "call_end", "req": 0, "call": "x", "t": 1.0, "status": status,
                "prompt_tokens": prompt, "cached_tokens": cached, "queued_s": queued}  # fmt: skip

    figures = trace_figures(
        [
            {"type": "header"},
            end("ok", 100, 60, 0.2),
            end("ok", 50, 0, 0.4),
            end("cancelled", 30, None, None),  # a cancelled call has no usage from the server
            end("failed", 20, None, None),
        ]
    )
    assert figures["calls"] == 4 and figures["cancelled calls"] == 1
    assert figures["failed calls"] == 1
    assert figures["prompt tokens"] == 200 and figures["cached prompt tokens"] == 60
    assert figures[HIT_RATE] == pytest.approx(0.3)
    assert figures["mean queue time (s)"] == pytest.approx(0.3)
    assert trace_figures([{"type": "header"}])[HIT_RATE] is None
