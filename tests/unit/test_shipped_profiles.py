"""Every parametric shipped profile is what its recipe (calibration/shipped.py) makes of
its sources.

Direct fits (Splitwise, Argonne) are refitted in full: seconds. A replay fit searches for
minutes, so for those the shipped parameters' objective is re-evaluated instead — the replay
of the sources at the shipped parameters must give the quantile errors the file records, and
the uncertainty at them must be the file's ``step_rel_sd`` — and the CPU profile's first,
direct stage is refitted in full. Needs the public GPU data at ../shared/data/gpu.
"""

from __future__ import annotations

import pytest

from calibration.fit_replay import EXPONENT, Target, replay_quality, replay_uncertainty
from calibration.profiling import alone_requests, fit_single_sequence
from calibration.readers import read_tables
from calibration.replay import EngineSettings, plan
from calibration.shipped import (
    GPU_DATA,
    RECIPES,
    REPOSITORY,
    recipe_options,
    recipe_tables,
    refit,
    source_paths,
)
from calibration.speed import read_speed_log, speed_spread
from sim.profile import StepCost, VllmProfile, load_profile, shipped_profiles

DIRECT = [name for name, recipe in RECIPES.items() if not recipe.replay]
REPLAYED = [name for name, recipe in RECIPES.items() if recipe.replay]


def shipped(name: str) -> VllmProfile:
    profile = load_profile(name, exact=True)
    assert isinstance(profile, VllmProfile)
    return profile


def test_every_shipped_profile_has_a_recipe_and_an_uncertainty_per_fitted_parameter():
    assert GPU_DATA.is_dir(), f"the public GPU data are expected at {GPU_DATA}"
    # a profile priced by operator tables has its own route (docs/calibration.md)
    parametric = [
        n
        for n in shipped_profiles()
        if getattr(load_profile(n, exact=True), "operator_tables", None) is None
    ]
    assert sorted(RECIPES) == parametric
    for name in RECIPES:
        profile = shipped(name)
        fitted = [p for p in profile.fit["fitted"] if p in StepCost.model_fields]
        assert fitted and set(fitted) <= set(profile.step_rel_sd), name
        assert all(0 <= v <= 1 for v in profile.step_rel_sd.values()), name
        assert "not_identifiable" in profile.fit, name
        assert profile.cpu_variants == RECIPES[name].cpu_variants, name


@pytest.mark.parametrize("name", [n for n, r in RECIPES.items() if r.speed_log])
def test_a_speed_spread_is_what_its_probed_runs_give(name):
    """The spread is taken around the profile the runs were probed against, so the log must
    name it (the Zen 4 machine's runs, assumed for the other local variants)."""
    log = read_speed_log(REPOSITORY / RECIPES[name].speed_log)
    assert {run.profile for run in log} == {"vllm-cpu-smollm2-135m-zen4"}
    assert shipped(name).speed_rel_sd == pytest.approx(speed_spread(log))
    assert min(shipped(name).speed_rel_sd.values()) > 0.02  # a machine whose speed moves


@pytest.mark.parametrize("name", DIRECT)
def test_a_direct_profile_refits_to_the_shipped_file(name):
    profile, refitted = shipped(name), refit(RECIPES[name])
    for field, value in profile.step.model_dump().items():
        assert getattr(refitted.step, field) == pytest.approx(value, rel=1e-6, abs=1e-15), field
    assert refitted.step_rel_sd == pytest.approx(profile.step_rel_sd, abs=1e-3)
    assert refitted.fit["not_identifiable"] == profile.fit["not_identifiable"]


@pytest.mark.parametrize("name", REPLAYED)
def test_a_replay_profile_reproduces_its_recorded_objective_and_uncertainty(name):
    """Slow part (about a minute each on a busy machine): the sources are replayed
    2·n + 2 times at the shipped parameters."""
    profile, recipe = shipped(name), RECIPES[name]
    if recipe.format == "profiling":  # stage 1 refitted; stage 2 (batching) re-evaluated
        tables = read_tables(source_paths(recipe.sources), "stairwise")
        single = fit_single_sequence(alone_requests(tables))
        for field in ("prefill_token_s", "prefill_attention_s"):
            assert getattr(single.step, field) == pytest.approx(getattr(profile.step, field))
        assert single.overhead_s == pytest.approx(profile.request_overhead_s)
        engine = EngineSettings()
    else:
        tables = recipe_tables(recipe)
        engine = recipe_options(recipe).engine_limits
    plans = [plan(t, "vllm", engine) for t in tables]
    # a fit at per-run speeds replayed each source at the speed it recorded for it
    speeds = profile.fit["replay"].get("run_speed", {}).get("factors", {})
    assert bool(speeds) == recipe_options(recipe).per_run_speed
    targets = [
        Target(t, p, speed=speeds.get(t.source, 1.0)) for t, p in zip(tables, plans, strict=True)
    ]
    assert len(speeds) in (0, len(targets))
    quality = replay_quality(plans, targets, profile)
    recorded = profile.fit["replay"]["quantile_errors"]
    for now, then in zip(quality["quantile_errors"], recorded, strict=True):
        for key, value in then.items():
            if key != "trace" and value is not None:
                assert now[key] == pytest.approx(value, abs=0.5), (now["trace"], key)
    replayed = ["decode_seq_s", "context_token_s"] if recipe.format == "profiling" else None
    varied = replayed or [p for p in profile.fit["fitted"] if p != EXPONENT]
    floors = recipe_options(recipe).floors
    again = replay_uncertainty(plans, targets, profile, varied, floors)
    for p in varied:
        assert again.rel_sd[p] == pytest.approx(profile.step_rel_sd[p], abs=0.01), p
