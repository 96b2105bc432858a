"""How well do calibrated profiles predict runs they were not fitted to? Prints the figures
docs/calibration.md reports (needs the public GPU data in ../shared/data/gpu/).

* DistServe (OPT-13B, A100, vLLM 0.2.3): replay-fit on two of the three request rates,
  predict the third (each in turn), with floors from the A100's FLOPs and memory bandwidth
  and without: median TTFT and TPOT error per rate. Also DistServe's own coefficients,
  unfitted.
* LLMServingSim (Llama-3.1-8B, RTX PRO 6000, vLLM 0.19): replay-fit on the first half of the
  requests (by arrival), replay all of them, score the second half. Also the per-layer
  profile's direct fit, which never sees a request.
* Splitwise -> Argonne: Llama-2-70B TP4 step costs fitted on Splitwise's isolated timings,
  scored on Argonne's whole-batch latencies (another lab, another harness).

    python benchmarks/calibration_heldout.py [--data ../shared/data/gpu] [--evaluations 150]
        [--parts distserve ...] [--held-out 3 2 1] [--variants "hardware floors" "no floors"]

Each leave-one-out fit is independent: running one per process (``--held-out 3``, …) spreads
them over the machine's cores.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from calibration import CalibrationOptions, calibrate, read_tables
from calibration.fit_steps import fit_step_cost, step_quality
from calibration.replay import EngineSettings, compare, plan, replay
from calibration.shipped import RECIPES, opt_13b_a100_floors, recipe_options
from calibration.table import TraceTable
from sim.metrics import request_metrics
from sim.profile import VllmProfile

DISTSERVE_ENGINE = EngineSettings(max_num_seqs=256, max_num_batched_tokens=2048)
DISTSERVE = {"scheduler": "prefill_first", "kv_capacity_tokens": 66144, "block_size": 16}
PARTS = ("splitwise", "distserve", "llmservingsim")
VARIANTS = ("hardware floors", "no floors")


def distserve(
    data: Path, evaluations: int, held_out_rates: tuple[int, ...], variants: tuple[str, ...]
) -> None:
    """Leave one rate out: fit the shipped recipe's final stage (KV at the 3 req/s run's
    plateau) on two of the three rates, predict the third; with and without the A100's
    hardware floors."""
    folder = data / "distserve-opt13b-a100"
    rates = {rate: read_tables([folder / f"vllm-{rate * 100}-{rate}.exp"])[0] for rate in (1, 2, 3)}
    (coefficients,) = read_tables([folder / "profiler-a100-80g.vllm.json"], "distserve-profile")
    unfitted = _distserve_profile("distserve-coefficients").model_copy(
        update={"step": fit_step_cost(coefficients.steps).cost}
    )
    print("DistServe OPT-13B / A100 — median errors (predicted vs measured)")
    _distserve_row("coefficients only", unfitted, rates, ())
    recipe = RECIPES["vllm-a100-opt-13b"]
    shipped = recipe_options(recipe)
    all_variants = {"hardware floors": opt_13b_a100_floors(), "no floors": {}}
    for variant, floors in ((v, all_variants[v]) for v in variants):
        for held_out in held_out_rates:
            fitted_on = tuple(r for r in rates if r != held_out)
            started = time.perf_counter()
            options = shipped.model_copy(
                update={"name": "heldout", "max_evaluations": evaluations, "floors": floors}
            )
            profile = calibrate([rates[r] for r in fitted_on], options)
            assert isinstance(profile, VllmProfile)
            elapsed = time.perf_counter() - started
            label = (
                f"{variant}: replay-fit on rates {'+'.join(map(str, fitted_on))} "
                f"({elapsed:.0f} s), batch exponent {profile.step.decode_seq_exponent}"
            )
            _distserve_row(label, profile, rates, fitted_on)


def _distserve_profile(name: str) -> VllmProfile:
    from sim.profile import Provenance, StepCost

    return VllmProfile(
        name=name,
        provenance=Provenance(engine="vllm", model="facebook/opt-13b", hardware="A100"),
        step=StepCost(base_s=0.0),
        **DISTSERVE,
    )


def _distserve_row(
    label: str, profile: VllmProfile, rates: dict[int, TraceTable], fitted_on: tuple[int, ...]
) -> None:
    print(f"  {label}")
    for rate, table in rates.items():
        role = "fitted  " if rate in fitted_on else "held out"
        _print_errors(f"rate {rate}/s {role}", compare(table, profile, DISTSERVE_ENGINE))


def _print_errors(label: str, comparison: dict[str, Any]) -> None:
    errors = comparison["error_pct"]
    print(
        f"    {label}  TTFT p50 {errors['ttft_p50']:+6.1f} %  "
        f"TPOT p50 {errors['tpot_p50']:+6.1f} %  TTFT p90 {errors['ttft_p90']:+7.1f} %  "
        f"E2E p50 {errors['e2e_p50']:+6.1f} %"
    )


def llmservingsim(data: Path, evaluations: int) -> None:
    folder = data / "llmservingsim-llama31-8b-rtxpro6000"
    (table,) = read_tables([folder / "vllm" / "requests.jsonl"])
    by_arrival = sorted(table.requests, key=lambda r: r.arrival_s or 0.0)
    half = len(by_arrival) // 2
    first_half = replace(table, requests=by_arrival[:half])
    options = CalibrationOptions(
        name="heldout",
        hardware="RTX PRO 6000",
        kv_capacity_tokens=537_000,
        max_evaluations=evaluations,
    )
    started = time.perf_counter()
    fitted = calibrate([first_half], options)
    assert isinstance(fitted, VllmProfile)
    elapsed = time.perf_counter() - started
    (layers,) = read_tables([folder / "profile" / "tp1"], "llmservingsim-profile", {"layers": "32"})
    from_layers = fitted.model_copy(update={"step": fit_step_cost(layers.steps).cost})
    cutoff = by_arrival[half].arrival_s or 0.0
    print("LLMServingSim Llama-3.1-8B / RTX PRO 6000 — second half of the requests (held out)")
    for label, profile in (
        (
            f"replay-fit on the first {half} requests ({elapsed:.0f} s, batch exponent "
            f"{fitted.step.decode_seq_exponent})",
            fitted,
        ),
        ("per-layer profile (eager), direct fit", from_layers),
    ):
        errors = _late_half_errors(table, profile, cutoff)
        print(f"  {label}: " + "  ".join(f"{k} {v:+.1f} %" for k, v in errors.items()))


def _late_half_errors(table: TraceTable, profile: VllmProfile, cutoff: float) -> dict[str, float]:
    replay_plan = plan(table, "vllm", EngineSettings())
    predicted = {m.req: m for m in request_metrics(replay(replay_plan, profile)) if m.ok}
    late = [i for i, row in enumerate(replay_plan.rows) if (row.arrival_s or 0.0) >= cutoff]
    errors = {}
    for name, observed_of, predicted_of in (
        ("TTFT p50", lambda r: r.ttft_s, lambda m: m.ttft),
        ("TPOT p50", lambda r: r.tpot_s, lambda m: m.tpot),
        ("E2E p50", lambda r: r.e2e_s, lambda m: m.e2e),
    ):
        want = np.median([observed_of(replay_plan.rows[i]) for i in late])
        got = np.median([predicted_of(predicted[i]) for i in late if i in predicted])
        errors[name] = float(100 * (got - want) / want)
    return errors


def splitwise_to_argonne(data: Path) -> None:
    print("Llama-2-70B TP4: Splitwise step fit -> Argonne batch latencies (another source)")
    for splitwise_hw, argonne_hw in (
        ("h100-80gb", "Nvidia H100 GPU"),
        ("a100-80gb", "Nvidia A100 GPU"),
    ):
        (source,) = read_tables(
            [data / "splitwise-a100-h100" / "perf_model.csv"],
            "splitwise",
            {"model": "llama2-70b", "hardware": splitwise_hw, "tp": "4"},
        )
        (target,) = read_tables(
            [data / "argonne-llmbench" / "All_results.csv"],
            "argonne",
            {"hardware": argonne_hw, "model": "meta-llama/Llama-2-70b-hf", "gpus": "4"},
        )
        quality = step_quality(fit_step_cost(source.steps).cost, target.steps)
        print(
            f"  {splitwise_hw}: {quality['rows']} Argonne runs, |error| p50 "
            f"{quality['rel_err_p50']:.1%}, p90 {quality['rel_err_p90']:.1%}, "
            f"bias {quality['bias']:+.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/gpu"))
    parser.add_argument("--evaluations", type=int, default=150, help="simulations per replay fit")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=list(PARTS), help="default: all"
    )
    parser.add_argument(
        "--held-out",
        nargs="+",
        type=int,
        choices=(1, 2, 3),
        default=[3, 2, 1],
        help="DistServe: the rates to leave out in turn (each a separate fit)",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS),
        help="DistServe: fit with the A100's hardware floors, without, or both",
    )
    args = parser.parse_args()
    if "splitwise" in args.parts:
        splitwise_to_argonne(args.data)
    if "distserve" in args.parts:
        distserve(args.data, args.evaluations, tuple(args.held_out), tuple(args.variants))
    if "llmservingsim" in args.parts:
        llmservingsim(args.data, args.evaluations)


if __name__ == "__main__":
    main()
