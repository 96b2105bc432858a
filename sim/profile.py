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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sim.distributions import LatencyDist
from sim.errors import DISTRIBUTION_TAGS, ConfigError, one_line

PROFILE_SCHEMA = 1
SHIPPED_DIR = Path(__file__).parent / "profiles"


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

    def seconds(
        self, prefill_tokens: int, prefill_attention: float, decode_seqs: int, context: int
    ) -> float:
        charged_seqs = max(0, decode_seqs - self.decode_seqs_free)
        return (
            self.base_s
            + self.prefill_token_s * prefill_tokens
            + self.prefill_attention_s * prefill_attention
            + self.decode_seq_s * charged_seqs**self.decode_seq_exponent
            + self.context_token_s * context
            + (self.prefill_step_s if prefill_tokens else 0.0)
        )


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


class VllmProfile(ProfileBase):
    kind: Literal["vllm"] = "vllm"
    # "mixed": vLLM V1 — every step decodes all running sequences and prefills (chunked) up to
    # the token budget. "prefill_first": vLLM <= 0.4 — a prefill-only step whenever waiting
    # prompts fit, decode-only steps otherwise.
    scheduler: Literal["mixed", "prefill_first"] = "mixed"
    step: StepCost
    step_rel_sd: dict[str, float] = Field(
        default_factory=dict,
        description="1-sigma relative uncertainty of each StepCost parameter, by field name "
        "(from the fit); a missing name means not measured",
    )
    request_overhead_s: float = Field(0.0, ge=0, description="API server time before queueing")


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


def measured_here(profile: VllmProfile | ApiProfile) -> bool:
    return bool(profile.provenance.machine) and profile.provenance.machine == this_machine()


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in SHIPPED_DIR.glob("*.json"))


def load_profile(name_or_path: str, base_dir: Path | None = None) -> VllmProfile | ApiProfile:
    """A shipped profile by name, or a profile JSON by path (relative to ``base_dir``)."""
    path = Path(name_or_path)
    if "/" not in name_or_path and (SHIPPED_DIR / f"{name_or_path}.json").exists():
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
    return parse_profile(data, str(path))


def parse_profile(data: Any, source: str) -> VllmProfile | ApiProfile:
    if isinstance(data, dict) and data.get("schema_version", PROFILE_SCHEMA) != PROFILE_SCHEMA:
        raise ConfigError(
            f"{source}: profile schema_version {data.get('schema_version')} is not supported "
            f"(this stairwise reads {PROFILE_SCHEMA})"
        )
    try:
        return _ProfileFile.model_validate({"profile": data}).profile
    except ValidationError as exc:
        tags = DISTRIBUTION_TAGS | {"profile", "vllm", "api"}  # "profile": the wrapper field
        raise ConfigError(one_line(exc, source, "profile", tags)) from None


def save_profile(profile: VllmProfile | ApiProfile, path: Path) -> None:
    path.write_text(json.dumps(profile.model_dump(mode="json"), indent=2) + "\n")
