"""GPU serving predicted from an operator profile: LLMServingSim's RTX PRO 6000 run replayed on
step costs priced from its per-layer operator tables. Prints TTFT / TPOT / E2E p50 and p90
errors beside LLMServingSim's own published errors for the same run, and how fast a replay
prices steps from tables compared with the fitted formula.

Data (not in the repository): ../shared/data/gpu/llmservingsim-llama31-8b-rtxpro6000/ —
casys-kaist/LLMServingSim @5daddb21, the operator profile `profile/tp1/` (eager, one layer,
vLLM 0.19) and the real vLLM run `vllm/requests.jsonl` (300 ShareGPT requests, 10.3 req/s).

Rows (what each one's numbers saw):
* formula fitted on the tables — the parametric step cost, direct fit of the profile's grid;
* tables alone — the operator profile only, no request of the run;
* tables + correction fitted on all 300 requests — in-sample (how the shipped profile is made);
* tables + correction fitted on the first 150 requests by arrival, scored on the last 150
  (held out), beside the tables alone on the same 150: all 300 are replayed (the later ones
  load the server while the first ones decode), only the first 150's latencies are fitted;
  and, for comparison, the same fit with the last 150 cut from the replay altogether.

    python benchmarks/operator_tables.py [--data ../shared/data/gpu] [--evaluations 60]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from calibration import CalibrationOptions, calibrate, read_tables
from calibration.fit_replay import fit_table_correction
from calibration.fit_steps import fit_step_cost
from calibration.replay import EngineSettings, plan, replay
from calibration.table import TraceTable
from sim.metrics import request_metrics
from sim.profile import VllmProfile
from stairwise.app import run_script

RUN = "llmservingsim-llama31-8b-rtxpro6000"
# LLMServingSim's simulator against the same vLLM run, "Diff%" of their validation summary:
# casys-kaist/LLMServingSim @5daddb21, bench/examples/RTXPRO6000/Llama-3.1-8B/validation/
# summary.txt (TTFT / TPOT / latency, median and P90).
PUBLISHED = {
    "TTFT p50": -8.6,
    "TTFT p90": -4.4,
    "TPOT p50": -0.0,
    "TPOT p90": +0.5,
    "E2E p50": -1.2,
    "E2E p90": -1.8,
}
KV_CAPACITY = 537_000  # estimated from the card's memory (see the shipped profiles' notes)


def options(name: str, evaluations: int) -> CalibrationOptions:
    return CalibrationOptions(
        name=name,
        model="meta-llama/Llama-3.1-8B",
        hardware="1x NVIDIA RTX PRO 6000 Blackwell Server Edition",
        kv_capacity_tokens=KV_CAPACITY,
        block_size=16,
        max_evaluations=evaluations,
        operator_tables=True,
    )


def errors(table: TraceTable, profile: VllmProfile, since: float = -1.0) -> dict[str, float]:
    """% errors of the replay's p50 / p90 over the requests sent at or after ``since``."""
    replay_plan = plan(table, "vllm", EngineSettings())
    predicted = {m.req: m for m in request_metrics(replay(replay_plan, profile)) if m.ok}
    scored = [i for i, row in enumerate(replay_plan.rows) if (row.arrival_s or 0.0) >= since]
    out = {}
    for name, observed_of, predicted_of in (
        ("TTFT", lambda r: r.ttft_s, lambda m: m.ttft),
        ("TPOT", lambda r: r.tpot_s, lambda m: m.tpot),
        ("E2E", lambda r: r.e2e_s, lambda m: m.e2e),
    ):
        measured = [observed_of(replay_plan.rows[i]) for i in scored]
        simulated = [predicted_of(predicted[i]) for i in scored if i in predicted]
        for q in (50, 90):
            want, got = np.percentile(measured, q), np.percentile(simulated, q)
            out[f"{name} p{q}"] = float(100 * (got - want) / want)
    return out


def show(label: str, row: dict[str, float]) -> None:
    cells = "  ".join(f"{row[k]:+8.1f}" for k in PUBLISHED)
    worst = max(abs(v) for v in row.values())
    print(f"  {label:<78} {cells}   worst {worst:4.1f} %")


def correction_text(profile: VllmProfile) -> str:
    assert profile.operator_tables is not None
    c = profile.operator_tables.correction
    return (
        f"× {c.compute_scale:.3f} + {c.step_overhead_s * 1e3:.2f} ms/step, "
        f"{profile.request_overhead_s * 1e3:.0f} ms/req"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/gpu"))
    parser.add_argument("--evaluations", type=int, default=60, help="simulations per fit")
    args = parser.parse_args()
    folder = args.data / RUN
    (layers,) = read_tables([folder / "profile" / "tp1"], "llmservingsim-profile", {"layers": "32"})
    (run,) = read_tables([folder / "vllm" / "requests.jsonl"], "llmservingsim")

    alone = calibrate([layers], options("tables-alone", args.evaluations))
    assert isinstance(alone, VllmProfile)
    formula = alone.model_copy(
        update={"operator_tables": None, "step": fit_step_cost(layers.steps).cost}
    )
    started = time.perf_counter()
    in_sample = calibrate([layers, run], options("in-sample", args.evaluations))
    fit_all_s = time.perf_counter() - started
    assert isinstance(in_sample, VllmProfile)
    by_arrival = sorted(run.requests, key=lambda r: r.arrival_s or 0.0)
    half = len(by_arrival) // 2
    cutoff = by_arrival[half].arrival_s or 0.0
    # every request is replayed (the second half still loads the server), only the first
    # half's latencies are fitted
    held_out = fit_table_correction(
        [run], alone, EngineSettings(), args.evaluations, sent_before_s=cutoff
    ).profile
    # the same with the second half cut from the replay too (it then never loads the server)
    first_half = replace(run, requests=by_arrival[:half])
    truncated = fit_table_correction([first_half], alone, EngineSettings(), args.evaluations)

    print(f"LLMServingSim Llama-3.1-8B / RTX PRO 6000, vLLM 0.19: {len(run.requests)} requests")
    heading = "% error of the replay (predicted vs measured)"
    print(f"  {heading:<78} " + "  ".join(f"{k:>8}" for k in PUBLISHED))
    show("LLMServingSim's own simulator (published)", PUBLISHED)
    show("formula, direct fit of the operator grid", errors(run, formula))
    show("operator tables alone", errors(run, alone))
    show(
        f"tables + correction fitted on all {len(run.requests)} ({correction_text(in_sample)})",
        errors(run, in_sample),
    )
    print(f"  last {len(by_arrival) - half} requests by arrival (held out from the correction)")
    show("operator tables alone", errors(run, alone, cutoff))
    show(
        f"tables + correction fitted on first {half} ({correction_text(held_out)})",
        errors(run, held_out, cutoff),
    )
    show(
        f"  … fitted with the rest cut from the replay ({correction_text(truncated.profile)})",
        errors(run, truncated.profile, cutoff),
    )
    print(f"  (correction fit on all requests: {fit_all_s:.0f} s, {args.evaluations} simulations)")

    replay_plan = plan(run, "vllm", EngineSettings())
    for label, profile in (("formula", formula), ("tables", alone)):
        replay(replay_plan, profile)  # warm: tables load and per-batch curves
        started = time.perf_counter()
        for _ in range(3):
            replay(replay_plan, profile)
        seconds = (time.perf_counter() - started) / 3
        print(f"  replay of the run priced by the {label:<8} {seconds:.3f} s")


if __name__ == "__main__":
    run_script(main)  # a user error: one line, exit 2
