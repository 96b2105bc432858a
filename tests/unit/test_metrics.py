"""Metric definitions on hand-written traces (vllm bench serve semantics + stall)."""

from __future__ import annotations

import pytest

from sim.metrics import summarize
from sim.trace import make_header, pool_runs


def trace(deltas_t, deltas_n, calls_extra=(), display=None):
    header = make_header(
        "live",
        {
            "name": "hand",
            "prices": {"input_per_mtok": 1.0, "output_per_mtok": 2.0, "cached_input_per_mtok": 0.5},
            **({"display": display} if display else {}),
        },
    )
    return [
        header,
        {"type": "request", "req": 0, "t": 1.0, "prompt_tokens": 10},
        {
            "type": "call",
            "req": 0,
            "call": "p1#1",
            "agent": "p1",
            "round": 1,
            "server": "s",
            "t": 1.0,
            "tokens": 50,
            "final": False,
            "prompt_tokens": 20,
        },
        {
            "type": "call",
            "req": 0,
            "call": "agg#1",
            "agent": "agg",
            "round": 1,
            "server": "s",
            "t": 1.2,
            "tokens": 5,
            "final": True,
            "prompt_tokens": 100,
        },
        {"type": "deltas", "req": 0, "call": "agg#1", "t": deltas_t, "n": deltas_n},
        {
            "type": "call_end",
            "req": 0,
            "call": "p1#1",
            "t": 2.0,
            "status": "ok",
            "prompt_tokens": 20,
            "cached_tokens": 0,
            "completion_tokens": 50,
            "queued_s": 0.0,
        },
        {
            "type": "call_end",
            "req": 0,
            "call": "agg#1",
            "t": 4.0,
            "status": "ok",
            "prompt_tokens": 100,
            "cached_tokens": 60,
            "completion_tokens": sum(deltas_n),
            "queued_s": 0.0,
        },
        {"type": "request_end", "req": 0, "t": 4.0, "ok": True, "reason": ""},
        *calls_extra,
    ]


def test_latency_definitions():
    s = summarize(trace([1.5, 1.6, 3.6, 3.7, 4.0], [1, 1, 1, 1, 1]), k=3)
    assert s["ttft_s"]["p50"] == pytest.approx(0.5)
    assert s["e2e_s"]["p50"] == pytest.approx(3.0)
    assert s["tpot_s"]["p50"] == pytest.approx(2.5 / 4)
    assert s["tps"]["p50"] == pytest.approx(5 / 2.5)
    assert s["tps_e2e"]["p50"] == pytest.approx(5 / 3.0)  # the staircase paper's: over E2E
    assert s["stall_s"]["p50"] == pytest.approx(2.0)
    assert s["itl_s"]["count"] == 4 and s["itl_s"]["mean"] == pytest.approx(2.5 / 4)
    assert s["time_to_k_tokens_s"]["p50"] == pytest.approx(2.6)


def test_a_delta_carrying_several_tokens_is_one_gap():
    s = summarize(trace([1.5, 2.5], [4, 1]), k=4)
    assert s["itl_s"]["count"] == 1
    assert s["tpot_s"]["p50"] == pytest.approx(1.0 / 4)
    assert s["time_to_k_tokens_s"]["p50"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("display", "ttft", "gaps"),
    [
        (None, 0.5, [1.5]),  # 4 tokens in one delta at 1.5, one more at 3.0
        # shown every 0.25 s: the burst lasts until 2.25, then the last token waits for 3.0
        ({"pace_tokens_per_s": 4}, 0.5, [0.25, 0.25, 0.25, 0.75]),
        # held 0.5 s first, the burst fills the pause: an even stream, TTFT 0.5 s later
        ({"pace_tokens_per_s": 4, "delay_s": 0.5}, 1.0, [0.25] * 4),
    ],
)
def test_a_display_buffer_evens_the_stream_the_user_sees(display, ttft, gaps):
    s = summarize(trace([1.5, 3.0], [4, 1], display=display))
    assert s["ttft_s"]["p50"] == pytest.approx(ttft)
    assert s["e2e_s"]["p50"] == pytest.approx(2.0)  # sent at 1.0, the last token at 3.0
    assert s["itl_s"]["count"] == len(gaps)
    assert s["itl_s"]["mean"] == pytest.approx(sum(gaps) / len(gaps))
    assert s["stall_s"]["p50"] == pytest.approx(max(gaps))


def test_throughput_cache_ratio_and_cost():
    s = summarize(trace([1.5, 4.0], [1, 1]))
    assert s["generated_tokens"] == 52
    assert s["throughput_tok_s"] == pytest.approx(52 / 3.0)
    assert s["prefix_cache_hit_ratio"] == pytest.approx(60 / 120)
    expected = (60 * 1.0 + 60 * 0.5 + 52 * 2.0) / 1e6
    assert s["cost_usd"]["total"] == pytest.approx(expected)
    assert s["agents"]["agg"]["first_start_s_mean"] == pytest.approx(0.2)


def test_failed_and_unfinished_requests_are_counted_but_not_measured():
    records = trace([1.5, 4.0], [1, 1])
    records[-1] = {"type": "request_end", "req": 0, "t": 4.0, "ok": False, "reason": "agg: 500"}
    records.append({"type": "request", "req": 1, "t": 2.0, "prompt_tokens": 10})
    s = summarize(records)
    assert (s["requests"], s["failed_requests"]) == (0, 2)
    assert s["ttft_s"]["count"] == 0 and s["ttft_s"]["p50"] is None


def test_pooled_repetitions_keep_every_request_and_all_the_time():
    first = trace([1.5, 2.5, 3.0], [1, 2, 2])
    second = trace([1.4, 3.4, 3.5], [1, 2, 2])
    pooled = pool_runs([first, second])
    assert [r["type"] for r in pooled].count("header") == 1
    assert sorted({r["req"] for r in pooled if "req" in r}) == [0, 1]
    # the second run starts where the first ended (t = 4.0)
    again = [r for r in pooled if r.get("req") == 1]
    assert again[0]["t"] == pytest.approx(5.0)
    assert next(r for r in again if r["type"] == "deltas")["t"] == pytest.approx([5.4, 7.4, 7.5])
    one, two, both = summarize(first), summarize(second), summarize(pooled)
    assert both["requests"] == 2
    assert both["ttft_s"]["mean"] == pytest.approx(
        (one["ttft_s"]["mean"] + two["ttft_s"]["mean"]) / 2
    )
    assert both["stall_s"]["p50"] == pytest.approx(1.5)  # 1.0 s and 2.0 s pauses
    # 55 + 55 tokens, from the first request sent to the last one done (the lead-in counts)
    assert both["throughput_tok_s"] == pytest.approx(110 / (8.0 - 1.0))


def test_deltas_recorded_out_of_order_are_measured_in_time_order():
    """Each request's deltas are sorted by time on their own, whatever order they came in."""
    in_order = pool_runs(
        [trace([1.5, 1.6, 3.6, 3.7, 4.0], [1, 2, 1, 1, 1]), trace([1.4, 3.4], [1, 1])]
    )
    shuffled = pool_runs(
        [trace([3.6, 1.6, 4.0, 1.5, 3.7], [1, 2, 1, 1, 1]), trace([3.4, 1.4], [1, 1])]
    )
    expected, found = summarize(in_order, k=3), summarize(shuffled, k=3)
    for key in ("ttft_s", "e2e_s", "itl_s", "stall_s", "tpot_s", "time_to_k_tokens_s"):
        assert found[key] == expected[key], key
    assert expected["stall_s"]["mean"] == pytest.approx((2.0 + 2.0) / 2)


def test_an_answer_with_no_deltas_under_a_display_buffer_is_a_failed_request():
    """A final call that failed before its first token records an empty ``deltas``."""
    records = trace([], [], display={"pace_tokens_per_s": 4})
    records[-1] = {"type": "request_end", "req": 0, "t": 4.0, "ok": False, "reason": "agg: 500"}
    s = summarize(records)
    assert (s["requests"], s["failed_requests"]) == (0, 1)
