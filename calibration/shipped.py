"""How every shipped profile is fitted from its sources: one recipe each, which regenerates
the file and which the tests refit and compare with it.

    python -m calibration.shipped [NAME ...] [--data ../shared/data/gpu]

Sources are public GPU data (``{gpu}/…``, the folder described by its SOURCES.md beside the
repository) or measurements kept in the repository. A regenerated file keeps the shipped
file's description and notes (the upstream citation).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibration.calibrate import CalibrationOptions, calibrate
from calibration.profiling import fit_profiling_run
from calibration.readers import read_tables
from calibration.speed import read_speed_log, speed_spread
from calibration.table import STEP_PARAMS, TraceTable
from sim.profile import SHIPPED_DIR, Provenance, VllmProfile, load_profile, save_profile

REPOSITORY = Path(__file__).resolve().parents[1]
GPU_DATA = REPOSITORY.parent / "shared" / "data" / "gpu"
MEASUREMENTS = "calibration/measurements"
# Vendor datasheets (SXM parts): peak dense fp16/bf16 tensor throughput, memory bandwidth.
PEAK_FLOPS = {"A100": 312e12, "H100": 989e12}
MEMORY_BYTES_PER_S = {"A100": 2.039e12, "H100": 3.35e12, "RTX PRO 6000": 1.792e12}
LLAMA3_8B_PARAMETERS = 8.03e9
LLAMA3_8B_KV_BYTES_PER_TOKEN = 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads of 128
LLAMA31_8B_PARAMETERS = 8.03e9  # Llama-3.1-8B: Llama-3-8B's architecture and size
OPT_13B_PARAMETERS = 12.85e9
OPT_13B_KV_BYTES_PER_TOKEN = 2 * 40 * 5120 * 2  # K and V, 40 layers, hidden 5120, fp16


def opt_13b_a100_floors() -> dict[str, float]:
    """What the A100 makes certain for OPT-13B: a prefill token's FLOPs, the weights and each
    context token's K and V read once per decode step."""
    return {
        "prefill_token_s": prefill_flop_floor(OPT_13B_PARAMETERS, PEAK_FLOPS["A100"]),
        **decode_floors(OPT_13B_PARAMETERS, OPT_13B_KV_BYTES_PER_TOKEN, "A100"),
    }


def prefill_flop_floor(parameters: float, peak_flops: float) -> float:
    """Seconds per prefill token at the chip's peak: 2 FLOPs per parameter per token."""
    return 2 * parameters / peak_flops


def decode_floors(parameters: float, kv_bytes_per_token: int, hardware: str) -> dict[str, float]:
    """What every decode step must move through memory: the fp16 weights once (a step's
    fixed part) and each running sequence's cached K and V (per context token)."""
    bandwidth = MEMORY_BYTES_PER_S[hardware]
    return {"base_s": 2 * parameters / bandwidth, "context_token_s": kv_bytes_per_token / bandwidth}


@dataclass(frozen=True)
class Recipe:
    name: str
    sources: tuple[str, ...]  # "{gpu}/…" or relative to the repository
    format: str  # a reader's format, or "profiling" (a designed profiling run's traces)
    options: dict[str, Any]  # CalibrationOptions fields (name, description, notes: the file's)
    select: dict[str, str] = field(default_factory=dict)
    first: dict[str, Any] | None = None  # options of a first fit that starts this one
    replay: bool = False  # minutes, not seconds: the tests re-evaluate instead of refitting
    cpu_variants: dict[str, str] = field(default_factory=dict)  # by cpu_keys() key
    speed_log: str | None = None  # probed live runs (calibration.speed): its speed_rel_sd


# the one machine whose runs' engine probes were kept: its speed spread is assumed for all
LOCAL_SPEED_LOG = f"{MEASUREMENTS}/vllm-cpu-smollm2-135m-zen4/speed.jsonl"


def _local_cpu(
    name: str, dtype: str, processor: str, cpu_variants: dict[str, str] | None = None
) -> Recipe:
    """The embedded engine, profiled live (``calibrate --local``) on a 2-core machine of one
    processor family: the local server computes in bfloat16 with AVX-512, in float32 without;
    its run-to-run speed spread is the Zen 4 machine's (:data:`LOCAL_SPEED_LOG`)."""
    return Recipe(
        name=name,
        sources=tuple(
            sorted(
                str(p.relative_to(REPOSITORY))
                for p in (REPOSITORY / MEASUREMENTS / name).glob("*.jsonl.gz")
            )
        ),
        format="profiling",
        options={
            "model": f"SmolLM2-135M-Instruct (GGUF Q4_1 dequantized to {dtype})",
            "hardware": f"2 x86_64 cores ({processor}), no GPU",
            "engine_version": "0.32.0",
            "block_size": 128,
            "kv_capacity_tokens": 93_184,
            "chars_per_token": 4.635,
            "max_evaluations": 200,
            # vLLM's one API-server process prepares requests one at a time (docs/live.md)
            "request_overhead_serial": True,
        },
        replay=True,
        cpu_variants=cpu_variants or {},
        speed_log=LOCAL_SPEED_LOG,
    )


def _splitwise(hardware: str, tp: int) -> Recipe:
    return Recipe(
        name=f"vllm-{hardware}-llama2-70b-tp{tp}",
        sources=("{gpu}/splitwise-a100-h100/perf_model.csv",),
        format="splitwise",
        select={"model": "llama2-70b", "hardware": f"{hardware}-80gb", "tp": str(tp)},
        options={
            "model": "meta-llama/Llama-2-70b",
            "hardware": f"{tp}x NVIDIA {hardware.upper()}-80GB (tensor parallel)",
            "scheduler": "mixed",
            "block_size": 16,
            "kv_capacity_tokens": 450_000 if tp == 4 else 1_330_000,
        },
    )


def _argonne(hardware: str) -> Recipe:
    """Argonne's batch runs have input = output length, so a batch's prefill and decode both
    scale with batch × length: alone they cannot price a prefill token. Its TTFT file
    measures a prefill batch by itself; the FLOP floor bounds what is left."""
    return Recipe(
        name=f"vllm-{hardware.lower()}-llama3-8b",
        sources=(
            "{gpu}/argonne-llmbench/All_results.csv",
            "{gpu}/argonne-llmbench/all_results_TTFT_ITL.csv",
        ),
        format="argonne",
        select={
            "hardware": f"Nvidia {hardware} GPU",
            "model": "meta-llama/Meta-Llama-3-8B",
            "gpus": "1",
        },
        options={
            "model": "meta-llama/Meta-Llama-3-8B",
            "hardware": f"1x NVIDIA {hardware}-80GB",
            "kv_capacity_tokens": 427_000,
            "block_size": 16,
            "params": ("base_s", "prefill_token_s", "decode_seq_s", "context_token_s"),
            "floors": {
                "prefill_token_s": prefill_flop_floor(LLAMA3_8B_PARAMETERS, PEAK_FLOPS[hardware]),
                **decode_floors(LLAMA3_8B_PARAMETERS, LLAMA3_8B_KV_BYTES_PER_TOKEN, hardware),
            },
        },
    )


DISTSERVE = "{gpu}/distserve-opt13b-a100"
RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        *(_splitwise(hw, tp) for hw in ("h100", "a100") for tp in (4, 8)),
        _argonne("H100"),
        _argonne("A100"),
        Recipe(
            name="vllm-a100-opt-13b",
            sources=tuple(f"{DISTSERVE}/vllm-{r * 100}-{r}.exp" for r in (1, 2, 3)),
            format="distserve",
            options={
                "model": "facebook/opt-13b",
                "hardware": "1x NVIDIA A100-SXM4-80GB",
                "kv_capacity_tokens": 56_432,  # the 3 req/s run's occupancy plateau
                "block_size": 16,
                "engine_limits": {"max_num_seqs": 256, "max_num_batched_tokens": 2048},
                "max_evaluations": 200,
                # the 2 req/s run is ~15 % slower as a run than the others at equal load;
                # within each run the decode step is linear in the batch (docs/calibration.md)
                "per_run_speed": True,
                "params": STEP_PARAMS,
                "floors": opt_13b_a100_floors(),
            },
            replay=True,
        ),
        Recipe(
            name="vllm-rtxpro6000-llama31-8b",
            sources=("{gpu}/llmservingsim-llama31-8b-rtxpro6000/vllm/requests.jsonl",),
            format="llmservingsim",
            options={
                "model": "meta-llama/Llama-3.1-8B",
                "hardware": "1x NVIDIA RTX PRO 6000 Blackwell Server Edition",
                "kv_capacity_tokens": 537_000,
                "block_size": 16,
                "max_evaluations": 200,
                "params": STEP_PARAMS,
            },
            replay=True,
        ),
        _local_cpu(
            "vllm-cpu-smollm2-135m",
            "bf16",
            "AMD EPYC family 26 model 2, AVX-512; the model's thread isolated on one, the API"
            " server and runner on the other",
            cpu_variants={
                "avx2": "vllm-cpu-smollm2-135m-avx2",
                "avx512-amd-family25": "vllm-cpu-smollm2-135m-zen4",
            },
        ),
        _local_cpu(
            "vllm-cpu-smollm2-135m-zen4",
            "bf16",
            "AMD EPYC family 25 model 17 (Zen 4), AVX-512; the model's thread isolated on one,"
            " the API server and runner on the other",
        ),
        _local_cpu(
            "vllm-cpu-smollm2-135m-avx2",
            "float32",
            "AVX2 only; the model's thread isolated on one, the API server and runner on the other",
        ),
    )
}


def source_paths(sources: tuple[str, ...], data: Path = GPU_DATA) -> list[Path]:
    """Paths as the fit records them: relative to the working directory (the repository's
    root: ``../shared/data/gpu/…``) where they can be."""
    paths = [
        Path(s.replace("{gpu}", str(data))) if "{gpu}" in s else REPOSITORY / s for s in sources
    ]
    return [Path(os.path.relpath(p)) if p.is_absolute() else p for p in paths]


def recipe_tables(recipe: Recipe, data: Path = GPU_DATA) -> list[TraceTable]:
    return read_tables(source_paths(recipe.sources, data), recipe.format, recipe.select)


def recipe_options(recipe: Recipe) -> CalibrationOptions:
    shipped = load_profile(recipe.name, exact=True)
    options = {
        "name": recipe.name,
        "description": shipped.description,
        "notes": _citation(shipped.provenance),
        **recipe.options,
    }
    return CalibrationOptions.model_validate(options)


def _citation(provenance: Provenance) -> str:
    """The shipped notes without what a fit adds to them itself."""
    return provenance.notes.split(" Not identified by the data")[0]


def refit(recipe: Recipe, data: Path = GPU_DATA) -> VllmProfile:
    options = recipe_options(recipe)
    if recipe.format == "profiling":
        profile = fit_profiling_run(source_paths(recipe.sources, data), options)
    else:
        tables = recipe_tables(recipe, data)
        if recipe.first is not None:
            start = calibrate(tables, options.model_copy(update=recipe.first))
            options = options.model_copy(update={"initial": start})
        fitted = calibrate(tables, options)
        assert isinstance(fitted, VllmProfile)
        profile = fitted
    # sources as the repository cites them (the data folder beside it)
    cited = [s.replace("{gpu}", "../shared/data/gpu") for s in recipe.sources]
    provenance = profile.provenance.model_copy(update={"sources": cited})
    speed = speed_spread(read_speed_log(REPOSITORY / recipe.speed_log)) if recipe.speed_log else {}
    return profile.model_copy(
        update={
            "provenance": provenance,
            "cpu_variants": recipe.cpu_variants,
            "speed_rel_sd": speed,
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Regenerate shipped profiles from their sources.")
    parser.add_argument("names", nargs="*", help=f"default: all ({', '.join(RECIPES)})")
    parser.add_argument("--data", type=Path, default=GPU_DATA)
    args = parser.parse_args()
    for name in args.names or list(RECIPES):
        profile = refit(RECIPES[name], args.data)
        save_profile(profile, SHIPPED_DIR / f"{name}.json")
        print(f"{name}: {profile.step.model_dump()}; rel sd {profile.step_rel_sd}")


if __name__ == "__main__":
    main()
