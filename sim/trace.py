"""The trace: one JSON-lines file per run, the same schema for simulated and live runs.

Line 1 is a header (scenario, its hash, seed, versions, hardware, profiles); then one record
per event, each with ``type`` and ``t`` (seconds since the run started). The record types
below are the schema: ``sim/driver.py`` writes them for the simulator and the live runner
alike, and readers check a record's required fields against the same types.

Records are written (and, live, flushed) as they happen, so an interrupted run keeps
everything it recorded. ``deltas`` hold the streamed pieces of the answer the user sees (the
output agent's calls); other calls keep their token counts in ``call_end``. A live run writes
one ``deltas`` record per piece as it arrives, a simulated run one per call.
"""

import gzip
import json
import platform
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import IO, Any, Literal, NotRequired, TypedDict, cast

from sim.errors import ConfigError, writable_file
from sim.jsonl import json_digest, json_objects

TRACE_SCHEMA = 1  # later additions are optional fields: schema-1 traces of any age still read
Record = dict[str, Any]


class RequestRecord(TypedDict):
    """The user's request is sent; ``prompt_tokens``: the user prompt (query) alone."""

    type: Literal["request"]
    req: int
    t: float
    prompt_tokens: int
    prompt: NotRequired[str]  # live ``--keep-text``: the user prompt's text


class CallRecord(TypedDict):
    """A call is started (``tokens``: exactly this many asked for)."""

    type: Literal["call"]
    req: int
    call: str
    agent: str
    round: int
    server: str
    t: float
    tokens: int
    final: bool  # part of the answer the user sees
    replica: NotRequired[int]  # which copy of the server (0-based)
    # an agent with inputs: tokens of each input's answer its prompt holds (sim/coverage.py)
    read: NotRequired[dict[str, int]]


class UnitRecord(TypedDict):
    """A unit of an agent's answer is released to its consumers."""

    type: Literal["unit"]
    req: int
    agent: str
    unit: int
    tokens: int
    t: float


class DeltasRecord(TypedDict):
    """Streamed pieces of a final call received at times ``t``, carrying ``n`` tokens each."""

    type: Literal["deltas"]
    req: int
    call: str
    t: list[float]
    n: list[int]


CallStatus = Literal["ok", "cancelled", "failed"]


class CallEndRecord(TypedDict):
    type: Literal["call_end"]
    req: int
    call: str
    t: float
    status: CallStatus
    prompt_tokens: int | None  # the whole prompt as the server counted it
    cached_tokens: int | None
    completion_tokens: int
    queued_s: float | None  # simulated only: time waiting for a batch slot
    reason: str  # why it failed or was cancelled
    attempts: NotRequired[int]  # live: 1 + retries before the first token
    # live ``--keep-text``: the prompt as sent (chat messages, or a completion prompt) and
    # the text the call produced
    prompt_text: NotRequired[list[dict[str, str]] | str]
    text: NotRequired[str]


class RequestEndRecord(TypedDict):
    type: Literal["request_end"]
    req: int
    t: float
    ok: bool
    reason: str
    # every agent's answer length as the request ended (what it produced; cut short by a
    # cancel: the length it was to have): the whole answers coverage is a share of
    answer_tokens: NotRequired[dict[str, int]]


class ServerMetricsRecord(TypedDict):
    """Live: a server's /metrics snapshot before or after the run."""

    type: Literal["server_metrics"]
    server: str
    when: Literal["before", "after"]
    t: float
    values: dict[str, float]


class EndRecord(TypedDict):
    type: Literal["end"]
    t: float
    interrupted: bool
    client: NotRequired[dict[str, float]]  # live: the runner's own CPU use and loop lag


class ProbeRecord(TypedDict):
    """Live: the engine probes after the run (the header keeps the ones before), per server:
    ``{profile, before, after, drift_pct}`` (see ``calibration/probe.py``). Appended after
    ``end``: the probe runs once the run is over."""

    type: Literal["probe"]
    t: float
    servers: dict[str, Any]


TraceRecord = (
    RequestRecord
    | CallRecord
    | UnitRecord
    | DeltasRecord
    | CallEndRecord
    | RequestEndRecord
    | ServerMetricsRecord
    | EndRecord
    | ProbeRecord
)
RECORD_TYPES: dict[str, Any] = {  # the TypedDict classes
    "request": RequestRecord,
    "call": CallRecord,
    "unit": UnitRecord,
    "deltas": DeltasRecord,
    "call_end": CallEndRecord,
    "request_end": RequestEndRecord,
    "server_metrics": ServerMetricsRecord,
    "end": EndRecord,
    "probe": ProbeRecord,
}


def missing_field(record: Record) -> str | None:
    """The first required field a record of a known type lacks (None: it has them all)."""
    kind = RECORD_TYPES.get(record["type"])
    if kind is None:
        return None
    required = kind.__required_keys__
    return next((n for n in kind.__annotations__ if n in required and n not in record), None)


def scenario_hash(scenario: dict[str, Any], workload_files: Mapping[str, str] | None = None) -> str:
    """What decides a run's calls, hashed: the scenario without where its servers are
    (endpoint, model, key), which profile simulates them, and live-only settings — so a kept
    live trace can be re-compared after recalibrating, but not with another scenario.
    ``workload_files`` (field -> :func:`sim.scenario.workload_digests`) stand for the
    workload's file paths: an edited prompt file is another scenario, a moved folder not."""
    servers = {
        name: {
            k: v
            for k, v in server.items()
            if k not in ("endpoint", "model", "api_key_env", "profile")
        }
        for name, server in scenario.get("servers", {}).items()
    }
    decisive = {k: v for k, v in scenario.items() if k != "live"} | {"servers": servers}
    if workload_files:
        decisive["workload"] = {**scenario.get("workload", {}), **workload_files}
    return json_digest(decisive)[:16]


@cache
def _own_version() -> str:
    """stairwise's installed version, looked up once: the lookup scans the installed
    distributions, which a sweep would otherwise pay for every simulation."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stairwise")
    except PackageNotFoundError:
        return "dev"


def make_header(
    source: str,
    scenario: dict[str, Any],
    workload_files: Mapping[str, str] | None = None,
    **extra: Any,
) -> Record:
    """``workload_files``: the digests of the workload's files (kept in the header, which
    holds only their paths otherwise, and hashed in their place)."""
    own_version = _own_version()
    files = {"workload_files": dict(workload_files)} if workload_files else {}
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
        "scenario_hash": scenario_hash(scenario, workload_files),
        **files,
        **extra,
    }


class TraceWriter:
    """Keeps every record in memory and, given a path, appends it to the file at once."""

    def __init__(self, header: Record, path: str | Path | None = None, flush: bool = True):
        self.records: list[Record] = []
        self._flush = flush
        self._file: IO[str] | None = None
        if path is not None:
            path = writable_file(path, "trace")
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "w")  # noqa: SIM115 - closed in close()
        self.write(header)

    @property
    def header(self) -> Record:
        return self.records[0]

    def write(self, record: TraceRecord | Record) -> None:
        self.records.append(cast(Record, record))
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
            if self._flush:
                self._file.flush()

    def close(self, t: float, interrupted: bool = False, **extra: Any) -> None:
        self.write({"type": "end", "t": t, "interrupted": interrupted, **extra})  # an EndRecord
        if self._file is not None:
            self._file.close()
            self._file = None


def append_record(path: str | Path, record: TraceRecord) -> None:
    """One more record at the end of a finished trace file."""
    with open(path, "a") as file:
        file.write(json.dumps(record, separators=(",", ":")) + "\n")


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
