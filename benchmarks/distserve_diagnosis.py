"""What DistServe's three vLLM 0.2 runs (OPT-13B, A100; 1, 2, 3 req/s) say about the decode
step, read from the requests directly — no fit. Prints the figures docs/calibration.md
("What the traces say about the step's form") reports (needs ../shared/data/gpu/).

* The runs share their first 100 requests: TTFT of the same request, run against run.
* Per request, the decode step it saw (its decode time less the prefills that completed
  inside it, per token), by the mean number of requests decoding beside it.
* A linear step set by hand from those numbers (with the prefill shipped until 2026-12-02),
  replayed on every run; the shipped profile with and without vLLM 0.2's prompt padding.

    python benchmarks/distserve_diagnosis.py [--data ../shared/data/gpu]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from calibration import read_tables
from calibration.replay import EngineSettings, compare
from calibration.table import RequestRow, TraceTable
from sim.profile import VllmProfile, load_profile
from stairwise.app import run_script

ENGINE = EngineSettings(max_num_seqs=256, max_num_batched_tokens=2048)
RATES = (1, 2, 3)
# a prefill alone, from the low-load TTFTs: what another request's prompt stalls a decode by
PREFILL_BASE_S, PREFILL_TOKEN_S = 0.022, 115e-6
BATCH_BINS = (0, 4, 8, 14, 20, 28, 36, 46, 60, 100)
HAND_LINEAR = {
    # the prefill of the profile shipped until 2026-12-02 (pooled fit), so these figures stay
    "prefill_token_s": 9.290416633966724e-05,
    "prefill_attention_s": 2.2785302220183275e-08,
    "prefill_step_s": 0.0,
    "base_s": 0.0225,
    "decode_seq_s": 0.00071,
    "decode_seq_exponent": 1.0,
    "context_token_s": 4.0e-7,  # K and V of a token read at the A100's 2.04 TB/s
}


def matched_ttft(runs: dict[int, list[RequestRow]]) -> None:
    first = runs[1]
    same = all(
        (a.prompt_tokens, a.output_tokens) == (b.prompt_tokens, b.output_tokens)
        for rate in RATES[1:]
        for a, b in zip(first[:100], runs[rate][:100], strict=True)
    )
    print(f"first 100 requests the same in every run (prompt, output): {same}")
    for n in (10, 20, 40):
        ratios = [
            float(np.median([_ttft(runs[r][i]) / _ttft(first[i]) for i in range(n)]))
            for r in RATES[1:]
        ]
        print(
            f"  first {n}: TTFT vs the 1 req/s run, median "
            f"×{ratios[0]:.3f} (2 req/s), ×{ratios[1]:.3f} (3 req/s)"
        )


def _ttft(row: RequestRow) -> float:
    return float(row.ttft_s) if row.ttft_s is not None else float("nan")


def decode_steps(rows: list[RequestRow]) -> np.ndarray:
    """Per request of >= 30 tokens: (mean requests decoding beside it, its decode step)."""
    arrival = np.array([r.arrival_s for r in rows], dtype=float)
    first = arrival + np.array([r.ttft_s for r in rows], dtype=float)
    done = arrival + np.array([r.e2e_s for r in rows], dtype=float)
    prefill = PREFILL_BASE_S + PREFILL_TOKEN_S * np.array([r.prompt_tokens for r in rows])
    found = []
    for i, row in enumerate(rows):
        if row.output_tokens < 30:
            continue
        grid = np.linspace(first[i], done[i], 200)
        decoding = (first[None, :] <= grid[:, None]) & (done[None, :] > grid[:, None])
        stalls = prefill[(first > first[i]) & (first < done[i])].sum()
        step = (done[i] - first[i] - stalls) / (row.output_tokens - 1)
        found.append((decoding.sum(axis=1).mean(), step))
    return np.array(found)


def by_batch(rate: int, steps: np.ndarray) -> None:
    cells = []
    for low, high in itertools.pairwise(BATCH_BINS):
        inside = (steps[:, 0] >= low) & (steps[:, 0] < high)
        if inside.sum() >= 3:
            cells.append(
                f"{1000 * np.median(steps[inside, 1]):.1f} ms at {steps[inside, 0].mean():.1f}"
            )
    print(f"  {rate} req/s: " + ", ".join(cells))


def replayed(label: str, profile: VllmProfile, tables: dict[int, TraceTable]) -> None:
    cells = []
    for rate, table in tables.items():
        errors = compare(table, profile, ENGINE)["error_pct"]
        cells.append(
            f"{rate} req/s TTFT {errors['ttft_p50']:+.1f} % TPOT {errors['tpot_p50']:+.1f} %"
        )
    print(f"  {label}: " + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/gpu"))
    args = parser.parse_args()
    folder = args.data / "distserve-opt13b-a100"
    tables = {r: read_tables([folder / f"vllm-{r * 100}-{r}.exp"])[0] for r in RATES}
    runs = {r: sorted(t.served, key=lambda row: row.arrival_s or 0.0) for r, t in tables.items()}
    matched_ttft(runs)
    print("decode step (median) by the mean number of requests decoding beside it")
    for rate in RATES:
        by_batch(rate, decode_steps(runs[rate]))
    shipped = load_profile("vllm-a100-opt-13b")
    assert isinstance(shipped, VllmProfile)
    print("replayed, median errors")
    linear = shipped.model_copy(update={"step": shipped.step.model_copy(update=HAND_LINEAR)})
    replayed("linear step set by hand (not fitted)", linear, tables)
    replayed("shipped profile", shipped, tables)
    padded = shipped.model_copy(update={"prompt_padding": 256})
    replayed("shipped profile, prompts padded (max 256)", padded, tables)


if __name__ == "__main__":
    run_script(main)  # a user error: one line, exit 2
