"""Metrics from a trace — one module for simulated and live runs alike.

Definitions follow ``vllm bench serve``, applied to the answer the user sees (the output
agent's calls, joined):

* TTFT: request sent -> first answer token received; E2E: request sent -> last one.
* ITL: gaps between successive streamed deltas of the answer (pooled over requests).
* TPOT: (E2E - TTFT) / (answer tokens - 1); TPS: answer tokens / (E2E - TTFT), the speed
  of the stream once it started. ``tps_e2e``: answer tokens / E2E, the staircase paper's
  "TPS", which counts the wait for the first token too (a different number: never compare
  one with the other).
* Stall: a request's longest gap between successive answer deltas — staircase streaming can
  show the first tokens at once and then pause while the next upstream chunks are made.
* Time to the k-th answer token; system throughput = all tokens of all agents / duration.
* KV peak: the most KV tokens a request's calls hold at once (see :func:`kv_peaks`).

A scenario's ``display`` (a client-side display buffer: a release pace, a first-token hold)
turns the answer's arrival times into the times the user sees each token, here, before any
metric is computed — so a simulated and a live run of the scenario are measured alike.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import accumulate, chain
from typing import Any, NamedTuple

import numpy as np

from sim.coverage import coverage_of
from sim.trace import Record

DEFAULT_K = 32


@dataclass(frozen=True)
class Metric:
    """How a latency metric is named, keyed in the summary and shown (once, for every view)."""

    key: str  # its distribution in the summary: {"mean", "p50", ...}
    label: str  # short: "TTFT"
    title: str  # in a table row: "stall (longest pause)"
    unit: str  # as shown
    scale: float  # shown = summary value x scale


METRICS: dict[str, Metric] = {
    "ttft": Metric("ttft_s", "TTFT", "TTFT", "ms", 1e3),
    "itl": Metric("itl_s", "ITL", "ITL", "ms", 1e3),
    "tpot": Metric("tpot_s", "TPOT", "TPOT", "ms", 1e3),
    "e2e": Metric("e2e_s", "E2E", "E2E", "ms", 1e3),
    "tps": Metric("tps", "TPS", "TPS per request, tokens / (E2E − TTFT)", "tok/s", 1.0),
    # the staircase paper's TPS: it counts the wait for the first token too
    "tps_e2e": Metric(
        "tps_e2e", "TPS over E2E", "TPS over E2E, tokens / E2E (staircase paper)", "tok/s", 1.0
    ),
    "stall": Metric("stall_s", "stall", "stall (longest pause)", "ms", 1e3),
}


def error_pct(predicted: float | None, measured: float | None) -> float | None:
    """100·(predicted − measured)/measured; None when either is missing or measured is 0."""
    if predicted is None or measured is None or measured == 0:
        return None
    return 100.0 * (predicted - measured) / abs(measured)


@dataclass
class RequestMetrics:
    req: int
    ok: bool
    sent: float
    ttft: float | None = None
    e2e: float | None = None
    tokens: int = 0
    tpot: float | None = None
    tps: float | None = None
    tps_e2e: float | None = None  # answer tokens / E2E (the staircase paper's TPS)
    stall: float | None = None
    time_to_k: float | None = None
    # an array, not a list: the summary pools every request's gaps (hundreds each), and
    # turning each into a Python float and back cost a quarter of the summary's time
    itls: np.ndarray = field(default_factory=lambda: np.empty(0))
    reason: str = ""


def stats(values: list[float] | np.ndarray, owned: bool = False) -> dict[str, float | int | None]:
    """``owned``: an array no one else reads, which the percentiles may reorder instead of
    copying (every answer token's gap in a long run: a copy as large as the trace's times)."""
    if len(values) == 0:
        return {"mean": None, "p50": None, "p90": None, "p99": None, "count": 0}
    array = np.asarray(values, dtype=float)
    mean = float(array.mean())  # before the percentiles may reorder it
    p50, p90, p99 = np.percentile(array, [50, 90, 99], overwrite_input=owned)
    return {
        "mean": mean,
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "count": len(values),
    }


def _by_type(records: list[Record]) -> defaultdict[str, list[Record]]:
    """The records grouped by type, each group in trace order: one pass over the trace, where
    each part of the summary once scanned all of it (mostly ``unit`` records) for its types."""
    groups: defaultdict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[record["type"]].append(record)
    return groups


def _header(records: list[Record]) -> Record:
    """The trace's header, or {} for records without one."""
    return records[0] if records and records[0]["type"] == "header" else {}


def answer_deltas(records: list[Record]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per request: the times the user sees the answer's deltas and their token counts, in
    time order — arrival times, or with the scenario's display buffer its release times."""
    groups = _by_type(records)
    answers = _Answers.of(_final_calls(groups["call"]), groups["deltas"], _header(records))
    return {req: answers.of_request(i) for i, req in enumerate(answers.reqs)}


def _final_calls(calls: list[Record]) -> set[tuple[int, str]]:
    """The (req, call) of the calls whose output is the answer the user sees."""
    return {(r["req"], r["call"]) for r in calls if r["final"]}


@dataclass
class _Answers:
    """What :func:`answer_deltas` gives, every request's arrays one after another in flat
    arrays: a dozen numpy calls per request, on a few hundred items each, were the largest
    part of the summary's time; over all requests at once they cost little more than one."""

    reqs: list[int]  # in the order their first answer delta is recorded
    bounds: list[int]  # request i's deltas are [bounds[i], bounds[i + 1])
    times: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(
        cls, final_calls: set[tuple[int, str]], deltas: list[Record], header: Record
    ) -> _Answers:
        answered: dict[int, list[Record]] = defaultdict(list)
        for r in deltas:
            if (r["req"], r["call"]) in final_calls:
                answered[r["req"]].append(r)
        # an array.array reads a list of floats in about half the time numpy takes
        times, bounds = array("d"), [0]
        for records in answered.values():
            for r in records:
                times.fromlist(r["t"])
            bounds.append(len(times))
        counts = _token_counts([r["n"] for records in answered.values() for r in records])
        answers = cls(list(answered), bounds, np.frombuffer(times), counts)
        answers._sort()
        display = header.get("scenario", {}).get("display") or {}
        pace, delay = display.get("pace_tokens_per_s"), display.get("delay_s") or 0.0
        if pace or delay:
            answers._display(pace, delay)
        return answers

    def of_request(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        start, end = self.bounds[i], self.bounds[i + 1]
        return self.times[start:end], self.counts[start:end]

    def _sort(self) -> None:
        """Each request's deltas in time order (stable: as recorded among equal times). They
        nearly always are already, so only the requests found out of order are sorted."""
        in_order = self.times[1:] >= self.times[:-1]  # False at a NaN: sorted, as before
        meet = [at - 1 for at in self.bounds[1:-1] if 0 < at < len(self.times)]
        in_order[meet] = True  # one request's last delta, the next one's first
        unsorted = {bisect_right(self.bounds, at) - 1 for at in np.flatnonzero(~in_order).tolist()}
        for i in sorted(unsorted):
            start, end = self.bounds[i], self.bounds[i + 1]
            order = np.argsort(self.times[start:end], kind="stable")
            self.times[start:end] = self.times[start:end][order]
            self.counts[start:end] = self.counts[start:end][order]

    def _display(self, pace: float | None, delay: float) -> None:
        """Release times in place of arrival times, each request's through the display buffer."""
        shown = [displayed(*self.of_request(i), pace, delay) for i in range(len(self.reqs))]
        self.bounds = [0, *accumulate(len(times) for times, _ in shown)]
        if shown:
            self.times = np.concatenate([times for times, _ in shown])
            self.counts = np.concatenate([counts for _, counts in shown])


def _token_counts(counts: list[list[int]]) -> np.ndarray:
    """The lists' counts in one array; a simulated answer's deltas are one token each, whose
    array of ones is made without numpy converting every item."""
    if all(n.count(1) == len(n) for n in counts):
        return np.ones(sum(map(len, counts)), dtype=int)
    return np.asarray(list(chain.from_iterable(counts)))


def displayed(
    arrivals: np.ndarray, counts: np.ndarray, pace: float | None, delay: float
) -> tuple[np.ndarray, np.ndarray]:
    """One time per token: a display buffer shows token k at max(its arrival, token k−1's
    time + 1/pace), the first token ``delay`` after it arrived. Tokens that arrive faster
    than the pace queue up and are shown through a later pause, which the pause then hides.
    """
    tokens = np.repeat(arrivals.astype(float), counts)
    if not len(tokens):
        return arrivals, counts
    tokens[0] += delay
    step = 1.0 / pace if pace else 0.0
    offsets = step * np.arange(len(tokens))
    return offsets + np.maximum.accumulate(tokens - offsets), np.ones(len(tokens), dtype=int)


def request_metrics(records: list[Record], k: int = DEFAULT_K) -> list[RequestMetrics]:
    groups = _by_type(records)
    answers = _Answers.of(_final_calls(groups["call"]), groups["deltas"], _header(records))
    return _request_metrics(groups, answers, k)


def _request_metrics(
    groups: defaultdict[str, list[Record]], answers: _Answers, k: int
) -> list[RequestMetrics]:
    sent = {r["req"]: r["t"] for r in groups["request"]}
    ends = {r["req"]: r for r in groups["request_end"]}
    index = {req: i for i, req in enumerate(answers.reqs)}
    bounds, all_times = answers.bounds, answers.times
    all_gaps = all_times[1:] - all_times[:-1]  # each request's ITLs, and between requests
    # the tokens received by each delta, counted over all requests in turn: a request's own
    # are these less its base (what the requests before it received), and the delta that
    # brings each request's k-th token is found for all of them in one search
    held = np.zeros(len(answers.counts) + 1, dtype=answers.counts.dtype)
    np.cumsum(answers.counts, out=held[1:])  # no second array of every delta's count
    base = held[bounds[:-1]]
    tokens = (held[bounds[1:]] - base).tolist()
    reached = np.maximum(np.searchsorted(held[1:], base + k), bounds[:-1]).tolist()
    result = []
    for req, t0 in sent.items():
        end = ends.get(req)
        metrics = RequestMetrics(req=req, ok=bool(end and end["ok"]), sent=t0)
        if end is None:
            metrics.reason = "unfinished"
        elif not end["ok"]:
            metrics.reason = end.get("reason", "")
        if metrics.ok and req in index:
            i = index[req]
            first, last = bounds[i], bounds[i + 1]
            times = all_times[first:last]
            metrics.tokens = int(tokens[i])
            metrics.ttft = float(times[0] - t0)
            metrics.e2e = float(times[-1] - t0)
            gaps = all_gaps[first : last - 1]
            metrics.itls = gaps
            metrics.stall = float(gaps.max()) if len(gaps) else 0.0
            decode_time = metrics.e2e - metrics.ttft
            if metrics.tokens > 1 and decode_time > 0:
                metrics.tpot = decode_time / (metrics.tokens - 1)
                metrics.tps = metrics.tokens / decode_time
            if metrics.e2e > 0:
                metrics.tps_e2e = metrics.tokens / metrics.e2e
            if reached[i] < last:
                metrics.time_to_k = float(all_times[reached[i]] - t0)
        elif metrics.ok:
            metrics.ok, metrics.reason = False, "no answer tokens"
        result.append(metrics)
    return result


def summarize(
    records: list[Record], prices: dict[str, Any] | None = None, k: int = DEFAULT_K
) -> dict[str, Any]:
    """The ``--json`` summary of a run (the same shape for ``simulate`` and ``run``)."""
    header = _header(records)
    groups = _by_type(records)
    scenario = header.get("scenario", {})
    prices = prices if prices is not None else scenario.get("prices", {})
    calls = _Calls.of(groups["call"], groups["call_end"])
    final_calls = {(call.req, call.call) for call in calls.started if call.final}
    answers = _Answers.of(final_calls, groups["deltas"], header)
    per_request = _request_metrics(groups, answers, k)
    done = [m for m in per_request if m.ok]
    ok = {m.req for m in done}
    prompt = sum([end.prompt or 0 for end in calls.ended])
    cached = sum([end.cached or 0 for end in calls.ended])
    generated = sum([end.generated or 0 for end in calls.ended])
    starts = [m.sent for m in per_request]
    finish = [r["t"] for r in groups["request_end"]]
    duration = (max(finish) - min(starts)) if finish and starts else 0.0
    usage = (
        (call.server if call is not None else "", end.prompt, end.cached, end.generated)
        for call, end in zip(calls.callers, calls.ended, strict=True)
    )
    cost = _costs(header, usage, duration, prices)
    spans = _kv_spans(calls)
    return {
        "scenario": header.get("name", ""),
        "source": header.get("source", ""),
        "requests": len(done),
        "failed_requests": len(per_request) - len(done),
        "duration_s": duration,
        "ttft_s": stats([m.ttft for m in done if m.ttft is not None]),
        "itl_s": stats(np.concatenate([m.itls for m in done]) if done else [], owned=True),
        "tpot_s": stats([m.tpot for m in done if m.tpot is not None]),
        "e2e_s": stats([m.e2e for m in done if m.e2e is not None]),
        "tps": stats([m.tps for m in done if m.tps is not None]),
        "tps_e2e": stats([m.tps_e2e for m in done if m.tps_e2e is not None]),
        "stall_s": stats([m.stall for m in done if m.stall is not None]),
        "time_to_k_tokens_s": {"k": k, **stats([m.time_to_k for m in done if m.time_to_k])},
        "kv_peak_tokens": stats([_peak_held(s) for req, s in spans.items() if req in ok]),
        "coverage": _coverage(groups["request_end"], calls, ok, k),
        "throughput_tok_s": generated / duration if duration > 0 else None,
        "output_throughput_tok_s": sum(m.tokens for m in done) / duration if duration else None,
        "request_throughput_per_s": len(done) / duration if duration > 0 else None,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "generated_tokens": generated,
        "prefix_cache_hit_ratio": cached / prompt if prompt else 0.0,
        "cost_usd": {
            **cost,
            "per_request": cost["total"] / len(per_request) if per_request else 0.0,
        },
        "agents": _agents(calls, {m.req: _plain(m.sent) for m in per_request}),
        **_client_overhead(groups["end"]),
    }


COVERAGE_VALUES = ("first_token", "k_token", "last_token", "first_token_min_input_tokens")


def _coverage(
    request_ends: list[Record], calls: _Calls, ok: set[int], k: int
) -> dict[str, Any] | None:
    """How much of its inputs' answers the user-facing agent had read behind the answer's
    first, k-th and last tokens (shares, 0–1), and the fewest tokens of one input behind the
    first (``sim/coverage.py``); each over the finished requests, with its minimum. None when
    the answer reads no other agent (one agent; the multistream what-if)."""
    answer_calls = [
        (call.req, call.round, call.read, call.end.generated if call.end is not None else 0)
        for call in calls.started
        if call.final and call.read is not None
    ]
    found = coverage_of(request_ends, answer_calls, k)
    per_request = [v for req, v in found.items() if req in ok]
    if not per_request:
        return None
    result: dict[str, Any] = {"k": k}
    for name in COVERAGE_VALUES:
        values = [v[name] for v in per_request]
        result[name] = {**stats(values), "min": min(values)}
    return result


class _CallEnd(NamedTuple):
    """What the summary reads of a ``call_end`` record."""

    req: int
    call: str
    t: float
    status: str
    prompt: int | None
    cached: int | None
    generated: int


class _Call(NamedTuple):
    """What the summary reads of a ``call`` record, and the call's end."""

    req: int
    call: str
    agent: str
    round: int
    t: float
    server: str
    final: bool
    read: dict[str, int] | None  # what of its inputs' answers its prompt held (coverage)
    end: _CallEnd | None  # None: it did not end


@dataclass
class _Calls:
    """Every call's start and end, paired, each record's fields read once: the records lie
    scattered in memory, so reading a field costs more than the arithmetic on it, and the
    summary's parts once read each several times over and paired the records each its own
    way. Times are Python floats (see :func:`_plain`).

    A call holds its end, rather than the pairs being tuples of their own: every object the
    summary keeps alive brings nearer a full garbage collection, which traverses the whole
    run's records (some 65 ms after the 1,000-request reference run)."""

    started: list[_Call]  # in trace order
    ended: list[_CallEnd]  # in trace order
    callers: list[_Call | None]  # each ended call's call (None: no call record), as ended

    @classmethod
    def of(cls, calls: list[Record], call_ends: list[Record]) -> _Calls:
        ended = [
            _CallEnd(
                r["req"],
                r["call"],
                _plain(r["t"]),
                r["status"],
                r["prompt_tokens"],
                r["cached_tokens"],
                r["completion_tokens"],
            )
            for r in call_ends
        ]
        # a (req, call) recorded twice: its last record, as a dict of the records kept it
        end_of = {(e.req, e.call): e for e in ended}
        started = [
            _Call(
                r["req"],
                r["call"],
                r["agent"],
                r["round"],
                _plain(r["t"]),
                r["server"],
                r["final"],
                r.get("read"),
                end_of.get((r["req"], r["call"])),
            )
            for r in calls
        ]
        start_of = {(c.req, c.call): c for c in started}
        return cls(started, ended, [start_of.get((e.req, e.call)) for e in ended])


def _plain(t: float) -> float:
    """A numpy float as a Python float, the same value: the simulator records times as numpy
    floats, whose arithmetic one value at a time is several times slower. Anything else as
    it is (an int time stays an int)."""
    return float(t) if isinstance(t, float) else t


Span = tuple[float, float, int, int]  # a call's start, end, prompt and output tokens


def kv_peaks(records: list[Record]) -> dict[int, float]:
    """Per request: the most KV-cache tokens its calls hold at once — each running call its
    prompt plus its output so far, the output growing evenly from the call's start to its end.

    These are logical tokens, the same for simulated and live traces: a prefix that two
    concurrent calls share is counted for each (a server's prefix cache may hold it once).
    """
    groups = _by_type(records)
    started = {(r["req"], r["call"]): r["t"] for r in groups["call"]}
    spans: dict[int, list[Span]] = defaultdict(list)
    for end in groups["call_end"]:
        key = (end.get("req"), end.get("call"))
        if key in started:
            prompt, output = end["prompt_tokens"] or 0, end["completion_tokens"] or 0
            spans[end["req"]].append((started[key], end["t"], prompt, output))
    return {req: _peak_held(calls) for req, calls in spans.items()}


def _kv_spans(calls: _Calls) -> dict[int, list[Span]]:
    """:func:`kv_peaks`' spans, per request in the order the calls ended, from the paired
    calls (their times Python floats, for :func:`_peak_held`'s arithmetic)."""
    spans: dict[int, list[Span]] = defaultdict(list)
    for call, end in zip(calls.callers, calls.ended, strict=True):
        if call is not None:
            spans[end.req].append((call.t, end.t, end.prompt or 0, end.generated or 0))
    return spans


def _peak_held(calls: list[Span]) -> float:
    """The maximum of a sum of calls' KV, each held over [start, end) and growing linearly;
    a piecewise-linear sum peaks just before a call ends or just after one starts.

    Quadratic in a request's calls, so the terms are written out rather than a helper called
    per pair, and summed from lists, which Python builds faster than it runs a generator (the
    same sums, in the same order; ``e - s`` taken once per call). Calls that start together
    (a request's proposers) give the same sum after their start: it is taken once."""
    spans = [(s, e, p, o, e - s) for s, e, p, o in calls]
    peak = 0.0
    starts: set[float] = set()
    for start, end, _, _ in calls:
        before_end = sum(
            [
                p + (o * (end - s) / length if e > s else o)
                for s, e, p, o, length in spans
                if s < end <= e or s == e == end
            ]
        )
        peak = max(peak, before_end)
        if start not in starts:
            starts.add(start)
            # a call running at ``start`` has e > s
            after_start = sum(
                [p + o * (start - s) / length for s, e, p, o, length in spans if s <= start < e]
            )
            peak = max(peak, after_start)
    return peak


def _client_overhead(ends: list[Record]) -> dict[str, Any]:
    """Live runs record the runner's own CPU use and event-loop lag in the (last) end record."""
    end = ends[-1] if ends else {}
    return {"client": end["client"]} if "client" in end else {}


def costs(records: list[Record], duration_s: float, prices: dict[str, Any]) -> dict[str, Any]:
    """What a run cost in $, per server and in all: ``tokens`` (each server's tokens at its
    own prices, or at ``prices``, the scenario's, if it states none) and ``gpu`` (a server
    priced per GPU-hour: per_gpu_hour × gpus × replicas × the run's duration — paid whether
    busy or not, so more replicas cost more)."""
    groups = _by_type(records)
    server_of = {(r["req"], r["call"]): r["server"] for r in groups["call"]}
    usage = [
        (
            server_of.get((r["req"], r["call"]), ""),
            r["prompt_tokens"],
            r["cached_tokens"],
            r["completion_tokens"],
        )
        for r in groups["call_end"]
    ]
    return _costs(_header(records), usage, duration_s, prices)


Usage = tuple[str, int | None, int | None, int]  # a call's server, prompt, cached, output


def _costs(
    header: Record, usage: Iterable[Usage], duration_s: float, prices: dict[str, Any]
) -> dict[str, Any]:
    """:func:`costs` from each ended call's usage, in trace order."""
    servers = header.get("scenario", {}).get("servers", {})
    used: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # prompt, cached, generated
    for server, prompt, cached, generated in usage:
        counts = used[server]
        counts[0] += prompt or 0
        counts[1] += cached or 0
        counts[2] += generated or 0
    per_server: dict[str, dict[str, float]] = {}
    for name in {*servers, *used}:
        server = servers.get(name, {})
        own = server.get("prices") or {}
        hourly = own.get("per_gpu_hour")
        gpu_hours = 0.0
        if hourly is not None:
            gpu_hours = (own.get("gpus") or 1) * server.get("replicas", 1) * duration_s / 3600
        per_server[name] = {
            "tokens": _token_cost(used.get(name, [0, 0, 0]), own or prices),
            "gpu": (hourly or 0.0) * gpu_hours,
            "gpu_hours": gpu_hours,
        }
    tokens = sum(c["tokens"] for c in per_server.values())
    gpu = sum(c["gpu"] for c in per_server.values())
    named = {name: cost for name, cost in sorted(per_server.items()) if name}
    return {"total": tokens + gpu, "tokens": tokens, "gpu": gpu, "servers": named}


def _token_cost(counts: list[int], prices: dict[str, Any]) -> float:
    """$ for (prompt, cached, generated) tokens at per-million prices."""
    prompt, cached, generated = counts
    input_price = prices.get("input_per_mtok") or 0.0
    cached_price = prices.get("cached_input_per_mtok")
    cached_price = input_price if cached_price is None else cached_price
    output_price = prices.get("output_per_mtok") or 0.0
    return float(
        ((prompt - cached) * input_price + cached * cached_price + generated * output_price) / 1e6
    )


def _agents(calls: _Calls, sent: dict[int, float]) -> dict[str, dict[str, Any]]:
    grouped: dict[str, list[_Call]] = defaultdict(list)
    for call in calls.started:
        grouped[call.agent].append(call)
    result = {}
    for agent, started in grouped.items():
        finished = [call for call in started if call.end is not None]
        ends = [call.end for call in started if call.end is not None]
        result[agent] = {
            "calls": len(started),
            "failed_calls": [e.status for e in ends].count("failed"),
            "prompt_tokens_mean": _mean([e.prompt for e in ends]),
            "cached_tokens_mean": _mean([e.cached for e in ends]),
            "generated_tokens": sum([e.generated or 0 for e in ends]),
            "first_start_s_mean": _mean([c.t - sent[c.req] for c in started if c.round == 1]),
            "last_end_s_mean": _mean(_last_end_per_request(ends, sent)),
            "call_s_mean": _mean([e.t - c.t for c, e in zip(finished, ends, strict=True)]),
        }
    return result


def _last_end_per_request(ends: list[_CallEnd], sent: dict[int, float]) -> list[float]:
    last: dict[int, float] = {}
    for end in ends:
        req = end.req
        held, value = last.get(req, 0.0), end.t - sent[req]
        last[req] = value if value > held else held  # max(held, value), without the call
    return list(last.values())


def _mean(values: list[Any]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None
