"""DistServe's vLLM baseline data (OPT-13B on one A100-80GB, a vLLM 0.2.3 fork).

* ``vllm-<N>-<rate>.exp``: line 1 is a Python-literal list of per-request dicts (prompt_len,
  output_len, issue_time, first_token_time, complete_time, …), then a summary block.
* ``profiler-*.vllm.json`` (format ``distserve-profile``): DistServe's own fitted step-time
  coefficients in ms — prefill = a + b·Σtokens + c·Σlen², decode = a + b·Σcontext + c·batch
  (below / above a batch threshold). They are expanded into step rows on a grid inside the
  small-batch regime, so the ordinary direct fit turns them into a StepCost.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from calibration.readers.common import (
    count,
    error,
    field,
    load_json,
    number,
    parse_selection,
    read_text,
    require_selected,
)
from calibration.table import RequestRow, StepRow, TraceTable

ENGINE = {
    "engine": "vllm",
    "engine_version": "0.2.3 (DistServe fork)",
    "scheduler": "prefill_first",
}
KEYS = ("prompt_len", "output_len", "issue_time", "first_token_time", "complete_time")
PROFILE_SELECT = {"model": "e.g. facebook/opt-13b", "tp": "tensor-parallel degree"}


def read(path: Path, selection: dict[str, str]) -> TraceTable:
    parse_selection(selection, {}, str(path))
    first_line = read_text(path, "DistServe .exp file").splitlines()[0]
    try:
        requests = ast.literal_eval(first_line)
    except (SyntaxError, ValueError) as exc:
        raise error(path, 1, f"not a DistServe .exp request list (truncated? {exc})") from None
    if not isinstance(requests, list) or not requests:
        raise error(path, 1, "not a DistServe .exp request list (expected a non-empty list)")
    where = (path, 1)
    for i, request in enumerate(requests):
        if not isinstance(request, dict):
            raise error(path, 1, f"request {i} is not a dict")
        for key in KEYS:
            number(field(request, key, where), where, f"request {i} {key}")
    origin = min(float(r["issue_time"]) for r in requests)
    rate = re.fullmatch(r"vllm-(\d+)-([\d.]+)\.exp", path.name)
    return TraceTable(
        source=str(path),
        format="distserve",
        requests=[_row(r, origin, i, path) for i, r in enumerate(requests)],
        settings={**ENGINE, **({"rate_per_s": float(rate.group(2))} if rate else {})},
    )


def _row(request: dict[str, Any], origin: float, i: int, path: Path) -> RequestRow:
    issued = float(request["issue_time"])
    first, done = float(request["first_token_time"]), float(request["complete_time"])
    if not issued <= first <= done:
        raise error(path, 1, f"request {i}: times out of order (issue <= first token <= complete)")
    return RequestRow(
        arrival_s=issued - origin,
        prompt_tokens=count(request["prompt_len"], (path, 1), f"request {i} prompt_len", 1),
        output_tokens=count(request["output_len"], (path, 1), f"request {i} output_len", 1),
        ttft_s=first - issued,
        e2e_s=done - issued,
    )


def read_profile(path: Path, selection: dict[str, str]) -> TraceTable:
    parse_selection(selection, PROFILE_SELECT, str(path))
    data = load_json(path, "DistServe profiler JSON")
    if not isinstance(data, dict):
        raise error(path, None, "not a DistServe profiler JSON (expected {model: {tp: ...}})")
    model = selection.get("model", next(iter(data), ""))
    tp = selection.get("tp", "1")
    entry = data.get(model, {}).get(tp) if isinstance(data.get(model), dict) else None
    choices = {"model": set(data), "tp": {t for m in data.values() for t in m}}
    require_selected([entry] if entry else [], choices, {"model": model, "tp": tp}, str(path))
    assert isinstance(entry, dict)
    return TraceTable(
        source=str(path),
        format="distserve-profile",
        steps=_coefficient_rows(entry, path),
        settings={**ENGINE, "model": model, "tensor_parallel": int(tp)},
    )


def _coefficient_rows(entry: dict[str, Any], path: Path) -> list[StepRow]:
    """DistServe's model evaluated on a grid: one prefill step of ``batch`` prompts of
    ``length`` tokens, one decode step of ``batch`` sequences at ``context`` tokens each."""
    where = (path, None)
    prefill = [
        number(v, where, "prefill coefficient", -1e9) for v in field(entry, "prefill", where)
    ]
    decode = [
        number(v, where, "decoding_smallbs coefficient", -1e9)
        for v in field(entry, "decoding_smallbs", where)
    ]
    threshold = count(entry.get("decoding_large_small_bs_threshold", 95), where, "threshold", 2)
    rows = []
    for batch in (1, 2, 4, 8):
        for length in (32, 128, 512, 1024, 2048 // batch):
            tokens, squares = batch * length, batch * length * length
            ms = prefill[0] + prefill[1] * tokens + prefill[2] * squares
            rows.append(
                StepRow(
                    ms / 1e3,
                    prefill_steps=1,
                    prefill_tokens=tokens,
                    prefill_attention=squares,
                    where=f"prefill b={batch} l={length}",
                )
            )
    for batch in sorted({1, 2, 4, 8, 16, 32, 64, threshold - 1}):
        for context in (64, 256, 1024, 2048):
            ms = decode[0] + decode[1] * batch * context + decode[2] * batch
            rows.append(
                StepRow(
                    ms / 1e3,
                    decode_seqs=batch,
                    context_tokens=batch * context,
                    where=f"decode b={batch} ctx={context}",
                )
            )
    return rows
