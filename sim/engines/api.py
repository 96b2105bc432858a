"""A hosted endpoint as a black box: each call gets an independent TTFT and token gaps.

TTFT = base + per-uncached-token cost (+ jitter); later tokens follow drawn inter-token
latencies. Calls do not slow each other down, except through an optional concurrency limit
(requests beyond it queue). A prefix cache, if enabled, discounts cached prompt tokens.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Hashable
from typing import Any

import numpy as np
import simpy

from sim.engines.base import CallResult, EngineCall
from sim.kv_cache import KvCache
from sim.profile import ApiProfile
from sim.scenario import ApiServer


class ApiEngine:
    def __init__(
        self,
        env: simpy.Environment,
        profile: ApiProfile,
        server: ApiServer,
        rng: np.random.Generator,
    ) -> None:
        self.env = env
        self.profile = profile
        self.rng = rng
        self.block = profile.block_size
        self.kv = KvCache(profile.kv_capacity_tokens // self.block, caching=server.prefix_caching)
        self.limit = server.max_concurrency
        self.queue: deque[tuple[EngineCall, float]] = deque()
        self.active: dict[Hashable, bool] = {}  # key -> cancelled
        self.events = 0

    def submit(self, call: EngineCall) -> None:
        if self.limit is not None and len(self.active) >= self.limit:
            self.queue.append((call, self.env.now))
        else:
            self._start(call, self.env.now)

    def cancel(self, key: Hashable) -> None:
        if key in self.active:
            self.active[key] = True
        self.queue = deque((c, t) for c, t in self.queue if c.key != key)

    def load(self) -> int:
        return len(self.active) + len(self.queue)

    def _start(self, call: EngineCall, arrived: float) -> None:
        self.active[call.key] = False
        self.env.process(self._serve(call, arrived))

    def _token_times(self, call: EngineCall, cached: int) -> np.ndarray:
        p = self.profile
        ttft = p.ttft_base_s + p.ttft_per_uncached_token_s * (call.prompt_tokens - cached)
        if p.ttft_jitter is not None:
            ttft += float(p.ttft_jitter.sample_s(self.rng, 1)[0])
        gaps = p.itl.sample_s(self.rng, call.tokens - 1) if call.tokens > 1 else np.empty(0)
        return self.env.now + ttft + np.concatenate(([0.0], np.cumsum(gaps)))

    def _serve(self, call: EngineCall, arrived: float) -> Generator[simpy.Event, Any, None]:
        queued_s = self.env.now - arrived
        hashes = call.prompt_hashes(self.block)
        hits = min(self.kv.cached_prefix(hashes), max(0, call.prompt_tokens - 1) // self.block)
        cached = hits * self.block
        times = self._token_times(call, cached)
        reported = 0
        for stop in (*call.watch, call.tokens):
            self.events += 1
            yield self.env.timeout(times[stop - 1] - self.env.now)
            if self.active[call.key]:
                break
            if stop < call.tokens:
                call.progress(times[reported:stop])
                reported = stop
        cancelled = self.active.pop(call.key)
        if not cancelled:
            self.kv.release([], 0, call.kv_hashes(self.block, call.tokens))
            result = CallResult(call.prompt_tokens, cached, call.tokens, queued_s)
            call.done(result, times[reported:])
        if self.queue:
            waiting, queued_at = self.queue.popleft()
            self._start(waiting, queued_at)
