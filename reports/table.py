"""A run summary as terminal tables (rich)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from sim.metrics import METRICS, error_pct

LATENCY_ROWS = [(m.title, m.key) for m in METRICS.values() if m.unit == "ms"]
# ours (the stream's speed once it started) and the staircase paper's (it counts the TTFT)
RATE_ROWS = [(f"{m.title} ({m.unit})", m.key) for m in METRICS.values() if m.unit != "ms"]


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1e3:,.1f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _with_interval(stats: dict[str, Any], column: str, render: Callable[[Any], str]) -> str:
    """A quantile and, when the summary has one, its interval in % of it: ``512.3 −6/+9%``
    (relative, because how far off a prediction may be is what the reader weighs)."""
    value, interval = stats[column], stats.get(f"{column}_ci")
    if interval is None or not value:
        return render(value)
    low, high = (100 * (bound - value) / value for bound in interval)
    return f"{render(value)} −{abs(low):.0f}/+{high:.0f}%"


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    title = f"{summary['scenario']} ({summary['source']}): {summary['requests']} requests"
    if summary.get("failed_requests"):
        title += f", {summary['failed_requests']} failed"
    intervals = summary.get("intervals")
    if intervals is not None and intervals["replications"] > 1:
        seeds = "seeds" if intervals["seeds_vary"] else "one seed"
        drawn = [
            what
            for what, servers in (
                ("profile parameters", intervals["parameter_uncertainty"]),
                ("engine speed", intervals.get("speed_spread")),
            )
            if servers
        ]
        sources = (
            f"{seeds}, {' and '.join(drawn)}"
            if drawn
            else f"{seeds} only: the profiles state no parameter uncertainty"
        )
        title += (
            f"; p50, p90 with their {intervals['level']:.0%} prediction interval "
            f"over {intervals['replications']} runs ({sources})"
        )
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for column in ("mean", "p50", "p90", "p99"):
        table.add_column(column, justify="right")
    rows = list(LATENCY_ROWS)
    k = summary["time_to_k_tokens_s"]["k"]
    rows.append((f"time to token {k}", "time_to_k_tokens_s"))
    for label, key in rows:
        s = summary[key]
        table.add_row(
            f"{label} (ms)", *(_with_interval(s, c, _ms) for c in ("mean", "p50", "p90", "p99"))
        )
    for label, key in RATE_ROWS:
        tps = summary[key]
        table.add_row(label, *(_with_interval(tps, c, _num) for c in ("mean", "p50", "p90", "p99")))
    console.print(table)

    totals = Table(show_header=False, box=None, pad_edge=False)
    totals.add_column()
    totals.add_column(justify="right")
    totals.add_row("system throughput (tok/s, all agents)", _num(summary["throughput_tok_s"]))
    totals.add_row("answer throughput (tok/s)", _num(summary["output_throughput_tok_s"]))
    totals.add_row("requests/s", _num(summary["request_throughput_per_s"], 3))
    totals.add_row("prefix-cache hit ratio", f"{summary['prefix_cache_hit_ratio']:.1%}")
    totals.add_row(
        "tokens (prompt / cached / generated)",
        f"{summary['prompt_tokens']:,} / {summary['cached_tokens']:,} / "
        f"{summary['generated_tokens']:,}",
    )
    cost = summary["cost_usd"]
    totals.add_row(
        "cost (total / per request)", f"${cost['total']:.4f} / ${cost['per_request']:.6f}"
    )
    if cost.get("gpu"):  # servers priced per GPU-hour: show the two parts
        totals.add_row("  per token / per GPU-hour", f"${cost['tokens']:.4f} / ${cost['gpu']:.4f}")
    coverage = summary.get("coverage")
    if coverage is not None:
        shares = " / ".join(
            f"{coverage[key]['p50']:.0%}" for key in ("first_token", "k_token", "last_token")
        )
        totals.add_row(f"inputs read behind tokens 1 / {coverage['k']} / last (p50)", shares)
        least = coverage["first_token_min_input_tokens"]
        totals.add_row(
            "fewest tokens of one input behind token 1 (p50 / min)",
            f"{least['p50']:.0f} / {least['min']:.0f}",
        )
    console.print(totals)

    agents = Table(title="per agent (means)", title_justify="left")
    for column in (
        "agent",
        "calls",
        "prompt tok",
        "cached tok",
        "generated",
        "starts (s)",
        "ends (s)",
    ):
        left = column == "agent"
        agents.add_column(column, justify="left" if left else "right", no_wrap=left)
    for name, a in summary["agents"].items():
        agents.add_row(
            name,
            str(a["calls"]) + (f" ({a['failed_calls']} failed)" if a["failed_calls"] else ""),
            _num(a["prompt_tokens_mean"], 0),
            _num(a["cached_tokens_mean"], 0),
            f"{a['generated_tokens']:,}",
            _num(a["first_start_s_mean"], 2),
            _num(a["last_end_s_mean"], 2),
        )
    console.print(agents)


# (metric, quantile) rows of the validation table
VALIDATION_ROWS = [
    ("ttft", "p50"),
    ("ttft", "p90"),
    ("itl", "p50"),
    ("tpot", "p50"),
    ("e2e", "p50"),
    ("stall", "p50"),
    ("tps", "p50"),
    ("tps_e2e", "p50"),
]


def print_validation(name: str, summary: dict[str, Any], console: Console | None = None) -> None:
    """Live vs both predictions; errors are 100·(predicted − live)/live."""
    console = console or Console()
    live = summary["live"]
    table = Table(
        title=f"{name}: live ({live['requests']} requests) vs simulated", title_justify="left"
    )
    scaled = summary.get("error_pct_probe_scaled")
    columns = ["metric", "live", "sim", "error", "trace-driven", "error"]
    columns += ["error, probe-scaled"] if scaled is not None else []
    for column in columns:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, quantile in VALIDATION_ROWS:
        metric = METRICS[name]
        measured = live[metric.key][quantile]
        cells = [f"{metric.label} {quantile} ({metric.unit})", _scaled(measured, metric.scale)]
        for run in ("sim", "sim_trace_driven"):
            predicted = summary[run][metric.key][quantile]
            cells += [_scaled(predicted, metric.scale), _pct(error_pct(predicted, measured))]
        if scaled is not None:
            cells.append(_pct(scaled.get(f"{name}_{quantile}")))
        table.add_row(*cells)
    console.print(table)
    ks = ", ".join(f"{k} {v:.2f}" for k, v in summary["ks"].items() if v is not None)
    console.print(f"KS distance (sim vs live): {ks}")
    if summary.get("prompts", {}).get("calls"):
        console.print(prompts_line(summary["prompts"]))
    held = interval_line(summary)
    if held is not None:
        console.print(held)
    for server, probe in summary.get("probe", {}).items():
        console.print(probe_line(server, probe, summary.get("profiles", {}).get(server, {})))


def prompts_line(prompts: dict[str, Any]) -> str:
    """Whether the simulator priced the prompts the server computed, call by call."""
    return (
        f"prompts, {prompts['calls']} calls: tokens {_pct(prompts['prompt_tokens_error_pct'])}, "
        f"computed (not cached) {_pct(prompts['computed_tokens_error_pct'])}; cached tokens "
        f"the server's on {prompts['cached_tokens_equal_pct']:.0f} % of the calls"
    )


def interval_line(summary: dict[str, Any]) -> str | None:
    """How many live quantiles the predicted intervals hold, and which they miss."""
    verdicts = {k: v for k, v in summary.get("inside_interval", {}).items() if v is not None}
    intervals = summary["sim"].get("intervals")
    if not verdicts or intervals is None:
        return None
    missed = [key.replace("_s.", " ").replace(".", " ") for key, v in verdicts.items() if not v]
    line = (
        f"live inside the {intervals['level']:.0%} interval: {len(verdicts) - len(missed)} of "
        f"{len(verdicts)} quantiles"
    )
    return line + (f" (outside: {', '.join(missed)})" if missed else "")


def probe_line(server: str, probe: dict[str, Any], facts: dict[str, Any]) -> str:
    """What the engine probes said: how far the engine ran from its profile, how much it
    drifted during the runs, whether the profile describes this machine at all, and whether
    the engine ran beyond the run-to-run spread the profile's intervals allow for."""
    factors = probe["factors"]
    where = "measured on this machine" if facts.get("measured_here") else "measured elsewhere"
    drift = max(probe["drift_pct"], default=0.0)
    line = (
        f"engine probe, {server}: prefill {100 * (factors['prefill'] - 1):+.0f} %, decode "
        f"{100 * (factors['decode'] - 1):+.0f} % against {probe['profile']} ({where}); "
        f"drift during the runs up to {drift:.0f} %"
    )
    spread = facts.get("speed_rel_sd") or {}
    beyond = [
        f"{phase} (±{100 * sd:.0f} %)"
        for phase, sd in spread.items()
        if abs(math.log(factors[phase])) > 2 * math.sqrt(math.log1p(sd * sd))
    ]
    if beyond:  # beyond two sigmas: an hour the intervals barely allow for
        line += f"; beyond twice the profile's speed spread in {', '.join(beyond)}"
    return line + (" — UNRELIABLE: the engine changed speed" if probe["unreliable"] else "")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f} %"


def _scaled(value: float | None, scale: float) -> str:
    return "-" if value is None else f"{value * scale:,.1f}"


OFF_PROFILE_PCT = 10.0  # beyond this, a profile measured elsewhere is worth refitting here


def recalibration_hint(summary: dict[str, Any]) -> str | None:
    """The one command that fits this machine, when a probe found the engine more than
    10 % off a profile measured elsewhere."""
    for server, probe in summary.get("probe", {}).items():
        off = max(abs(100 * (f - 1)) for f in probe["factors"].values())
        if off > OFF_PROFILE_PCT and not summary.get("profiles", {}).get(server, {}).get(
            "measured_here"
        ):
            return (
                f"this engine runs up to {off:.0f} % off {probe['profile']}, a profile measured "
                "on another machine; `stairwise calibrate --local --quick -o local-cpu.json` "
                f"fits this machine in about 3 minutes, then `--set servers.{server}.profile="
                "local-cpu.json` (or `validate --profile local-cpu.json`) uses it"
            )
    return None
