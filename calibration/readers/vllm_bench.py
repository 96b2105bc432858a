"""``vllm bench serve --save-result --save-detailed`` result JSON.

Per-request lists, index-aligned: ``input_lens``, ``output_lens``, ``ttfts``, ``itls`` (gaps
between streamed chunks), ``start_times`` (client ``perf_counter`` at send; newer vLLM),
``latencies`` and ``errors``. Without ``start_times`` the send times are unknown; the table
then records the run's ``max_concurrency`` so a replay can re-create the closed loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calibration.readers.common import count, error, load_json, number, parse_selection
from calibration.table import RequestRow, TraceTable

REQUIRED = ("input_lens", "output_lens", "ttfts")
OPTIONAL = ("itls", "start_times", "latencies", "errors")


def read(path: Path, selection: dict[str, str]) -> TraceTable:
    parse_selection(selection, {}, str(path))
    data = load_json(path, "vllm bench result")
    if not isinstance(data, dict) or any(k not in data for k in REQUIRED):
        missing = [k for k in REQUIRED if not isinstance(data, dict) or k not in data]
        raise error(
            path,
            None,
            f"not a detailed vllm bench result (missing {', '.join(missing)}; "
            "run `vllm bench serve` with --save-result --save-detailed)",
        )
    columns = _columns(path, data)
    n = len(columns["input_lens"])
    if n == 0:
        raise error(path, None, "the result has no requests")
    starts = columns.get("start_times")
    origin = min(number(s, (path, None), "start_times") for s in starts) if starts else 0.0
    rows = [_row(path, columns, i, origin) for i in range(n)]
    settings = {
        k: data[k]
        for k in ("backend", "model_id", "max_concurrency", "request_rate")
        if data.get(k) is not None
    }
    if not starts and not data.get("max_concurrency"):
        settings["arrivals_unknown"] = True
    return TraceTable(
        source=str(path),
        format="vllm-bench",
        requests=rows,
        token_times="itls" in columns,
        settings=settings,
    )


def _columns(path: Path, data: dict[str, Any]) -> dict[str, list[Any]]:
    columns = {k: data[k] for k in (*REQUIRED, *OPTIONAL) if data.get(k) is not None}
    n = len(columns["input_lens"]) if isinstance(columns["input_lens"], list) else -1
    for key, values in columns.items():
        if not isinstance(values, list) or len(values) != n:
            raise error(path, None, f"{key} must be a list as long as input_lens ({n})")
    return columns


def _row(path: Path, columns: dict[str, list[Any]], i: int, origin: float) -> RequestRow:
    at = (path, None)
    failed = bool(columns.get("errors", [""] * (i + 1))[i])
    prompt = count(columns["input_lens"][i], at, f"input_lens[{i}]")
    output = count(columns["output_lens"][i], at, f"output_lens[{i}]")
    ttft = number(columns["ttfts"][i], at, f"ttfts[{i}]")
    itls = (
        tuple(number(g, at, f"itls[{i}]") for g in columns["itls"][i])
        if "itls" in columns
        else None
    )
    if "latencies" in columns:
        e2e = number(columns["latencies"][i], at, f"latencies[{i}]")
    else:
        e2e = ttft + sum(itls or ())
    start = columns.get("start_times")
    return RequestRow(
        arrival_s=number(start[i], at, f"start_times[{i}]") - origin if start else None,
        prompt_tokens=prompt,
        output_tokens=output,
        ttft_s=None if failed else ttft,
        e2e_s=None if failed else e2e,
        ok=not failed and output > 0,
        itls_s=itls,
    )
