"""LLMServingSim's real vLLM runs and per-layer profiles (Llama-3.1-8B, RTX PRO 6000, vLLM 0.19).

* ``requests.jsonl`` (format ``llmservingsim``): one request per line — input_toks,
  output_toks, arrival_time (client clock) and the server's queued / scheduled / first_token /
  last_token timestamps (its monotonic clock). Latencies are measured from ``queued_ts``; the
  upload delay is ``queued_ts − arrival_time`` less its minimum (the clocks' offset).
  ``meta.json`` beside it, when present, gives the engine version and limits.
* ``profile/tp<N>/`` (format ``llmservingsim-profile``): per-layer timings of a one-layer model
  (attention.csv, dense.csv, per_sequence.csv). A whole step is ``layers`` × (attention + the
  per-layer dense ops) + embedding, final norm, LM head and sampler; each attention grid point
  becomes one step row.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from calibration.readers.common import (
    count,
    csv_rows,
    error,
    field,
    load_json,
    number,
    parse_selection,
    read_text,
)
from calibration.table import RequestRow, StepRow, TraceTable
from sim.jsonl import json_object
from sim.step_tables import (
    ATTENTION_COLUMNS,
    DENSE_PREFIX,
    PER_SEQUENCE_PREFIX,
    tables_from_arrays,
)

STAMPS = ("queued_ts", "scheduled_ts", "first_token_ts", "last_token_ts")
PER_LAYER_OPS = (
    "layernorm",
    "qkv_proj",
    "rotary_emb",
    "o_proj",
    "layernorm",  # post-attention norm: the same op again
    "gate_up_proj",
    "act_fn",
    "down_proj",
)
ONCE_OPS = ("embedding", "final_layernorm")
HEAD_OPS = ("lm_head", "sampler")  # per scheduled sequence
PROFILE_SELECT = {"layers": "transformer layers of the whole model (Llama-3.1-8B: 32)"}


def read(path: Path, selection: dict[str, str]) -> TraceTable:
    # layers=N is for the profile folder read beside this trace (one --select for both)
    parse_selection(selection, {"layers": PROFILE_SELECT["layers"]}, str(path))
    raw = []
    for line_number, line in enumerate(read_text(path, "requests.jsonl").splitlines(), 1):
        if line.strip():
            raw.append((line_number, json_object(line, f"{path}:{line_number}", "request")))
    parsed = [_stamps(path, n, r) for n, r in raw]
    origin = min(p["queued_ts"] for p in parsed)
    offset = min(p["queued_ts"] - p["arrival_time"] for p in parsed)
    rows = [
        RequestRow(
            arrival_s=p["queued_ts"] - origin,
            prompt_tokens=int(p["input_toks"]),
            output_tokens=int(p["output_toks"]),
            ttft_s=p["first_token_ts"] - p["queued_ts"],
            e2e_s=p["last_token_ts"] - p["queued_ts"],
            network_delay_s=p["queued_ts"] - p["arrival_time"] - offset,
        )
        for p in parsed
    ]
    return TraceTable(source=str(path), format="llmservingsim", requests=rows, settings=_meta(path))


def _stamps(path: Path, line: int, record: dict[str, Any]) -> dict[str, float]:
    at = (path, line)
    values = {key: number(field(record, key, at), at, key) for key in ("arrival_time", *STAMPS)}
    values["input_toks"] = count(field(record, "input_toks", at), at, "input_toks", 1)
    values["output_toks"] = count(field(record, "output_toks", at), at, "output_toks", 1)
    if any(values[a] > values[b] for a, b in pairwise(STAMPS)):
        raise error(path, line, "timestamps out of order (queued <= scheduled <= first <= last)")
    return values


def _meta(path: Path) -> dict[str, Any]:
    meta_path = path.parent / "meta.json"
    settings: dict[str, Any] = {"engine": "vllm", "scheduler": "mixed"}
    if not meta_path.exists():
        return settings
    meta = load_json(meta_path, "LLMServingSim meta.json")
    engine = meta.get("engine_kwargs", {}) if isinstance(meta, dict) else {}
    settings["engine_version"] = str(meta.get("vllm_version", ""))
    settings["model"] = str(meta.get("model", ""))
    for key in ("max_num_seqs", "max_num_batched_tokens", "tensor_parallel_size", "dtype"):
        if engine.get(key) is not None:
            settings[key] = engine[key]
    return settings


# --- per-layer profile --------------------------------------------------------------------


def read_profile(path: Path, selection: dict[str, str]) -> TraceTable:
    parse_selection(selection, PROFILE_SELECT, str(path))
    if "layers" not in selection:
        raise error(path, None, "say how many layers the model has: --select layers=N")
    layers = count(selection["layers"], (path, None), "layers", 1)
    folder = path if path.is_dir() else path.parent
    tables = tables_from_arrays(
        operator_arrays(folder), str(folder), layers, PER_LAYER_OPS, ONCE_OPS, HEAD_OPS
    )
    rows = []
    for index, (chunk, before, decodes, context, _) in enumerate(tables.attention.tolist()):
        if chunk == 0 and decodes == 0:
            continue
        step_us = tables.step_us(
            int(chunk), int(before), 1 if chunk else 0, int(decodes), int(decodes * context)
        )
        rows.append(
            StepRow(
                step_us / 1e6,
                prefill_steps=1.0 if chunk else 0.0,
                prefill_tokens=chunk,
                prefill_attention=chunk * (before + chunk),
                decode_seqs=decodes,
                context_tokens=decodes * context,
                where=f"{folder / 'attention.csv'}:{index + 2}",  # after the header
            )
        )
    return TraceTable(
        source=str(folder),
        format="llmservingsim-profile",
        steps=rows,
        settings={**_profile_meta(folder), "layers": layers},
        operator_tables=tables,
    )


def operator_arrays(folder: Path) -> dict[str, np.ndarray]:
    """The profile's three CSVs as the arrays an operator-table sidecar holds."""
    attention = folder / "attention.csv"
    rows = []
    for line, row in csv_rows(attention, list(ATTENTION_COLUMNS), "LLMServingSim attention.csv"):
        at = (attention, line)
        sizes = [count(row[c], at, c) for c in ATTENTION_COLUMNS[:4]]
        rows.append([*sizes, number(row["time_us"], at, "time_us")])
    arrays = {"attention": np.array(rows, dtype=float)}
    for file, size, prefix in (
        ("dense.csv", "tokens", DENSE_PREFIX),
        ("per_sequence.csv", "sequences", PER_SEQUENCE_PREFIX),
    ):
        points: dict[str, list[tuple[int, float]]] = defaultdict(list)
        table = folder / file
        for line, row in csv_rows(table, ["layer", size, "time_us"], f"LLMServingSim {file}"):
            at = (table, line)
            points[row["layer"]].append(
                (count(row[size], at, size, 1), number(row["time_us"], at, "time_us"))
            )
        arrays |= {prefix + op: np.array(p, dtype=float) for op, p in points.items()}
    return arrays


def _profile_meta(folder: Path) -> dict[str, Any]:
    """Engine facts from meta.yaml one folder up, when it is there."""
    meta_path = folder.parent / "meta.yaml"
    if not meta_path.exists():
        return {"engine": "vllm"}
    import yaml

    try:
        meta = yaml.safe_load(meta_path.read_text()) or {}
    except yaml.YAMLError:
        raise error(meta_path, None, "malformed YAML") from None
    facts = {
        "engine": "vllm",
        "engine_version": str(meta.get("vllm_version", "")),
        "model": str(meta.get("model", "")),
        "hardware": str(meta.get("gpu", "")),
        "enforce_eager": bool(meta.get("engine_effective", {}).get("enforce_eager", False)),
    }
    # the profiler's pooled fit of what unequal decode contexts cost over their mean
    per_tp = (meta.get("skew_fit") or {}).get("per_tp") or {}
    tp = folder.name.removeprefix("tp")
    entry = per_tp.get(int(tp) if tp.isdigit() else tp) or {}
    if isinstance(entry, dict) and "alpha_default" in entry:
        facts["decode_skew_alpha"] = number(entry["alpha_default"], (meta_path, None), "alpha")
    return facts
