"""The validation suite on the embedded local vLLM, with engine probes: the README's table.

Each scenario of ``examples/validation/`` (or those given) runs live ``--repeat`` times, each
run bracketed by engine probes, and is simulated from its file on the shipped profile and on
that profile rescaled to the probes. Printed per scenario: TTFT/TPS/E2E p50 errors both
ways, the probes' reading (how far the engine ran from its profile) and their drift during
the runs, with two or more runs the live run-to-run spread, and the prefill work call by
call (the prompt tokens the simulator computes against those the server computed, and the
share of calls whose cached tokens it got exactly), and how many of the live run's headline
quantiles the predicted 90 % intervals hold.

    python benchmarks/validation_suite.py [SCENARIO.yaml ...] [--repeat 2] [--out DIR]

Run nothing else meanwhile: the engine shares the machine's two cores with the runner.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stairwise import api
from stairwise.app import run_script

KEYS = ("ttft_p50", "tps_p50", "e2e_p50")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("out/bench-validation"))
    args = parser.parse_args()
    scenarios = args.scenarios or sorted(Path("examples/validation").glob("*.yaml"))
    results = api.validate_suite(
        scenarios, out=args.out, repeat=args.repeat, report=args.out / "suite.html", log=print
    )
    header = ["scenario"] + [f"{k} shipped / probe-scaled" for k in KEYS]
    header += ["probe prefill / decode", "drift", "live spread ttft_p50"]
    header += ["prefill tokens computed / cached tokens equal", "live inside the interval"]
    print(" | ".join(header))
    rows = []
    for result in results:
        summary = result.summary
        shipped, scaled = summary["error_pct"], summary.get("error_pct_probe_scaled", {})
        cells = [result.name]
        cells += [f"{_pct(shipped.get(k))} / {_pct(scaled.get(k))}" for k in KEYS]
        for probe in summary.get("probe", {}).values():
            factors = probe["factors"]
            cells.append(
                f"{100 * (factors['prefill'] - 1):+.0f} % / {100 * (factors['decode'] - 1):+.0f} %"
            )
            cells.append(f"{max(probe['drift_pct'], default=0):.0f} %")
        cells.append(_pct(summary.get("live_spread_pct", {}).get("ttft_p50")))
        prompts = summary["prompts"]
        if prompts["calls"]:
            cells.append(
                f"{_pct(prompts['computed_tokens_error_pct'])} / "
                f"{prompts['cached_tokens_equal_pct']:.0f} % of calls"
            )
        held = [v for v in summary["inside_interval"].values() if v is not None]
        cells.append(f"{sum(held)} of {len(held)}")
        print(" | ".join(cells))
        rows.append(
            {
                "scenario": result.name,
                **{
                    k: summary.get(k)
                    for k in (
                        "error_pct",
                        "error_pct_probe_scaled",
                        "probe",
                        "live_spread_pct",
                        "unreliable",
                        "prompts",
                        "inside_interval",
                    )
                },
            }
        )
    (args.out / "suite.json").write_text(json.dumps(rows, indent=2))
    print(f"details: {args.out / 'suite.json'}, report: {args.out / 'suite.html'}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


if __name__ == "__main__":
    run_script(main)  # a user error: one line, exit 2
