"""Snapshots of a server's Prometheus /metrics, recorded before and after a live run.

Kept as one number per ``vllm:`` series name (summed over label sets; histograms keep
``_sum`` and ``_count``), so a before/after difference gives the run's own totals and means
(prefix-cache hits, mean queue time) — the same flattening calibration reads from files.
"""

from __future__ import annotations

import httpx

from calibration.readers.prometheus import parse_metrics
from sim.errors import ConfigError


async def scrape(client: httpx.AsyncClient, endpoint: str) -> dict[str, float] | None:
    """The server's vllm:* totals, or None if it offers no readable /metrics (hosted APIs)."""
    url = endpoint.rstrip("/").removesuffix("/v1") + "/metrics"
    try:
        response = await client.get(url, timeout=5.0)
        if response.status_code != 200:
            return None
        totals = parse_metrics(response.text, url).totals()
    except (httpx.HTTPError, ConfigError):
        return None
    return {name: value for name, value in totals.items() if name.startswith("vllm:")}
