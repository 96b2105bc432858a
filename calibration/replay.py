"""Trace-driven replay: a measured trace's requests, re-run in the simulator on a profile.

Every request keeps its measured send time, prompt length and output length, so the
prediction differs from the measurement only by the timing model — the separation the
validation needs. A stairwise trace re-runs its own scenario (any topology); other sources
become one agent on one server, whose prompt is exactly the measured prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field

from calibration.table import RequestRow, TraceTable
from sim.errors import ConfigError
from sim.metrics import METRICS, error_pct, stats, summarize
from sim.profile import ApiProfile, VllmProfile, parse_profile
from sim.scenario import Scenario, scenario_from_dict
from sim.simulator import Simulator
from sim.texts import MESSAGE_CLOSE_TOKENS, MESSAGE_OPEN_TOKENS
from sim.trace import (
    TRACE_SCHEMA,
    CallEndRecord,
    CallRecord,
    DeltasRecord,
    Record,
    RequestEndRecord,
    RequestRecord,
    TraceRecord,
    read_trace,
)
from sim.workload import RequestSpec

SERVER = "engine"
AGENT = "solo"
# The one-agent prompt is [system ""][user query][assistant open]: framing around the query.
FRAMING_TOKENS = 2 * (MESSAGE_OPEN_TOKENS + MESSAGE_CLOSE_TOKENS) + MESSAGE_OPEN_TOKENS
ERROR_KEYS = (("ttft", "p50"), ("ttft", "p90"), ("tpot", "p50"), ("e2e", "p50"))
TOKEN_TIME_METRICS = ("itl_s", "stall_s", "time_to_k_tokens_s")

Profile = VllmProfile | ApiProfile


class EngineSettings(BaseModel):
    """The replayed server's limits; unset ones come from the trace's source, then vLLM's
    defaults (the scenario's)."""

    model_config = ConfigDict(extra="forbid")

    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    kv_capacity_tokens: int | None = Field(None, ge=1)
    server: str | None = Field(None, description="stairwise traces: the server to replace")

    def limits(self, table: TraceTable, kind: str) -> dict[str, Any]:
        if kind != "vllm":
            return {}
        names = ("max_num_seqs", "max_num_batched_tokens", "kv_capacity_tokens")
        merged = {n: getattr(self, n) or table.settings.get(n) for n in names}
        return {n: int(v) for n, v in merged.items() if v is not None}


@dataclass
class ReplayPlan:
    scenario: Scenario
    specs: list[RequestSpec]
    rows: list[RequestRow]  # the measured request behind each spec (same index)
    server: str
    fixed_profiles: dict[str, Profile]  # the other servers of a stairwise scenario


def plan(table: TraceTable, kind: str, engine: EngineSettings) -> ReplayPlan:
    if table.scenario is not None:
        return _scenario_plan(table, kind, engine)
    rows = table.served
    if not rows:
        raise ConfigError(f"{table.source}: no served requests to replay")
    arrivals_known = all(r.arrival_s is not None for r in rows)
    if not arrivals_known and not table.settings.get("max_concurrency"):
        raise ConfigError(
            f"{table.source}: no send times and no max_concurrency: cannot replay its arrivals"
        )
    server: dict[str, Any] = {"kind": kind, "profile": "replayed", **engine.limits(table, kind)}
    workload: dict[str, Any] = {"requests": len(rows)}
    if not arrivals_known:
        workload["arrival"] = {"kind": "closed", "concurrency": table.settings["max_concurrency"]}
    scenario = scenario_from_dict(
        {
            "name": f"replay of {Path(table.source).name}",
            "servers": {SERVER: server},
            "topology": {
                "kind": "graph",
                "agent": {"system_prompt": ""},
                "unit": {"tokens": max(r.output_tokens for r in rows)},
                "agents": {AGENT: {"steps": 1}},
            },
            "workload": workload,
        },
        table.source,
    )
    specs = [
        RequestSpec(
            index=i,
            prompt_tokens=max(1, row.prompt_tokens - FRAMING_TOKENS),
            output_tokens={AGENT: row.output_tokens},
            arrival_s=row.arrival_s,
        )
        for i, row in enumerate(rows)
    ]
    return ReplayPlan(scenario, specs, rows, SERVER, {})


def _scenario_plan(table: TraceTable, kind: str, engine: EngineSettings) -> ReplayPlan:
    data = dict(table.scenario or {})
    servers = data.get("servers", {})
    server = engine.server or (next(iter(servers)) if len(servers) == 1 else None)
    if server is None or server not in servers:
        raise ConfigError(
            f"{table.source}: name the server to calibrate with --server "
            f"(the trace has {', '.join(servers) or 'none'})"
        )
    data["servers"] = {
        **servers,
        server: {**servers[server], "kind": kind, **engine.limits(table, kind)},
    }
    scenario = scenario_from_dict(data, table.source)
    # a closed loop is replayed as one (each user's next request follows its last answer);
    # pinning its measured send times would turn a slightly slow model into overlapping
    # requests the real run never had
    closed = scenario.workload.arrival.kind == "closed"
    specs = [_stairwise_spec(i, row, closed) for i, row in enumerate(table.requests)]
    fixed = {
        name: parse_profile(profile, f"{table.source} header")
        for name, profile in table.profiles.items()
        if name != server and name in scenario.servers
    }
    return ReplayPlan(scenario, specs, list(table.requests), server, fixed)


def _stairwise_spec(index: int, row: RequestRow, closed: bool) -> RequestSpec:
    return RequestSpec(
        index=index,
        prompt_tokens=row.query_tokens or row.prompt_tokens,
        output_tokens=dict(row.agent_outputs),
        arrival_s=None if closed else row.arrival_s,
    )


def replay(replay_plan: ReplayPlan, profile: Profile) -> list[Record]:
    profiles = {**replay_plan.fixed_profiles, replay_plan.server: profile}
    simulator = Simulator(replay_plan.scenario, requests=replay_plan.specs, profiles=profiles)
    return simulator.run().records


# --- what was measured, in the trace schema ------------------------------------------------------


def observed_summary(table: TraceTable) -> dict[str, Any]:
    """The measured run summarised by the same metrics module as the prediction."""
    if table.format == "stairwise":
        return summarize(read_trace(table.source))
    summary = summarize(observed_records(table))
    if not table.token_times:  # only first and last token times: no gaps to speak of
        for key in TOKEN_TIME_METRICS:
            summary[key] = {
                **stats([]),
                **({"k": summary[key]["k"]} if "k" in summary[key] else {}),
            }
    return summary


def observed_records(table: TraceTable) -> list[Record]:
    records: list[Record] = [
        {
            "type": "header",
            "schema": TRACE_SCHEMA,
            "source": f"observed ({table.format})",
            "name": Path(table.source).name,
            "scenario": {},
        }
    ]
    for req, row in enumerate(table.requests):
        records += _request_records(req, row)
    return records


def _request_records(req: int, row: RequestRow) -> list[Record]:
    sent = row.arrival_s or 0.0
    request = RequestRecord(type="request", req=req, t=sent, prompt_tokens=row.prompt_tokens)
    if not row.ok or row.ttft_s is None or row.e2e_s is None:
        failed = RequestEndRecord(type="request_end", req=req, t=sent, ok=False, reason="failed")
        return cast(list[Record], [request, failed])
    times, counts = _delta_times(row)
    end = sent + row.e2e_s
    records: list[TraceRecord] = [
        request,
        CallRecord(
            type="call",
            req=req,
            call="c",
            agent=AGENT,
            round=1,
            server=SERVER,
            t=sent,
            tokens=row.output_tokens,
            final=True,
        ),
        DeltasRecord(type="deltas", req=req, call="c", t=[sent + t for t in times], n=counts),
        CallEndRecord(
            type="call_end",
            req=req,
            call="c",
            t=end,
            status="ok",
            prompt_tokens=row.prompt_tokens,
            cached_tokens=row.cached_tokens or 0,
            completion_tokens=row.output_tokens,
            queued_s=None,
            reason="",
        ),
        RequestEndRecord(type="request_end", req=req, t=end, ok=True, reason=""),
    ]
    return cast(list[Record], records)


def _delta_times(row: RequestRow) -> tuple[list[float], list[int]]:
    """Delta times since the request was sent, and the tokens each carried."""
    assert row.ttft_s is not None and row.e2e_s is not None
    if row.itls_s is not None:
        times = [row.ttft_s]
        for gap in row.itls_s:
            times.append(times[-1] + gap)
    else:
        times = [row.ttft_s, row.e2e_s] if row.output_tokens > 1 else [row.ttft_s]
    counts = [1] * len(times)
    counts[-1] += max(0, row.output_tokens - len(times))  # chunks that carried several tokens
    return times, counts


# --- predicted vs observed ---------------------------------------------------------------------


def compare(table: TraceTable, profile: Profile, engine: EngineSettings) -> dict[str, Any]:
    """``stairwise replay --json``: both summaries and the errors of the headline quantiles."""
    predicted = summarize(replay(plan(table, profile.kind, engine), profile))
    observed = observed_summary(table)
    return {
        "predicted": predicted,
        "observed": observed,
        "error_pct": quantile_errors(predicted, observed),
    }


def quantile_errors(predicted: dict[str, Any], observed: dict[str, Any]) -> dict[str, float | None]:
    """``{"ttft_p50": %, ...}`` of the quantiles a replay is judged by."""
    return {
        f"{name}_{q}": error_pct(predicted[METRICS[name].key][q], observed[METRICS[name].key][q])
        for name, q in ERROR_KEYS
    }
