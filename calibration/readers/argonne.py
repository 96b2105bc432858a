"""Argonne LLM-Inference-Bench offline batch runs (``All_results.csv``,
``all_results_TTFT_ITL.csv``).

``All_results.csv``: ``Batch Size`` requests of L prompt tokens each generate L tokens
(``Input Output Length`` = L); ``Latency`` (s) is the whole batch. The step cost being linear,
the run is one step row with summed features: prefill steps that pack whole prompts into a
``budget``-token step (vLLM before chunked prefill), then L − 1 decode steps of the batch at
context L + k. ``all_results_TTFT_ITL.csv`` gives the batch's time to first token: its
prefill steps alone. Pick one setup with ``--select hardware=…,model=…,gpus=…``.
"""

from __future__ import annotations

import math
from pathlib import Path

from calibration.readers.common import (
    count,
    error,
    number,
    parse_selection,
    read_text,
    selected_rows,
)
from calibration.table import StepRow, TraceTable

SELECT = {
    "hardware": "e.g. 'Nvidia H100 GPU'",
    "model": "e.g. meta-llama/Meta-Llama-3-8B",
    "gpus": "Num of Hardware",
    "framework": "default vLLM",
    "budget": "prefill tokens per step (default 2048)",
}
KEYS = {
    "hardware": "Hardware",
    "model": "Model",
    "gpus": "Num of Hardware",
    "framework": "Framework",
}
BATCH_COLUMNS = [*KEYS.values(), "Input Output Length", "Batch Size", "Latency"]
WHAT = "Argonne LLM-Inference-Bench CSV"
TTFT_COLUMNS = [*KEYS.values(), "Input Length", "Output Length", "Batch Size", "TTFT Latency"]


def read(path: Path, selection: dict[str, str]) -> TraceTable:
    parse_selection(selection, SELECT, str(path))
    wanted = {"framework": "vLLM", **{k: v for k, v in selection.items() if k in KEYS}}
    budget = count(selection.get("budget", 2048), (path, None), "budget", 1)
    ttft_layout = "TTFT Latency" in read_text(path, "Argonne CSV").splitlines()[0]
    columns = TTFT_COLUMNS if ttft_layout else BATCH_COLUMNS
    make_row = _ttft_row if ttft_layout else _batch_row
    rows = [
        make_row(path, line, row, budget)
        for line, row in selected_rows(
            path, columns, "Argonne LLM-Inference-Bench CSV", KEYS, wanted
        )
    ]
    return TraceTable(
        source=str(path),
        format="argonne",
        steps=rows,
        settings={"engine": "vllm", "scheduler": "prefill_first", "budget": budget, **wanted},
    )


def _prefill(batch: int, length: int, budget: int) -> dict[str, float]:
    per_step = max(1, budget // length)
    return {
        "steps": math.ceil(batch / per_step),
        "prefill_steps": math.ceil(batch / per_step),
        "prefill_tokens": batch * length,
        "prefill_attention": batch * length * length,
    }


def _batch_row(path: Path, line: int, row: dict[str, str], budget: int) -> StepRow:
    at = (path, line)
    length = count(row["Input Output Length"], at, "Input Output Length", 2)
    batch = count(row["Batch Size"], at, "Batch Size", 1)
    prefill = _prefill(batch, length, budget)
    decode_steps = length - 1
    context = batch * (decode_steps * length + decode_steps * (decode_steps + 1) / 2)
    return StepRow(
        number(row["Latency"], at, "Latency"),
        steps=prefill["steps"] + decode_steps,
        prefill_steps=prefill["prefill_steps"],
        prefill_tokens=prefill["prefill_tokens"],
        prefill_attention=prefill["prefill_attention"],
        decode_seqs=batch * decode_steps,
        context_tokens=context,
        where=f"{path}:{line}",
    )


def _ttft_row(path: Path, line: int, row: dict[str, str], budget: int) -> StepRow:
    at = (path, line)
    length = count(row["Input Length"], at, "Input Length", 1)
    batch = count(row["Batch Size"], at, "Batch Size", 1)
    if count(row["Output Length"], at, "Output Length", 1) != 1:
        raise error(path, line, "TTFT rows are expected to generate one token")
    return StepRow(
        number(row["TTFT Latency"], at, "TTFT Latency"),
        **_prefill(batch, length, budget),
        where=f"{path}:{line}",
    )
