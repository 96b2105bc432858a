"""How well do calibrated profiles predict runs they were not fitted to? Prints the figures
docs/calibration.md reports (needs the public GPU data in ../shared/data/gpu/).

* DistServe (OPT-13B, A100, vLLM 0.2.3): the shipped profile's recipe (each run replayed at
  its own speed, linear batch cost, the A100's hardware floors) fitted on two of the three
  request rates, predicting the third (each in turn): median TTFT and TPOT error per rate,
  the held-out rate as fitted and rescaled to its own speed read from its first 20 requests.
  ``pooled``: the same fit without per-run speeds. Also DistServe's own coefficients, unfitted.
* LLMServingSim (Llama-3.1-8B, RTX PRO 6000, vLLM 0.19): replay-fit on the first half of the
  requests (by arrival; every request replayed), score the second half; without and with the
  per-sequence and per-context costs bounded by the card's operator profile and bandwidth.
  Also the per-layer profile's direct fit, which never sees a request.
* Splitwise -> Argonne: Llama-2-70B TP4 step costs fitted on Splitwise's isolated timings,
  scored on Argonne's whole-batch latencies (another lab, another harness).

    python benchmarks/calibration_heldout.py [--data ../shared/data/gpu] [--evaluations 150]
        [--parts distserve ...] [--held-out 3 2 1] [--variants "run speeds" pooled]

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
from calibration.calibrate import decode_costs_from_tables, start_profile
from calibration.fit_replay import at_speed, fit_by_replay, run_speed
from calibration.fit_steps import fit_step_cost, step_quality
from calibration.replay import EngineSettings, compare, plan, replay
from calibration.shipped import (
    LLAMA3_8B_KV_BYTES_PER_TOKEN,
    LLAMA31_8B_PARAMETERS,
    RECIPES,
    decode_floors,
    recipe_options,
)
from calibration.table import STEP_PARAMS, TraceTable
from sim.metrics import request_metrics
from sim.profile import VllmProfile
from stairwise.app import run_script

DISTSERVE_ENGINE = EngineSettings(max_num_seqs=256, max_num_batched_tokens=2048)
DISTSERVE = {"scheduler": "prefill_first", "kv_capacity_tokens": 66144, "block_size": 16}
PARTS = ("splitwise", "distserve", "llmservingsim")
VARIANTS = ("run speeds", "pooled")
LSS_VARIANTS = ("no floors", "sibling + hardware floors", "load costs held at the sibling's")
# what the first half of an overloaded run can fit once the load-dependent costs are bounded
UNLOADED_PARAMS = ("base_s", "prefill_token_s", "prefill_attention_s", "prefill_step_s")


def distserve(
    data: Path, evaluations: int, held_out_rates: tuple[int, ...], variants: tuple[str, ...]
) -> None:
    """Leave one rate out: fit the shipped recipe (each run replayed at its own speed, read
    from its first requests; linear batch cost; the A100's hardware floors) on two of the
    three rates, predict the third — as fitted, and rescaled to the held-out run's own speed
    read from its first 20 requests' TTFTs (what an engine probe beside a live run gives).
    ``pooled``: the same without per-run speeds."""
    folder = data / "distserve-opt13b-a100"
    rates = {rate: read_tables([folder / f"vllm-{rate * 100}-{rate}.exp"])[0] for rate in (1, 2, 3)}
    (coefficients,) = read_tables([folder / "profiler-a100-80g.vllm.json"], "distserve-profile")
    unfitted = _distserve_profile("distserve-coefficients").model_copy(
        update={"step": fit_step_cost(coefficients.steps).cost}
    )
    print("DistServe OPT-13B / A100 — median errors (predicted vs measured)")
    _distserve_row("coefficients only", unfitted, rates, ())
    shipped = recipe_options(RECIPES["vllm-a100-opt-13b"])
    for variant in variants:
        for held_out in held_out_rates:
            fitted_on = tuple(r for r in rates if r != held_out)
            started = time.perf_counter()
            options = shipped.model_copy(
                update={
                    "name": "heldout",
                    "max_evaluations": evaluations,
                    "per_run_speed": variant == "run speeds",
                }
            )
            profile = calibrate([rates[r] for r in fitted_on], options)
            assert isinstance(profile, VllmProfile)
            elapsed = time.perf_counter() - started
            speeds = profile.fit["replay"].get("run_speed", {}).get("factors", {})
            label = (
                f"{variant}: replay-fit on rates {'+'.join(map(str, fitted_on))} "
                f"({elapsed:.0f} s), run speeds {', '.join(f'{v:.3f}' for v in speeds.values())}"
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
    """Each rate as fitted; a held-out one also rescaled to its own speed: its first requests'
    speed at this profile over the fitted runs' (their geometric mean, read the same way) —
    the profile is the fitted runs' mean engine."""
    print(f"  {label}")
    step = profile.step.model_dump()
    print("    " + ", ".join(f"{k} {v:.3g}" for k, v in step.items() if v and k in STEP_PARAMS))
    speeds = {
        rate: run_speed(plan(table, "vllm", DISTSERVE_ENGINE), profile)
        for rate, table in rates.items()
    }
    mean_fitted = float(np.exp(np.mean([np.log(speeds[r]) for r in fitted_on or rates])))
    for rate, table in rates.items():
        role = "fitted  " if rate in fitted_on else "held out"
        _print_errors(f"rate {rate}/s {role}", compare(table, profile, DISTSERVE_ENGINE))
        if rate not in fitted_on and fitted_on:
            relative = speeds[rate] / mean_fitted
            rescaled = compare(table, at_speed(profile, relative), DISTSERVE_ENGINE)
            _print_errors(f"  at its own speed ×{relative:.3f}", rescaled)


def _print_errors(label: str, comparison: dict[str, Any]) -> None:
    errors = comparison["error_pct"]
    print(
        f"    {label}  TTFT p50 {errors['ttft_p50']:+6.1f} %  "
        f"TPOT p50 {errors['tpot_p50']:+6.1f} %  TTFT p90 {errors['ttft_p90']:+7.1f} %  "
        f"E2E p50 {errors['e2e_p50']:+6.1f} %"
    )


def llmservingsim(data: Path, evaluations: int, variants: tuple[str, ...]) -> None:
    """Fit on the first half of the requests (by arrival), score the second half. The
    requests are all replayed (the later ones load the server; their lengths and send times
    are the workload) but only the first half's latencies are fitted. Batch cost linear: free;
    the load-dependent costs bounded from below by the same card's operator profile (its
    tables alone, never a request) and the weight and K/V reads at the card's bandwidth; or
    held at the operator profile's values (what a filling queue cannot identify)."""
    folder = data / "llmservingsim-llama31-8b-rtxpro6000"
    (table,) = read_tables([folder / "vllm" / "requests.jsonl"])
    by_arrival = sorted(table.requests, key=lambda r: r.arrival_s or 0.0)
    half = len(by_arrival) // 2
    cutoff = by_arrival[half].arrival_s or 0.0
    first_half = replace(table, requests=by_arrival[:half])
    (layers,) = read_tables([folder / "profile" / "tp1"], "llmservingsim-profile", {"layers": "32"})
    assert layers.operator_tables is not None
    sibling = decode_costs_from_tables(layers.operator_tables, int(table.settings["max_num_seqs"]))
    hardware = decode_floors(LLAMA31_8B_PARAMETERS, LLAMA3_8B_KV_BYTES_PER_TOKEN, "RTX PRO 6000")
    sibling_costs = {p: max(sibling[p], hardware.get(p, 0.0)) for p in sibling}
    bounded = {"base_s": hardware["base_s"], **sibling_costs}
    print("LLMServingSim Llama-3.1-8B / RTX PRO 6000 — second half of the requests (held out)")
    print(
        "  floors: "
        + ", ".join(f"{k} {v:.3g} s" for k, v in bounded.items())
        + f" (sibling tables: decode_seq_s {sibling['decode_seq_s']:.3g}, "
        f"context_token_s {sibling['context_token_s']:.3g})"
    )
    options = CalibrationOptions(
        name="heldout", hardware="RTX PRO 6000", kv_capacity_tokens=537_000
    )
    start = start_profile([first_half], options)  # from the first half's requests only
    held = start.model_copy(update={"step": start.step.model_copy(update=sibling_costs)})
    fits = {
        "no floors": (start, STEP_PARAMS, {}),
        "sibling + hardware floors": (start, STEP_PARAMS, bounded),
        "load costs held at the sibling's": (held, UNLOADED_PARAMS, {"base_s": bounded["base_s"]}),
    }
    for label in variants:
        begin, params, floors = fits[label]
        started = time.perf_counter()
        fitted = fit_by_replay(
            [table],
            begin,
            EngineSettings(),  # the run's own limits (its meta.json)
            params,
            evaluations,
            floors=floors,
            sent_before_s=cutoff,
        ).profile
        elapsed = time.perf_counter() - started
        errors = _late_half_errors(table, fitted, cutoff)
        step = ", ".join(f"{k} {v:.3g}" for k, v in fitted.step.model_dump().items() if v)
        print(
            f"  replay-fit on the first {half} requests, linear, {label} ({elapsed:.0f} s): {step}"
        )
        print("    " + "  ".join(f"{k} {v:+.1f} %" for k, v in errors.items()))
    from_layers = start.model_copy(update={"step": fit_step_cost(layers.steps).cost})
    errors = _late_half_errors(table, from_layers, cutoff)
    print(
        "  per-layer profile (eager), direct fit: "
        + "  ".join(f"{k} {v:+.1f} %" for k, v in errors.items())
    )


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
        help="DistServe: fit each run at its own speed (the shipped recipe), pooled, or both",
    )
    parser.add_argument(
        "--llmservingsim-variants",
        nargs="+",
        choices=LSS_VARIANTS,
        default=list(LSS_VARIANTS),
        help="LLMServingSim: how the first half's fit treats the load-dependent costs",
    )
    args = parser.parse_args()
    if "splitwise" in args.parts:
        splitwise_to_argonne(args.data)
    if "distserve" in args.parts:
        distserve(args.data, args.evaluations, tuple(args.held_out), tuple(args.variants))
    if "llmservingsim" in args.parts:
        llmservingsim(args.data, args.evaluations, tuple(args.llmservingsim_variants))


if __name__ == "__main__":
    run_script(main)  # a user error: one line, exit 2
