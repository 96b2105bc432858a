"""From tables to a profile: pick the route, fit, and record provenance and fit quality.

Routes (``method``): ``direct`` fits the step cost to step rows (isolating measurements);
``replay`` fits it by replaying request rows in the simulator; ``auto`` takes ``direct`` when
the sources have step rows and ``replay`` otherwise. An ``api`` profile is fitted from
request rows alone (TTFT line + jitter, ITL distribution).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from calibration.fit_latency import fit_api, fit_network
from calibration.fit_replay import (
    EXPONENT,
    EXPONENT_CANDIDATES,
    REPLAY_PARAMS,
    Progress,
    Target,
    fit_by_replay,
    fit_table_correction,
    initial_step_cost,
    replay_quality,
)
from calibration.fit_steps import fit_step_cost
from calibration.replay import EngineSettings, plan
from calibration.table import STEP_PARAMS, StepRow, TraceTable
from calibration.uncertainty import UNIDENTIFIED_REL_SD, held_by_floor
from sim.errors import ConfigError
from sim.profile import ApiProfile, OperatorTables, Provenance, StepCost, VllmProfile
from sim.step_tables import MeasuredTables

Profile = VllmProfile | ApiProfile
PROVENANCE_FIELDS = ("engine", "engine_version", "model", "hardware")  # not repeated in settings


class CalibrationOptions(BaseModel):
    """What the sources do not say (or what to say instead of them)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["vllm", "api"] = "vllm"
    method: Literal["auto", "direct", "replay"] = "auto"
    model: str | None = None
    hardware: str | None = None
    engine: str | None = None
    engine_version: str | None = None
    scheduler: Literal["mixed", "prefill_first"] | None = None
    prompt_padding: int | None = Field(
        None, ge=0, description="VllmProfile.prompt_padding (default: what the sources say)"
    )
    block_size: int | None = Field(None, ge=1)
    kv_capacity_tokens: int | None = Field(None, ge=1)
    engine_limits: EngineSettings = Field(default_factory=EngineSettings)
    params: tuple[str, ...] | None = Field(None, description="step coefficients to fit")
    floors: dict[str, float] = Field(
        default_factory=dict,
        description="lower bounds of step coefficients from the hardware (e.g. a prefill "
        "token's FLOPs at the chip's peak), for what the data cannot identify",
    )
    initial: VllmProfile | None = Field(None, description="start (and fixed values) of the fit")
    exponents: tuple[float, ...] = Field(
        EXPONENT_CANDIDATES,
        min_length=2,
        description="the batch exponents a replay fit tries (each with a full search)",
    )
    max_evaluations: int = Field(150, ge=5, description="simulations a replay fit may run")
    per_run_speed: bool = Field(
        False,
        description="replay fit of several runs: replay each at its own engine speed, read "
        "from its first requests' TTFTs (a run slower as a whole, e.g. another tenant or "
        "clock, then does not bend the step's form); the profile is the runs' mean engine",
    )
    chars_per_token: float | None = Field(None, gt=0, description="the tokenizer's, measured")
    request_overhead_serial: bool | None = Field(
        None,
        description="the API server prepares one request at a time (VllmProfile's); None: as "
        "the initial profile says, else not",
    )
    operator_tables: bool = Field(
        False,
        description="price steps with an operator profile's measured tables (kept beside the "
        "profile) instead of the fitted formula; request traces given with it fit the serving "
        "run's correction",
    )
    description: str = ""
    notes: str = ""
    machine: str = Field("", description="sim.profile.this_machine() if measured live here")

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = [p for p in params or () if p not in REPLAY_PARAMS]
        if unknown:
            raise ValueError(
                f"unknown step parameter(s) {', '.join(unknown)} "
                f"(known: {', '.join(REPLAY_PARAMS)})"
            )
        return params

    @field_validator("exponents")
    @classmethod
    def _exponents_in_range(cls, exponents: tuple[float, ...]) -> tuple[float, ...]:
        if not all(0 < e <= 1 for e in exponents) or len(set(exponents)) < len(exponents):
            raise ValueError("batch exponents must be distinct numbers in (0, 1]")
        return exponents

    @field_validator("floors")
    @classmethod
    def _known_floors(cls, floors: dict[str, float]) -> dict[str, float]:
        unknown = [p for p in floors if p not in STEP_PARAMS]
        if unknown:
            raise ValueError(
                f"no floor for {', '.join(unknown)} (step coefficients: {', '.join(STEP_PARAMS)})"
            )
        negative = [p for p, v in floors.items() if not v >= 0]
        if negative:
            raise ValueError(f"a floor must be a number >= 0 ({', '.join(negative)})")
        return floors


def calibrate(
    tables: list[TraceTable], options: CalibrationOptions, progress: Progress | None = None
) -> Profile:
    if options.kind == "api":
        return _api_profile(tables, options)
    method = options.method
    if method == "auto":
        method = "direct" if any(t.steps for t in tables) else "replay"
    start = start_profile(tables, options)
    fit: dict[str, Any] = {"method": method}
    if method == "direct":
        if EXPONENT in (options.params or ()):
            raise ConfigError(
                f"--fit {EXPONENT}: only a replay fit (request traces) can fit the batch "
                "exponent; a direct fit of step measurements keeps it at 1"
            )
        result = fit_step_cost(
            [s for t in tables for s in t.steps],
            options.params or STEP_PARAMS,
            start.step,
            options.floors,
        )
        profile = start.model_copy(update={"step": result.cost, "step_rel_sd": result.rel_sd})
        fit.update(
            fitted=result.fitted,
            not_identifiable=result.not_identifiable,
            correlation=result.correlation,
            steps=result.quality,
        )
    else:
        replayed = fit_by_replay(
            tables,
            start,
            options.engine_limits,
            options.params or REPLAY_PARAMS,
            options.max_evaluations,
            progress,
            options.floors,
            options.exponents,
            options.per_run_speed,
        )
        profile = replayed.profile.model_copy(update={"step_rel_sd": replayed.uncertainty.rel_sd})
        fit.update(
            fitted=replayed.fitted,
            not_identifiable=replayed.uncertainty.not_identifiable,
            correlation=replayed.uncertainty.correlation,
            replay=replayed.quality,
        )
        peaks = [t.kv_occupancy_peak(profile.block_size) for t in tables]
        fit["kv_occupancy_peak_tokens"] = max((p for p in peaks if p is not None), default=None)
    if options.floors:
        fit["floors"] = options.floors
        profile = _floor_noted(profile, fit["not_identifiable"], options.floors)
    if options.operator_tables:
        profile = _priced_by_tables(profile, tables, options, fit, progress)
    network = fit_network(tables)
    if network is not None:
        profile = profile.model_copy(update={"network": network[0]})
        fit["network"] = network[1]
    return profile.model_copy(update={"fit": fit})


def _priced_by_tables(
    profile: VllmProfile,
    tables: list[TraceTable],
    options: CalibrationOptions,
    fit: dict[str, Any],
    progress: Progress | None,
) -> VllmProfile:
    """The profile priced by the operator tables of its source; if request traces came with
    them, their replay fits the correction — reported apart from the tables' own accuracy."""
    sources = [t for t in tables if t.operator_tables is not None]
    if len(sources) != 1:
        raise ConfigError(
            "--tables needs exactly one operator profile among the sources "
            f"(format llmservingsim-profile); got {len(sources)}"
        )
    (source,) = sources
    operator = source.operator_tables
    assert operator is not None
    spec = OperatorTables(
        file=f"{options.name}.npz",
        layers=operator.layers,
        per_layer_ops=list(operator.per_layer_ops),
        once_ops=list(operator.once_ops),
        per_sequence_ops=list(operator.per_sequence_ops),
        decode_skew_alpha=source.settings.get("decode_skew_alpha", 0.0),
    )
    profile = profile.with_tables(spec, operator)
    fit["step_formula"] = "fallback only: the operator tables price every step"
    traces = [t for t in tables if t.served]
    if not traces:
        return profile
    plans = [plan(t, "vllm", options.engine_limits) for t in traces]
    targets = [Target(t, p) for t, p in zip(traces, plans, strict=True)]
    fit["tables_alone"] = replay_quality(plans, targets, profile)
    corrected = fit_table_correction(
        traces, profile, options.engine_limits, options.max_evaluations, progress
    )
    correction = corrected.profile.operator_tables
    assert correction is not None
    fit["correction"] = {
        **correction.correction.model_dump(),
        "request_overhead_s": corrected.profile.request_overhead_s,
        "fitted_on": [t.source for t in traces],
        **corrected.quality,
    }
    return corrected.profile


def step_floors(sibling: VllmProfile) -> dict[str, float]:
    """A sibling profile's step coefficients as floors — e.g. a kernel-timing profile of the
    same model and GPU bounds an engine that adds its own overheads on top — where its data
    measured them (not flagged, not zero)."""
    unmeasured = set(sibling.fit.get("not_identifiable", []))
    return {
        p: getattr(sibling.step, p)
        for p in STEP_PARAMS
        if getattr(sibling.step, p) > 0
        and p not in unmeasured
        and sibling.step_rel_sd.get(p, 0.0) < UNIDENTIFIED_REL_SD
    }


SIBLING_CONTEXTS = (128, 256, 512, 1024, 2048)  # mean decode contexts: ShareGPT-like runs


def decode_costs_from_tables(
    tables: MeasuredTables, max_num_seqs: int, contexts: tuple[int, ...] = SIBLING_CONTEXTS
) -> dict[str, float]:
    """What an operator profile of the same model and GPU (its measured tables alone, never a
    request) says a decoding sequence and a context token cost: a linear fit of its decode-only
    steps over batches 1…``max_num_seqs`` at uniform ``contexts``. Floors for, or values held
    in, a request-level fit whose data cannot separate them from the step's fixed part (the
    first half of an overloaded run, whose batch only grows)."""
    batches = sorted({int(b) for b in np.geomspace(1, max_num_seqs, 8).round()})
    rows = [
        StepRow(
            1e-6 * tables.step_us(0, 0, 0, batch, batch * context, context),
            decode_seqs=batch,
            context_tokens=batch * context,
        )
        for batch in batches
        for context in contexts
    ]
    cost = fit_step_cost(rows, ("base_s", "decode_seq_s", "context_token_s")).cost
    return {"decode_seq_s": cost.decode_seq_s, "context_token_s": cost.context_token_s}


def _floor_noted(
    profile: VllmProfile, not_identifiable: list[str], floors: dict[str, float]
) -> VllmProfile:
    """Say in the provenance which coefficients rest on a hardware floor, not on the data."""
    held = [
        f"{p} = {getattr(profile.step, p):.3g} s"
        for p in not_identifiable
        if held_by_floor(getattr(profile.step, p), floors.get(p, 0.0))
    ]
    if not held:
        return profile
    sentence = (
        f"Not identified by the data, held at the hardware floor given to the fit: "
        f"{', '.join(held)}."
    )
    notes = f"{profile.provenance.notes} {sentence}".strip()
    return profile.model_copy(
        update={"provenance": profile.provenance.model_copy(update={"notes": notes})}
    )


def _settings(tables: list[TraceTable]) -> dict[str, Any]:
    """What the sources say about the engine, where they agree (a per-file fact such as one
    run's request rate is left out)."""
    merged: dict[str, Any] = {}
    conflicting: set[str] = set()
    for table in tables:
        for key, value in table.settings.items():
            if key in merged and merged[key] != value:
                conflicting.add(key)
            merged.setdefault(key, value)
    return {key: value for key, value in merged.items() if key not in conflicting}


def start_profile(tables: list[TraceTable], options: CalibrationOptions) -> VllmProfile:
    """The profile a fit starts from: ``--initial``, or one made from the sources' facts."""
    settings = _settings(tables)
    limits = options.engine_limits
    scheduler = options.scheduler or settings.get("scheduler") or "mixed"
    if options.initial is not None:
        step = options.initial.step
    elif any(t.steps for t in tables) or options.method == "direct":
        step = StepCost(base_s=0.0)
    else:
        step = initial_step_cost(tables)
    recorded = {
        "scheduler": scheduler,
        "max_num_seqs": limits.max_num_seqs or settings.get("max_num_seqs"),
        "max_num_batched_tokens": limits.max_num_batched_tokens
        or settings.get("max_num_batched_tokens"),
        **{k: v for k, v in settings.items() if _scalar(v) and k not in PROVENANCE_FIELDS},
    }
    if isinstance(settings.get("local_server"), dict):  # how the embedded server ran
        recorded["local_server"] = settings["local_server"]
    base = options.initial
    return VllmProfile(
        name=options.name,
        description=options.description or (base.description if base else ""),
        provenance=_provenance(tables, options, settings, recorded),
        block_size=options.block_size or (base.block_size if base else 16),
        kv_capacity_tokens=options.kv_capacity_tokens
        or (base.kv_capacity_tokens if base else 1_000_000),
        chars_per_token=options.chars_per_token or (base.chars_per_token if base else 4.0),
        scheduler=scheduler,
        prompt_padding=_prompt_padding(options, settings, scheduler),
        step=step,
        request_overhead_s=base.request_overhead_s if base else 0.0,
        request_overhead_serial=options.request_overhead_serial
        if options.request_overhead_serial is not None
        else (base.request_overhead_serial if base else False),
    )


def _prompt_padding(
    options: CalibrationOptions, settings: dict[str, Any], scheduler: str
) -> int | None:
    """The option, else the start profile's, else the sources' — for the scheduler that pads."""
    if options.prompt_padding is not None:
        return options.prompt_padding
    if options.initial is not None and options.initial.prompt_padding is not None:
        return options.initial.prompt_padding
    padding = settings.get("prompt_padding")
    return int(padding) if padding is not None and scheduler == "prefill_first" else None


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and value != ""


def _provenance(
    tables: list[TraceTable],
    options: CalibrationOptions,
    settings: dict[str, Any],
    recorded: dict[str, Any],
) -> Provenance:
    model = options.model or settings.get("model")
    hardware = options.hardware or settings.get("hardware")
    if not model or not hardware:
        missing = " and ".join(
            n for n, v in (("--model", model), ("--hardware", hardware)) if not v
        )
        raise ConfigError(
            f"the sources do not say which model/hardware they measured: pass {missing}"
        )
    return Provenance(
        engine=options.engine or str(settings.get("engine", "vllm")),
        engine_version=options.engine_version or str(settings.get("engine_version", "")),
        model=str(model),
        hardware=str(hardware),
        settings={k: v for k, v in recorded.items() if v is not None},
        date=date.today().isoformat(),
        sources=[t.source for t in tables],
        notes=options.notes,
        machine=options.machine,
    )


def _api_profile(tables: list[TraceTable], options: CalibrationOptions) -> ApiProfile:
    settings = _settings(tables)
    fitted = fit_api(tables)
    network = fit_network(tables)
    fit: dict[str, Any] = {"method": "api", **fitted.quality}
    if network is not None:
        fit["network"] = network[1]
    return ApiProfile(
        kind="api",
        name=options.name,
        description=options.description,
        provenance=_provenance(tables, options, settings, {}),
        block_size=options.block_size or 16,
        network=network[0] if network else None,
        ttft_base_s=fitted.ttft_base_s,
        ttft_per_uncached_token_s=fitted.ttft_per_uncached_token_s,
        ttft_jitter=fitted.ttft_jitter,
        itl=fitted.itl,
        fit=fit,
    )
