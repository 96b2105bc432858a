"""``stairwise compare``: two runs' answers to the same prompts, and their latencies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from stairwise.app import JsonFlag, app, guarded


@app.command()
@guarded
def compare(
    base: Annotated[Path, typer.Argument(help="Trace of the reference run (run --keep-text).")],
    other: Annotated[Path, typer.Argument(help="Trace of the run to compare with it.")],
    as_json: JsonFlag = False,
) -> None:
    """How similar OTHER's answers are to BASE's (ROUGE-L F1, whole and first 64 words),
    request by request paired by prompt, with the latency deltas of the same requests."""
    from stairwise import api

    result = api.compare(base, other)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        print_comparison(result)


def print_comparison(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    title = (
        f"{result['other']} vs {result['base']}: {result['pairs']} requests paired by prompt, "
        f"{result['identical']} identical answers"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("similarity to BASE")
    for column in ("mean", "min", "p10", "p50", "p90"):
        table.add_column(column, justify="right")
    rows = {
        "ROUGE-L F1, whole answer": "rouge_l_f1",
        f"ROUGE-L F1, first {result['head_tokens']} words": "head_rouge_l_f1",
        "words shared from the start": "common_prefix_tokens",
    }
    for label, key in rows.items():
        values = result[key]
        digits = 0 if key == "common_prefix_tokens" else 3
        table.add_row(
            label, *(f"{values[c]:.{digits}f}" for c in ("mean", "min", "p10", "p50", "p90"))
        )
    console.print(table)
    latency = Table(title="latency, OTHER − BASE per request (s)", title_justify="left")
    for column in ("metric", "BASE p50", "OTHER p50", "delta p50", "delta p10", "delta p90"):
        latency.add_column(column, justify="left" if column == "metric" else "right")
    for key, values in result["latency"].items():
        delta = values["delta"]
        shown = [values["base_p50"], values["other_p50"], delta["p50"], delta["p10"], delta["p90"]]
        latency.add_row(key, *("—" if v is None else f"{v:.3f}" for v in shown))
    console.print(latency)
