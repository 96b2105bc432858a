"""Context coverage: how much of its inputs' answers an aggregating agent had read.

Staircase streaming trades quality for latency in one place: an aggregator round starts
from the head of its inputs' answers (a 4-token first chunk, or none at all of the inputs
redundancy skips). That is a protocol fact, the same simulated and live: the driver records
on every ``call`` record which tokens of each input its prompt held (``read``, from
:func:`tokens_read`) and on ``request_end`` every agent's answer length (``answer_tokens``),
and :func:`request_coverage` reads them back per request (``sim/metrics.py`` sums them
up as the summary's ``coverage``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable

from sim.protocol import Message
from sim.trace import Record


def tokens_read(messages: Iterable[Message], inputs: Iterable[str]) -> dict[str, int]:
    """Per input agent: how many tokens of its answer the prompt holds (its spans start at 0
    and are contiguous, so the furthest end is the count; 0 for an input not shown yet)."""
    read = dict.fromkeys(inputs, 0)
    for message in messages:
        for span in message.parts:
            stream: tuple[str, ...] = span.stream  # type: ignore[assignment]
            if stream[0] == "output" and stream[1] in read:
                read[stream[1]] = max(read[stream[1]], span.end)
    return read


def request_coverage(records: list[Record], k: int) -> dict[int, dict[str, float]]:
    """Per finished request whose trace says what its answer's calls read: the share of the
    inputs' whole answers the user-facing agent had read when it wrote the answer's first
    token, its ``k``-th token and its last token, and the fewest tokens of any one input
    behind the first token (0: an input skipped by redundancy or not yet streaming).

    An input's whole answer is its length as the run ended: what it produced, or, cut short
    by a cancel, the length it was to have (the simulator's drawn length; a live answer left
    to stop on its own: its ``max_tokens``, an upper bound)."""
    produced = {
        (r["req"], r["call"]): r["completion_tokens"] for r in records if r["type"] == "call_end"
    }
    answer_calls = [
        (r["req"], r["round"], r["read"], produced.get((r["req"], r["call"]), 0))
        for r in records
        if r["type"] == "call" and r["final"] and "read" in r
    ]
    return coverage_of([r for r in records if r["type"] == "request_end"], answer_calls, k)


AnswerCall = tuple[int, int, dict[str, int], int]  # req, round, read, tokens produced


def coverage_of(
    request_ends: list[Record], answer_calls: list[AnswerCall], k: int
) -> dict[int, dict[str, float]]:
    """:func:`request_coverage` from the trace's ``request_end`` records and the answer's
    calls that say what they read, in trace order, each with the tokens it produced (0: it
    did not end) — the summary has them at hand, read from the records once."""
    lengths = {r["req"]: r.get("answer_tokens") for r in request_ends}
    by_request: dict[int, list[AnswerCall]] = defaultdict(list)
    for call in answer_calls:
        by_request[call[0]].append(call)
    result: dict[int, dict[str, float]] = {}
    for req, calls in by_request.items():
        whole = lengths.get(req)
        if not whole:
            continue
        calls.sort(key=lambda call: call[1])  # by round, stable
        total = sum([whole[name] for name in calls[0][2]])
        if total <= 0:
            continue
        shares, ends, written = [], [], 0
        for _, _, read, produced in calls:
            written += produced
            ends.append(written)
            shares.append(sum(read.values()) / total)
        if written < 1:
            continue
        first = _writer_of(ends, 1)
        result[req] = {
            "first_token": shares[first],
            "k_token": shares[_writer_of(ends, k)],
            "last_token": shares[_writer_of(ends, written)],
            "first_token_min_input_tokens": float(min(calls[first][2].values())),
        }
    return result


def _writer_of(ends: list[int], token: int) -> int:
    """Which call wrote the answer's ``token``-th token, given where each call's output ends
    (which never decrease; the last call if the answer is shorter)."""
    return min(bisect_left(ends, token), len(ends) - 1)
