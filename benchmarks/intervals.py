"""What do prediction intervals cost, and do they hold what they promise?

1. Cost: ``simulate`` of every example scenario with 1 run (no intervals) and with N runs
   (the default and twice it), wall time in this process (the CLI adds its ~3 s start).
2. Coverage: a one-agent vLLM scenario whose "true" step costs are drawn from a planted
   uncertainty (each cost off by a lognormal factor, relative sd 30 %) and whose "live" run
   has its own seed; the share of trials in which the interval predicted from the fitted
   profile and its stated uncertainty holds the true run's E2E p50 and TTFT p90 — with the
   stated uncertainty, and with the seeds alone (a profile that states none).

    python benchmarks/intervals.py [--trials 200] [--replications 10]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sim import load_scenario, simulate
from sim.intervals import DEFAULT_REPLICATIONS, IntervalSettings, predict
from sim.profile import parse_profile
from sim.scenario import scenario_from_dict
from sim.simulator import Simulator
from stairwise.app import run_script

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = [
    path
    for path in sorted(REPO.glob("examples/*.yaml")) + sorted(REPO.glob("examples/*/*.yaml"))
    if "kind: sweep" not in path.read_text()
]
PLANTED_REL_SD = {"base_s": 0.3, "decode_seq_s": 0.3, "prefill_token_s": 0.3}
COVERED = ("e2e_s.p50", "ttft_s.p90")
PLANTED_STEP = {
    "base_s": 0.03,
    "prefill_token_s": 0.0005,
    "prefill_attention_s": 2e-7,
    "decode_seq_s": 0.001,
    "context_token_s": 2e-6,
}


def cost(replications: int) -> None:
    simulate(EXAMPLES[0], replications=2)  # imports (scipy.special) out of the timing
    print(f"simulate wall time (s): 1 run | {replications} runs | {2 * replications} runs")
    for path in EXAMPLES:
        scenario = load_scenario(path)
        times = []
        for count in (1, replications, 2 * replications):
            started = time.perf_counter()
            simulate(path, replications=count)
            times.append(time.perf_counter() - started)
        name = path.relative_to(REPO)
        print(
            f"  {name} ({scenario.workload.requests} requests): "
            + " | ".join(f"{t:.2f}" for t in times)
        )


def profile(directory: Path, step: dict, rel_sd: dict) -> str:
    path = directory / f"profile-{len(list(directory.glob('*.json')))}.json"
    data = {
        "kind": "vllm",
        "name": "planted",
        "provenance": {"engine": "planted", "model": "none", "hardware": "none"},
        "kv_capacity_tokens": 100_000,
        "step": step,
        "step_rel_sd": rel_sd,
    }
    path.write_text(json.dumps(data))
    return str(path)


def one_agent(profile_path: str, seed: int) -> dict:
    return {
        "name": "one-agent",
        "seed": seed,
        "servers": {"engine": {"kind": "vllm", "profile": profile_path}},
        "topology": {"kind": "graph", "unit": {"tokens": 32}, "agents": {"solo": {"steps": 1}}},
        "workload": {
            "requests": 4,
            "arrival": {"kind": "poisson", "rate_per_s": 4.0},
            "prompt_tokens": {"dist": "fixed", "value": 256},
        },
    }


def coverage(trials: int, replications: int, stated: dict, directory: Path) -> float:
    rng = np.random.default_rng(7)
    fitted = profile(directory, PLANTED_STEP, stated)
    hits = []
    for trial in range(trials):
        true_step = {
            name: value
            * (
                math.exp(math.sqrt(math.log1p(PLANTED_REL_SD[name] ** 2)) * rng.standard_normal())
                if name in PLANTED_REL_SD
                else 1.0
            )
            for name, value in PLANTED_STEP.items()
        }
        machine = parse_profile(
            json.loads(Path(profile(directory, true_step, {})).read_text()), "truth"
        )
        truth = Simulator(
            scenario_from_dict(one_agent(fitted, 100_000 + trial)), profiles={"engine": machine}
        ).run()
        settings = IntervalSettings(replications=replications)
        predicted = predict(scenario_from_dict(one_agent(fitted, trial)), settings=settings).summary
        for path in COVERED:
            metric, quantile = path.split(".")
            low, high = predicted[metric][f"{quantile}_ci"]
            hits.append(low <= truth.summary[metric][quantile] <= high)
    return float(np.mean(hits))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--replications", type=int, default=DEFAULT_REPLICATIONS)
    parser.add_argument("--skip-cost", action="store_true")
    args = parser.parse_args()
    if not args.skip_cost:
        cost(args.replications)
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        for label, stated in (("stated uncertainty", PLANTED_REL_SD), ("seeds only", {})):
            share = coverage(args.trials, args.replications, stated, directory)
            print(
                f"coverage of planted truths, {label}: {share:.1%} of {args.trials} trials x "
                f"{len(COVERED)} quantiles (nominal 90 %, {args.replications} runs each)"
            )
    sys.stdout.flush()


if __name__ == "__main__":
    run_script(main)  # a user error: one line, exit 2
