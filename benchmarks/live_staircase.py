"""The smooth staircase, for real: the planner's pick beside the standard mode and the
schedule as given, on the embedded local vLLM (CPU) server.

Takes the pick of ``stairwise plan SCENARIO --slo ttft_p90=1.5s --slo stall_p90=1s --json``
(its ``best.values``, applied as ``--set`` overrides; ``--plan`` reads a saved plan, else the
plan is computed here), runs the three variants live at the scenario's own arrivals with a
cold prefix cache (and, if the pick asks for it, a server scheduling by priority), simulates each,
and prints TTFT, pauses, ITL, both TPS definitions and E2E, then the issue's goal: TTFT p50
≥ 94 % below standard's, longest pause p90 ≤ 2× standard's ITL p90, answer TPS p50 ≥
standard's.

    python benchmarks/live_staircase.py [examples/staircase-moa.yaml] [--plan plan.json]
        [--requests 8] [--out out/live-staircase] [--set 'workload.arrival={kind: closed}']
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sim import simulate
from sim.errors import ConfigError
from sim.sweep.points import override
from stairwise import api
from stairwise.app import run_script

SLOS = ("ttft_p90=1.5s", "stall_p90=1s")
# (label, summary key, statistic, scale, format)
COLUMNS = (
    ("TTFT p50", "ttft_s", "p50", 1.0, ".3f"),
    ("TTFT p90", "ttft_s", "p90", 1.0, ".3f"),
    ("pause p50", "stall_s", "p50", 1.0, ".3f"),
    ("pause p90", "stall_s", "p90", 1.0, ".3f"),
    ("ITL p90 ms", "itl_s", "p90", 1e3, ".1f"),
    ("TPS p50", "tps", "p50", 1.0, ".1f"),
    ("TPS/E2E p50", "tps_e2e", "p50", 1.0, ".1f"),
    ("E2E p50", "e2e_s", "p50", 1.0, ".2f"),
)


def the_pick(scenario: Path, plan_file: Path | None, settings: list[str]) -> dict[str, Any]:
    """``best.values`` of the plan: read from a saved ``plan --json``, or planned here."""
    if plan_file is not None:
        try:
            data = json.loads(plan_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--plan {plan_file}: not a readable plan JSON ({exc})") from None
    else:
        print(f"planning {scenario} under {', '.join(SLOS)} (simulated) ...")
        data = api.plan(scenario, list(SLOS), overrides=settings).to_dict()
    best = data.get("best")
    if best is None:
        raise ConfigError("the plan has no pick (no schedule to search?)")
    print(f"the pick: {best['label']}: {json.dumps(best['values'])}")
    values: dict[str, Any] = best["values"]
    return values


def variants(
    pick: dict[str, Any], requests: int | None, settings: list[str]
) -> dict[str, list[str]]:
    """The three runs as ``--set`` overrides of the scenario file (with ``settings``, e.g. other
    arrivals, applied to all three: plan the pick with the same ones)."""
    common = [*settings, *([f"workload.requests={requests}"] if requests else [])]
    return {
        "standard": [*common, "topology.mode=standard"],
        "as given": common,
        "pick": [*common, *(override(path, value) for path, value in pick.items())],
    }


def row(label: str, summary: dict[str, Any]) -> str:
    cells = [
        "-" if summary[key][stat] is None else f"{summary[key][stat] * scale:{fmt}}"
        for _, key, stat, scale, fmt in COLUMNS
    ]
    return f"{label:<24}" + "".join(f"{cell:>13}" for cell in cells)


def goal(source: str, runs: dict[str, dict[str, Any]]) -> None:
    standard, pick = runs["standard"], runs["pick"]
    ttft_cut = 1 - pick["ttft_s"]["p50"] / standard["ttft_s"]["p50"]
    pause_ratio = pick["stall_s"]["p90"] / (2 * standard["itl_s"]["p90"])
    tps_ratio = pick["tps"]["p50"] / standard["tps"]["p50"]
    print(
        f"{source:<10} pick vs standard: TTFT p50 {ttft_cut:.1%} lower "
        f"({'met' if ttft_cut >= 0.94 else 'missed'}: ≥ 94 %); pause p90 "
        f"{pick['stall_s']['p90']:.3f} s = {pause_ratio:.2f} × (2 × ITL p90 "
        f"{standard['itl_s']['p90'] * 1e3:.1f} ms) ({'met' if pause_ratio <= 1 else 'missed'}); "
        f"answer TPS p50 {tps_ratio:.2f}× standard's ({'met' if tps_ratio >= 1 else 'missed'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "scenario", nargs="?", type=Path, default=Path("examples/staircase-moa.yaml")
    )
    parser.add_argument("--plan", type=Path, help="a saved `stairwise plan --json` output")
    parser.add_argument("--requests", type=int, help="requests per run (default: the file's)")
    parser.add_argument("--out", type=Path, default=Path("out/live-staircase"))
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        help="a scenario override for all three runs (repeatable), e.g. another arrival process",
    )
    args = parser.parse_args()

    runs = variants(the_pick(args.scenario, args.plan, args.settings), args.requests, args.settings)
    args.out.mkdir(parents=True, exist_ok=True)
    # the server starts with the pick's scheduling policy: at priority 0 for every request
    # (standard, as given) a priority server serves first come, first served
    order = ["pick", "standard", "as given"]
    live: dict[str, dict[str, Any]] = {}
    predicted: dict[str, dict[str, Any]] = {}
    client: dict[str, dict[str, float]] = {}
    for name in order:
        overrides = runs[name]
        trace = args.out / f"{name.replace(' ', '-')}.jsonl"
        print(f"{name}: live run, trace {trace}")
        result = api.run(args.scenario, overrides, trace=trace, local=True, cold_cache=True)
        if result.interrupted:
            raise KeyboardInterrupt
        live[name], client[name] = result.summary, result.client
        predicted[name] = simulate(args.scenario, overrides).summary

    header = "".join(f"{label:>13}" for label, *_ in COLUMNS)
    print(f"\n{'(seconds unless noted)':<24}{header}")
    for name in ("standard", "as given", "pick"):
        print(row(f"{name}, live", live[name]))
        print(row(f"{name}, simulated", predicted[name]))
    print("TPS = answer tokens / (E2E − TTFT); TPS/E2E = answer tokens / E2E (the paper's)")
    goal("live", live)
    goal("simulated", predicted)
    for name, overhead in client.items():
        print(
            f"client overhead ({name}): {overhead['cpu_share']:.1%} of one core, event-loop lag "
            f"p99 {overhead['loop_lag_p99_ms']:.1f} ms"
        )


if __name__ == "__main__":
    run_script(main)  # a bad scenario, override or plan file: one line, exit 2
