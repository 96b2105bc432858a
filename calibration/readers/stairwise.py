"""stairwise's own traces (live or simulated; one schema, see ``sim.trace``).

A request row describes the answer the user saw (the output agent's calls, joined), as the
metrics module does. The trace's scenario and per-agent answer lengths are kept too, so a
replay can re-run the very same scenario with the measured lengths and send times.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from calibration.readers.common import (
    count,
    error,
    field,
    number,
    parse_selection,
    read_text,
)
from calibration.table import RequestRow, TraceTable
from sim.trace import Record, parse_trace_lines

Where = tuple[Path, int]


def read(path: Path, selection: dict[str, str]) -> TraceTable:
    parse_selection(selection, {}, str(path))
    lines = read_text(path, "stairwise trace").splitlines()
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    records = list(parse_trace_lines(lines, str(path)))
    where = {id(r): (path, n) for r, (n, _) in zip(records, numbered, strict=True)}
    header = records[0]
    rows = _requests(records, where)
    if not rows:
        raise error(path, None, "trace has no requests")
    origin = min(r.arrival_s for r in rows if r.arrival_s is not None)
    rows = [_shift(r, origin) for r in rows]
    scenario = header.get("scenario")
    return TraceTable(
        source=str(path),
        format="stairwise",
        requests=rows,
        token_times=True,
        settings={
            "trace_source": header.get("source", ""),
            **header.get("versions", {}),
            **({"local_server": header["local_server"]} if "local_server" in header else {}),
        },
        scenario=scenario if isinstance(scenario, dict) else None,
        profiles=header.get("profiles") or {},
        server_totals=_server_totals(records),
    )


def _shift(row: RequestRow, origin: float) -> RequestRow:
    return replace(row, arrival_s=None if row.arrival_s is None else row.arrival_s - origin)


def _requests(records: list[Record], where: dict[int, tuple[Path, int]]) -> list[RequestRow]:
    final_calls: set[tuple[Any, Any]] = set()
    sent: dict[Any, tuple[float, int | None]] = {}
    ended: dict[Any, bool] = {}
    deltas: dict[Any, list[tuple[float, int]]] = defaultdict(list)
    usage: dict[Any, list[Record]] = defaultdict(list)
    agent_of: dict[tuple[Any, Any], str] = {}
    for record in records:
        at = where[id(record)]
        kind = record["type"]
        if kind == "request":
            req = field(record, "req", at)
            sent[req] = (number(field(record, "t", at), at, "t"), _query(record, at))
        elif kind == "call":
            key = (field(record, "req", at), field(record, "call", at))
            agent_of[key] = str(field(record, "agent", at))
            if field(record, "final", at):
                final_calls.add(key)
        elif kind == "deltas":
            key = (field(record, "req", at), field(record, "call", at))
            if key in final_calls:
                deltas[key[0]] += _pieces(record, at)
        elif kind == "call_end":
            usage[field(record, "req", at)].append(record)
        elif kind == "request_end":
            ended[field(record, "req", at)] = bool(field(record, "ok", at))
    return [
        _row(
            req,
            t0,
            query,
            sorted(deltas.get(req, [])),
            usage[req],
            agent_of,
            final_calls,
            ended.get(req, False),
        )
        for req, (t0, query) in sent.items()
    ]


def _query(record: Record, at: Where) -> int | None:
    value = record.get("prompt_tokens")
    return None if value is None else count(value, at, "prompt_tokens")


def _pieces(record: Record, at: Where) -> list[tuple[float, int]]:
    times, counts = field(record, "t", at), field(record, "n", at)
    if not isinstance(times, list) or not isinstance(counts, list) or len(times) != len(counts):
        raise error(at[0], at[1], "deltas need lists t and n of the same length")
    return [
        (number(t, at, "deltas t"), count(n, at, "deltas n"))
        for t, n in zip(times, counts, strict=True)
    ]


def _row(
    req: Any,
    t0: float,
    query: int | None,
    pieces: list[tuple[float, int]],
    call_ends: list[Record],
    agent_of: dict[tuple[Any, Any], str],
    final_calls: set[tuple[Any, Any]],
    ok: bool,
) -> RequestRow:
    final_ends = [e for e in call_ends if (req, e["call"]) in final_calls]
    prompt = max((e.get("prompt_tokens") or 0 for e in final_ends), default=0)
    cached = max((e.get("cached_tokens") or 0 for e in final_ends), default=0)
    times = np.array([t for t, _ in pieces])
    tokens = sum(n for _, n in pieces)
    served = ok and len(pieces) > 0
    return RequestRow(
        arrival_s=t0,
        prompt_tokens=int(prompt or (query or 0)),
        output_tokens=tokens,
        ttft_s=float(times[0] - t0) if served else None,
        e2e_s=float(times[-1] - t0) if served else None,
        ok=served,
        cached_tokens=int(cached),
        itls_s=tuple(np.diff(times).tolist()) if served else None,
        query_tokens=query,
        agent_outputs=_agent_outputs(req, call_ends, agent_of),
    )


def _agent_outputs(
    req: Any, call_ends: list[Record], agent_of: dict[tuple[Any, Any], str]
) -> dict[str, int]:
    """Answer length per agent whose answer ended normally (others keep their max_tokens)."""
    produced: dict[str, int] = defaultdict(int)
    finished: dict[str, bool] = {}
    for end in call_ends:
        agent = agent_of.get((req, end["call"]))
        if agent is None:
            continue
        produced[agent] += int(end.get("completion_tokens") or 0)
        finished[agent] = end.get("status") == "ok"
    return {agent: n for agent, n in produced.items() if finished[agent] and n > 0}


def _server_totals(records: list[Record]) -> dict[str, float]:
    """Counter and histogram sums over the run: the last "after" snapshot minus the first
    "before" one, summed over servers (live traces record both around the run)."""
    before: dict[str, dict[str, float]] = {}
    after: dict[str, dict[str, float]] = {}
    for record in records:
        if record["type"] != "server_metrics" or not isinstance(record.get("values"), dict):
            continue
        target = before if record.get("when") == "before" else after
        if record.get("when") == "before" and record.get("server") in before:
            continue
        target[record.get("server", "")] = {
            k: float(v) for k, v in record["values"].items() if isinstance(v, int | float)
        }
    totals: dict[str, float] = defaultdict(float)
    for server, start in before.items():
        for name, value in after.get(server, {}).items():
            if name in start:
                totals[name] += value - start[name]
    return dict(totals)
