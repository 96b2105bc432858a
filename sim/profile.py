"""Engine profiles: the measured cost parameters a simulated server runs on.

A profile is a versioned JSON file — parameters, fit quality and provenance — so every
prediction can say which hardware, engine and measurements it stands on. Shipped profiles
live in ``sim/profiles/`` and are selected by name; users pass a path to their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from sim.distributions import LatencyDist
from sim.errors import DISTRIBUTION_TAGS, ConfigError, one_line
from sim.step_tables import MeasuredTables, TableStepCost, load_tables, save_tables

PROFILE_SCHEMA = 1
SHIPPED_DIR = Path(__file__).parent / "profiles"
SHORT_RUN = 16  # decode runs up to this many steps are priced in plain floats, not numpy
# The step-cost parameters each phase's speed scales: an engine probe reads one factor per
# phase, and a run-to-run change of the machine's speed moves a phase's parameters together.
PREFILL_PARAMS = ("prefill_token_s", "prefill_attention_s", "prefill_step_s")
DECODE_PARAMS = ("base_s", "decode_seq_s", "context_token_s")
SpeedPhase = Literal["prefill", "decode"]
SPEED_PHASES: tuple[SpeedPhase, ...] = ("prefill", "decode")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Provenance(_Strict):
    engine: str
    engine_version: str = ""
    model: str
    hardware: str
    settings: dict[str, Any] = Field(default_factory=dict)
    date: str = ""
    sources: list[str] = Field(default_factory=list)
    notes: str = ""
    machine: str = Field(
        "",
        description="this_machine() of the computer a live profiling run measured: says whether "
        "a profile describes the machine a prediction is made on (empty: another source)",
    )


class StepCost(_Strict):
    """Seconds per engine step: ``base + prefill_token·P + prefill_attention·Σp(k+p)
    + decode_seq·max(0, D − decode_seqs_free)^decode_seq_exponent + context_token·ΣKV
    (+ prefill_step if the step prefills)``.

    P: prompt tokens computed in the step; p, k: each prefill chunk and the context before it
    (so one uncached prompt costs P² — attention); D: decoding sequences; ΣKV: their context.
    ``decode_seqs_free``: how many sequences a step decodes at no extra cost — while decode is
    bound by reading the weights, a few more sequences ride along for free.
    ``decode_seq_exponent`` < 1: each further sequence costs less than the one before — the
    per-sequence work of an engine (scheduling, sampling, output processing) amortises over a
    large batch; measured at 1, 2 and 3 req/s, vLLM 0.2 on an A100 pays ~1.45 ms per sequence at
    5 running and ~1.0 ms at 44.
    """

    base_s: float = Field(ge=0)
    prefill_token_s: float = Field(0.0, ge=0)
    prefill_attention_s: float = Field(0.0, ge=0)
    decode_seq_s: float = Field(0.0, ge=0)
    decode_seqs_free: int = Field(0, ge=0)
    decode_seq_exponent: float = Field(1.0, gt=0, le=1)
    context_token_s: float = Field(0.0, ge=0)
    prefill_step_s: float = Field(0.0, ge=0)
    prices_longest: ClassVar[bool] = False  # the longest decode context adds nothing here

    def seconds(
        self,
        prefill_tokens: int,
        prefill_attention: float,
        decode_seqs: int,
        context: int,
        prefill_context: int = 0,
        prefill_seqs: int = 0,
        longest_context: int = 0,
    ) -> float:
        """The last three are for operator tables (Σ context before the prefill chunks, their
        count, the longest decoding context); the formula's terms already hold what it uses."""
        charged_seqs = max(0, decode_seqs - self.decode_seqs_free)
        return (
            self.base_s
            + self.prefill_token_s * prefill_tokens
            + self.prefill_attention_s * prefill_attention
            + self.decode_seq_s * charged_seqs**self.decode_seq_exponent
            + self.context_token_s * context
            + (self.prefill_step_s if prefill_tokens else 0.0)
        )

    def rescaled(self, prefill: float, decode: float) -> StepCost:
        """These costs with the prefill parameters × ``prefill`` and those every step pays ×
        ``decode``: the same engine running that much slower (> 1) or faster."""
        scaled = {name: getattr(self, name) * prefill for name in PREFILL_PARAMS}
        scaled |= {name: getattr(self, name) * decode for name in DECODE_PARAMS}
        return self.model_copy(update=scaled)

    def decode_run(
        self,
        decode_seqs: int,
        context: int,
        steps: int,
        longest_context: int = 0,
        growth: int | None = None,
    ) -> list[float] | np.ndarray:
        """Durations of ``steps`` consecutive decode-only steps of one batch whose summed
        context grows by ``growth`` tokens a step (one per sequence unless multi-stream):
        plain floats for a short run, an array for a long one — the same floats either way
        (``k`` is exact as a float)."""
        first = self.seconds(0, 0.0, decode_seqs, context)
        per_step = decode_seqs if growth is None else growth
        grow = self.context_token_s * per_step
        if steps <= SHORT_RUN:  # most runs of a crowded batch: numpy would cost more
            return [first + grow * k for k in range(steps)]
        durations = np.arange(steps, dtype=float)  # in place: the floats of first + grow·k
        durations *= grow
        durations += first
        return durations


class StepCorrection(_Strict):
    """What a serving run adds to an operator profile's eager, one-operator-at-a-time timings:
    CUDA graphs and fused launches make the GPU work cheaper (``compute_scale`` < 1), the
    scheduler, input preparation and output processing add CPU time to every step
    (``step_overhead_s``). Fitted on a serving trace by replay; 1 and 0 = the profile alone."""

    compute_scale: float = Field(1.0, gt=0)
    step_overhead_s: float = Field(0.0, ge=0)


class OperatorTables(_Strict):
    """Measured operator tables that price each step instead of ``step`` (sim/step_tables.py):
    ``layers × (attention + per_layer_ops) + once_ops + per_sequence_ops``, then corrected."""

    file: str = Field(description="the .npz sidecar, relative to the profile JSON's folder")
    layers: int = Field(ge=1, description="transformer layers of the whole model")
    per_layer_ops: list[str] = Field(
        min_length=1, description="dense ops every layer runs, by tokens (repeat one run twice)"
    )
    once_ops: list[str] = Field(default_factory=list, description="dense ops run once per step")
    per_sequence_ops: list[str] = Field(
        default_factory=list, description="ops by scheduled sequences (LM head, sampler)"
    )
    decode_skew_alpha: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of the gap to the longest decode context's attention that a batch of "
        "unequal contexts pays over a uniform one at their mean (measured by the profiler)",
    )
    correction: StepCorrection = Field(default_factory=StepCorrection)


class ProfileBase(_Strict):
    schema_version: int = PROFILE_SCHEMA
    name: str
    description: str = ""
    provenance: Provenance
    block_size: int = Field(16, ge=1)
    kv_capacity_tokens: int = Field(1_000_000, ge=1)
    network: LatencyDist | None = Field(None, description="client-server latency when measured")
    chars_per_token: float = Field(
        4.0,
        gt=0,
        description="how the model's tokenizer counts English text: the simulator "
        "sizes fixed texts (system prompts, templates) with it",
    )
    fit: dict[str, Any] = Field(default_factory=dict, description="fit quality, residuals")
    cpu_variants: dict[str, str] = Field(
        default_factory=dict,
        description="the same engine measured on other processors (a key of cpu_keys() -> "
        "shipped profile name): a CPU engine's speed is its processor's, so load_profile "
        "answers with the variant of the most specific key this machine has",
    )


class VllmProfile(ProfileBase):
    kind: Literal["vllm"] = "vllm"
    # "mixed": vLLM V1 — every step decodes all running sequences and prefills (chunked) up to
    # the token budget. "prefill_first": vLLM <= 0.4 — a prefill-only step whenever waiting
    # prompts fit, decode-only steps otherwise.
    scheduler: Literal["mixed", "prefill_first"] = "mixed"
    prompt_padding: int | None = Field(
        None,
        ge=0,
        description="vLLM 0.2-0.3 (prefill_first): a prompt batch runs padded to its longest "
        "prompt — its compute and the max_num_batched_tokens check count the padded tokens — and "
        "takes in no prompt that would pad it by more than this (vLLM's --max-paddings, 256 by "
        "default). None: prompts are packed unpadded (vLLM >= 0.4)",
    )
    step: StepCost
    step_rel_sd: dict[str, float] = Field(
        default_factory=dict,
        description="1-sigma relative uncertainty of each StepCost parameter, by field name "
        "(from the fit); a missing name means not measured",
    )
    speed_rel_sd: dict[SpeedPhase, float] = Field(
        default_factory=dict,
        description="1-sigma relative spread of the engine's speed from one run to another on the "
        "machine the profile describes, per phase (the engine probes beside kept live runs, "
        "against this profile: `stairwise speed-spread`); empty: not measured",
    )
    request_overhead_s: float = Field(0.0, ge=0, description="API server time before queueing")
    request_overhead_serial: bool = Field(
        False,
        description="the API server prepares one request at a time (vLLM's one API-server "
        "process on its own core): requests sent together reach the engine request_overhead_s "
        "apart, so the first is prefilled alone; false: each is delayed by it independently",
    )
    operator_tables: OperatorTables | None = Field(
        None, description="measured operator tables; when present they price steps, not `step`"
    )
    _folder: Path = PrivateAttr(default_factory=Path)  # where a relative sidecar path starts
    _tables: MeasuredTables | None = PrivateAttr(None)  # loaded (or made) operator tables

    @model_validator(mode="after")
    def _speed_spread_needs_the_formula(self) -> VllmProfile:
        if self.speed_rel_sd and self.operator_tables is not None:
            raise ValueError(
                "speed_rel_sd scales the fitted step formula; operator tables price steps here"
            )
        if any(not 0 <= v <= 1 for v in self.speed_rel_sd.values()):
            raise ValueError("speed_rel_sd: each phase's spread must be between 0 and 1")
        return self

    @model_validator(mode="after")
    def _padding_needs_prefill_first(self) -> VllmProfile:
        if self.prompt_padding is not None and self.scheduler != "prefill_first":
            raise ValueError(
                "prompt_padding is vLLM 0.2's prompt batching: it needs scheduler prefill_first"
            )
        return self

    def located(self, folder: Path) -> VllmProfile:
        """This profile, its sidecar found relative to ``folder``."""
        copy = self.model_copy()
        copy._folder = folder
        return copy

    def with_tables(self, spec: OperatorTables, tables: MeasuredTables) -> VllmProfile:
        """This profile priced by ``tables`` (in memory until ``save_profile`` writes them)."""
        copy = self.model_copy(update={"operator_tables": spec})
        copy._tables = tables
        return copy

    @property
    def sidecar(self) -> Path | None:
        """The operator tables' .npz file, if the profile has them."""
        spec = self.operator_tables
        return self._folder / spec.file if spec is not None else None

    def measured_tables(self) -> MeasuredTables | None:
        spec, sidecar = self.operator_tables, self.sidecar
        if spec is not None and sidecar is not None and self._tables is None:
            self._tables = load_tables(
                sidecar,
                spec.layers,
                spec.per_layer_ops,
                spec.once_ops,
                spec.per_sequence_ops,
            )
        return self._tables if spec is not None else None

    def step_pricer(self) -> StepCost | TableStepCost:
        """What the engine calls per step: the operator tables when the profile has them,
        the fitted formula otherwise."""
        tables = self.measured_tables()
        if tables is None or self.operator_tables is None:
            return self.step
        spec = self.operator_tables
        return TableStepCost(
            tables,
            spec.decode_skew_alpha,
            spec.correction.compute_scale,
            spec.correction.step_overhead_s,
        )


class ApiProfile(ProfileBase):
    """A hosted endpoint seen as a black box: TTFT and inter-token latency distributions."""

    kind: Literal["api"]
    ttft_base_s: float = Field(ge=0)
    ttft_per_uncached_token_s: float = Field(0.0, ge=0)
    ttft_jitter: LatencyDist | None = None
    itl: LatencyDist


Profile = Annotated[VllmProfile | ApiProfile, Field(discriminator="kind")]


class _ProfileFile(_Strict):
    profile: Profile


def this_machine() -> str:
    """A fingerprint of this computer: its host name, machine id and processor. A CPU engine's
    speed is the machine's, so a profile measured elsewhere is a guess here."""
    parts = [platform.node(), platform.machine(), str(os.cpu_count())]
    for source, key in ((Path("/etc/machine-id"), ""), (Path("/proc/cpuinfo"), "model name")):
        with contextlib.suppress(OSError):
            lines = source.read_text().splitlines()
            parts += [line for line in lines if line.startswith(key)][:1]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of ``/proc/cpuinfo`` (empty where there is none)."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if not line.strip():
                break
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def cpu_class(cpu_flags: set[str] | None = None) -> str:
    """``avx512`` or ``avx2``: the processor feature that decides a CPU engine's speed most.
    Without AVX-512, vLLM-CPU emulates bfloat16 products: the local server computes in float32
    there and still prefills ~4x slower than on an AVX-512 core (docs/live.md)."""
    if cpu_flags is None:
        cpu_flags = set(_cpuinfo().get("flags", "").split())
    return "avx512" if "avx512f" in cpu_flags else "avx2"


_VENDORS = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}  # vendor_id -> a key's vendor


def cpu_keys() -> list[str]:
    """The keys a profile's ``cpu_variants`` are looked up by, the most specific first: the
    class with the vendor's family (``avx512-amd-family25``: an AMD family is a core
    generation, and Zen 4 and Zen 5 both have AVX-512 but differ ~2x in a CPU engine's
    speed, docs/calibration.md), then the class alone."""
    info = _cpuinfo()
    processor_class = cpu_class(set(info.get("flags", "").split()))
    vendor = _VENDORS.get(info.get("vendor_id", ""))
    if vendor is None or "cpu family" not in info:
        return [processor_class]
    return [f"{processor_class}-{vendor}-family{info['cpu family']}", processor_class]


def cpu_description() -> str:
    """The processor as a profile's provenance names it: model, family/model numbers (two
    chips sold under one name differ there) and class, e.g. ``AMD EPYC, family 26 model 2,
    AVX-512``. Machines of one class still differ in speed by tens of percent."""
    info = _cpuinfo()
    parts = [info.get("model name", platform.processor() or platform.machine())]
    if "cpu family" in info and "model" in info:
        parts.append(f"family {info['cpu family']} model {info['model']}")
    parts.append({"avx512": "AVX-512", "avx2": "AVX2 only"}[cpu_class()])
    return ", ".join(parts)


def measured_here(profile: VllmProfile | ApiProfile) -> bool:
    return bool(profile.provenance.machine) and profile.provenance.machine == this_machine()


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.json"))


def load_profile(
    name_or_path: str, base_dir: Path | None = None, exact: bool = False
) -> VllmProfile | ApiProfile:
    """A shipped profile by name — its variant for this machine's processor if it names one
    (``exact``: the named file itself) — or a profile JSON by path (relative to ``base_dir``),
    that file whatever the machine."""
    path = Path(name_or_path)
    by_name = "/" not in name_or_path and (SHIPPED_DIR / f"{name_or_path}.json").exists()
    if by_name:
        path = SHIPPED_DIR / f"{name_or_path}.json"
    elif not path.is_absolute() and base_dir is not None and (base_dir / path).exists():
        path = base_dir / path
    if not path.exists():
        known = ", ".join(shipped_profiles())
        raise ConfigError(f"profile {name_or_path!r}: no such file or shipped profile ({known})")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable profile JSON ({exc})") from None
    profile = parse_profile(data, str(path))
    variant = None
    if by_name and not exact:
        variants = profile.cpu_variants
        variant = next((variants[key] for key in cpu_keys() if key in variants), None)
    if variant is not None and variant != profile.name:
        return load_profile(variant)
    return profile


def parse_profile(data: Any, source: str) -> VllmProfile | ApiProfile:
    if isinstance(data, dict) and data.get("schema_version", PROFILE_SCHEMA) != PROFILE_SCHEMA:
        raise ConfigError(
            f"{source}: profile schema_version {data.get('schema_version')} is not supported "
            f"(this stairwise reads {PROFILE_SCHEMA})"
        )
    try:
        profile = _ProfileFile.model_validate({"profile": data}).profile
    except ValidationError as exc:
        tags = DISTRIBUTION_TAGS | {"profile", "vllm", "api"}  # "profile": the wrapper field
        raise ConfigError(one_line(exc, source, "profile", tags)) from None
    if isinstance(profile, VllmProfile) and profile.operator_tables is not None:
        profile = profile.located(Path(source).parent)
        profile.step_pricer()  # a broken sidecar is refused now, not mid-simulation
    return profile


def save_profile(profile: VllmProfile | ApiProfile, path: Path) -> None:
    """Write the profile JSON, and its operator tables as ``<same name>.npz`` beside it."""
    if isinstance(profile, VllmProfile) and profile.operator_tables is not None:
        tables = profile.measured_tables()
        assert tables is not None
        sidecar = path.with_suffix(".npz")
        save_tables(sidecar, tables.arrays)
        spec = profile.operator_tables.model_copy(update={"file": sidecar.name})
        profile = profile.model_copy(update={"operator_tables": spec})
    path.write_text(json.dumps(profile.model_dump(mode="json"), indent=2) + "\n")
