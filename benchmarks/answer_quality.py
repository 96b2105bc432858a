"""Answer quality beside latency, for real: how close staircase answers stay to the standard
mode's as the first chunk shrinks and redundancy grows, on the embedded local vLLM (CPU).

Runs ``examples/answer-quality.yaml`` (3 proposers, an aggregator, the shipped prompts
answered naturally at temperature 0) live with its text kept: the standard mode twice (how
far one standard run is from another: the engine's own nondeterminism), then staircase
variants — proposer and aggregator chunks ``[f, 128]`` for first chunks f = 4, 8, 16, 32 at
redundancy 0, and f = 8 at redundancy 1 and 2 — and compares each with the first standard
run (``stairwise compare``): ROUGE-L F1 of the whole answers and of their first 64 words, the
words shared from the start, with the coverage (share of the proposers' answers the
aggregator had read behind the answer's first token) and TTFT/E2E beside.

    python benchmarks/answer_quality.py [--prompts 5] [--out out/answer-quality]

8 runs of 5 prompts: 4-5 minutes each on a 2-core AVX2-only machine in float32 (35 minutes in
all; ``--prompts 2`` is quicker). Prints a table and writes ``results.json`` and every run's
trace to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from stairwise import api
from stairwise.app import run_script

SCENARIO = Path(__file__).parents[1] / "examples" / "answer-quality.yaml"
FIRST_CHUNKS = (4, 8, 16, 32)
REDUNDANCIES = (1, 2)
REDUNDANCY_CHUNK = 8


def variants(prompts: int) -> dict[str, list[str]]:
    """Run name -> ``--set`` overrides of the scenario (every run asks the same prompts)."""
    common = [f"workload.requests={prompts}", f"workload.arrival.concurrency={prompts}"]
    standard = [*common, "topology.mode=standard"]
    runs = {"standard": standard, "standard again": standard}
    for first in FIRST_CHUNKS:
        runs[f"first chunk {first}"] = [*common, *chunks(first)]
    for redundancy in REDUNDANCIES:
        runs[f"chunk {REDUNDANCY_CHUNK}, redundancy {redundancy}"] = [
            *common,
            *chunks(REDUNDANCY_CHUNK),
            f"topology.redundancy={redundancy}",
        ]
    return runs


def chunks(first: int) -> list[str]:
    """Proposers and aggregator on ``[first, 128]``: one round from the proposers' first
    chunks, then one from their whole answers (at most 96 tokens)."""
    return [f"topology.chunks.{agent}=[{first},128]" for agent in ("proposer", "aggregator")]


def measure(prompts: int, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    traces: dict[str, Path] = {}
    for name, overrides in variants(prompts).items():
        trace = out / f"{name.replace(' ', '-').replace(',', '')}.jsonl"
        started = time.perf_counter()
        run = api.run(SCENARIO, overrides, trace, local=True, probe=False, keep_text=True)
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
        traces[name] = trace
        results[name] = {"summary": run.summary, "trace": str(trace)}
    for name, trace in traces.items():
        if name != "standard":
            results[name]["compare"] = api.compare(traces["standard"], trace)
    return results


def table(results: dict[str, Any]) -> str:
    header = (
        f"{'run (vs standard)':<26}{'read@1':>8}{'ROUGE-L p50':>13}{'mean':>7}{'min':>7}"
        f"{'head-64 p50':>13}{'prefix p50':>12}{'TTFT p50':>10}{'E2E p50':>9}"
    )
    lines = [header]
    for name, result in results.items():
        summary = result["summary"]
        coverage = summary.get("coverage")
        read = "-" if coverage is None else f"{coverage['first_token']['p50']:.1%}"
        compared = result.get("compare")
        if compared is None:
            scores = ["(base)", "", "", "", ""]
        else:
            rouge, head = compared["rouge_l_f1"], compared["head_rouge_l_f1"]
            scores = [
                f"{rouge['p50']:.3f}",
                f"{rouge['mean']:.3f}",
                f"{rouge['min']:.3f}",
                f"{head['p50']:.3f}",
                f"{compared['common_prefix_tokens']['p50']:.0f}",
            ]
        widths = (13, 7, 7, 13, 12)
        cells = "".join(f"{cell:>{width}}" for cell, width in zip(scores, widths, strict=True))
        lines.append(
            f"{name:<26}{read:>8}{cells}"
            f"{summary['ttft_s']['p50']:>10.2f}{summary['e2e_s']['p50']:>9.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=5, help="prompts per run (builtin set)")
    parser.add_argument("--out", type=Path, default=Path("out/answer-quality"))
    args = parser.parse_args()
    results = measure(args.prompts, args.out)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(table(results))


if __name__ == "__main__":
    run_script(main)  # a user error: one line, exit 2
