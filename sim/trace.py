"""The trace: one JSON-lines file per run, the same schema for simulated and live runs.

Line 1 is a header (scenario, seed, versions, hardware, profiles); then one record per event,
each with ``type`` and ``t`` (seconds since the run started):

* ``request``      {req, t, prompt_tokens}                      — the user's request is sent
* ``call``         {req, call, agent, round, server, t, tokens, final, prompt_tokens}
* ``unit``         {req, agent, unit, tokens, t}                  — a unit released downstream
* ``deltas``       {req, call, t: [..], n: [..]}                 — streamed pieces received
* ``call_end``     {req, call, t, status, prompt_tokens, cached_tokens, completion_tokens,
                    queued_s, reason, attempts?}                  — status ok|cancelled|failed
* ``request_end``  {req, t, ok, reason}
* ``server_metrics`` {server, when, values}                      — live: /metrics snapshots
* ``end``          {t, interrupted, client?}                    — live: the runner's overhead

Records are written (and flushed) as they happen, so an interrupted run keeps everything it
recorded. ``deltas`` may batch several pieces; a simulated trace records the deltas of the
final answer only (other calls keep their token counts in ``call_end``).
"""

from __future__ import annotations

import gzip
import json
import platform
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sim.errors import ConfigError
from sim.jsonl import json_objects

TRACE_SCHEMA = 1
Record = dict[str, Any]


def make_header(source: str, scenario: dict[str, Any], **extra: Any) -> Record:
    from importlib.metadata import PackageNotFoundError, version

    try:
        own_version = version("stairwise")
    except PackageNotFoundError:
        own_version = "dev"
    return {
        "type": "header",
        "schema": TRACE_SCHEMA,
        "source": source,
        "name": scenario.get("name", ""),
        "seed": scenario.get("seed"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"stairwise": own_version, "python": platform.python_version()},
        "hardware": {"machine": platform.machine(), "system": platform.system()},
        "scenario": scenario,
        **extra,
    }


class TraceWriter:
    """Keeps every record in memory and, given a path, appends it to the file at once."""

    def __init__(self, header: Record, path: str | Path | None = None, flush: bool = True):
        self.records: list[Record] = []
        self._flush = flush
        self._file: IO[str] | None = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w")  # noqa: SIM115 - closed in close()
        self.write(header)

    @property
    def header(self) -> Record:
        return self.records[0]

    def write(self, record: Record) -> None:
        self.records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            if self._flush:
                self._file.flush()

    def close(self, t: float, interrupted: bool = False, **extra: Any) -> None:
        self.write({"type": "end", "t": t, "interrupted": interrupted, **extra})
        if self._file is not None:
            self._file.close()
            self._file = None


def read_trace(path: str | Path) -> list[Record]:
    """Records of a trace file; a malformed line is an error naming the file and line."""
    path = Path(path)
    try:
        lines = read_text(path).splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a text or gzip file"
        raise ConfigError(f"{path}: cannot read trace ({reason})") from None
    records = list(parse_trace_lines(lines, str(path)))
    if not records:
        raise ConfigError(f"{path}: empty trace")
    return records


def read_text(path: Path) -> str:
    """A text file, or a gzip-compressed one (``.gz``): traces compress about 7 to 1."""
    if path.suffix == ".gz":
        with gzip.open(path, "rt") as file:
            return file.read()
    return path.read_text()


def parse_trace_lines(lines: Iterable[str], source: str) -> Iterable[Record]:
    for number, record in json_objects(lines, source, "trace record"):
        if "type" not in record:
            raise ConfigError(f"{source}:{number}: a trace record needs a 'type'")
        if number == 1 and record["type"] != "header":
            raise ConfigError(f"{source}:1: not a stairwise trace (no header)")
        if number == 1 and record.get("schema") != TRACE_SCHEMA:
            raise ConfigError(
                f"{source}:1: trace schema {record.get('schema')} is not {TRACE_SCHEMA}"
            )
        yield record


def pool_runs(runs: list[list[Record]]) -> list[Record]:
    """Repetitions of one scenario as one trace: each run placed after the previous one ends
    (times shifted, request ids renumbered) under the first run's header, so percentiles pool
    every request and throughput divides all the tokens by all the runs' time."""
    pooled: list[Record] = []
    shift_t, shift_req = 0.0, 0
    for records in runs:
        if not pooled and records and records[0]["type"] == "header":
            pooled.append(records[0])
        latest_t, latest_req = shift_t, shift_req - 1
        for record in records:
            if record["type"] == "header":
                continue
            moved = dict(record)
            if "t" in record:
                times = record["t"] if isinstance(record["t"], list) else [record["t"]]
                shifted = [t + shift_t for t in times]
                moved["t"] = shifted if isinstance(record["t"], list) else shifted[0]
                latest_t = max([latest_t, *shifted])
            if "req" in record:
                moved["req"] = record["req"] + shift_req
                latest_req = max(latest_req, moved["req"])
            pooled.append(moved)
        shift_t, shift_req = latest_t, latest_req + 1
    return pooled
