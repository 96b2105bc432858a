"""Snapshots of a vLLM server's Prometheus /metrics, recorded before and after a run.

Only ``vllm:`` series are kept, summed over label sets (one model per server here);
histograms keep ``_sum`` and ``_count``, so a before/after difference gives totals and means
(e.g. prefix-cache hits, mean queue time) for the run alone.
"""

from __future__ import annotations

import math

import httpx


def parse_prometheus(text: str) -> dict[str, float]:
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name_and_labels, _, rest = line.rpartition(" ")
        if not name_and_labels:
            continue
        name = name_and_labels.split("{", 1)[0]
        if name.endswith("_bucket"):
            continue
        try:
            value = float(rest)
        except ValueError:
            continue
        if math.isfinite(value):
            values[name] = values.get(name, 0.0) + value
    return values


async def scrape(client: httpx.AsyncClient, endpoint: str) -> dict[str, float] | None:
    """The server's vllm:* metrics, or None if it has no /metrics (e.g. a hosted API)."""
    url = endpoint.rstrip("/").removesuffix("/v1") + "/metrics"
    try:
        response = await client.get(url, timeout=5.0)
    except httpx.HTTPError:
        return None
    if response.status_code != 200:
        return None
    return parse_prometheus(response.text)
