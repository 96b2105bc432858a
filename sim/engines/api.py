"""A hosted endpoint as a black box: each call gets an independent TTFT and token gaps.

TTFT = base + per-uncached-token cost (+ jitter); later tokens follow drawn inter-token
latencies. Calls do not slow each other down, except through the endpoint's limits — calls at
once, requests and tokens per minute (``sim/ratelimit.py``, the rule the live client obeys
too) — beyond which they queue. A prefix cache, if enabled, discounts cached prompt tokens.
"""

from __future__ import annotations

from collections.abc import Generator, Hashable
from typing import Any

import numpy as np
import simpy

from sim.engines.base import CallResult, EngineCall
from sim.kv_cache import KvCache
from sim.profile import ApiProfile
from sim.ratelimit import CallTooLarge, RateLimiter
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
        self.limiter = RateLimiter(server.rpm, server.tpm, server.max_concurrency, env.now)
        self.queued: dict[Hashable, tuple[EngineCall, float]] = {}  # key -> (call, arrival)
        self.active: dict[Hashable, bool] = {}  # key -> cancelled
        self._wake_at: float | None = None  # a pending wake-up for the limiter
        self.events = 0

    def submit(self, call: EngineCall) -> None:
        try:
            self.limiter.add(call.key, call.prompt_tokens + call.tokens)
        except CallTooLarge as refused:
            call.done(CallResult(call.prompt_tokens, 0, 0, 0.0, str(refused)), _NO_TIMES)
            return
        self.queued[call.key] = (call, self.env.now)
        self._start_admitted()

    def cancel(self, key: Hashable) -> None:
        """A cancelled call frees its place at once (as the live client's does); a running
        one stops at its next reported token."""
        if key in self.active:
            self.active[key] = True
        elif self.queued.pop(key, None) is None:
            return
        self.limiter.release(key)
        self._start_admitted()

    def load(self) -> int:
        return len(self.active) + len(self.queued)

    def _start_admitted(self) -> None:
        """Start what the limits let start now; wake up when time lets the next one start."""
        now = self.env.now
        for key in self.limiter.admit(now):
            call, arrived = self.queued.pop(key)
            self.active[key] = False
            self.env.process(self._serve(call, arrived))
        wake = self.limiter.next_time(now)
        if wake is not None and (self._wake_at is None or wake < self._wake_at):
            self._wake_at = wake
            self.events += 1
            self.env.timeout(wake - now).callbacks.append(lambda _event: self._woken(wake))

    def _woken(self, at: float) -> None:
        if self._wake_at == at:
            self._wake_at = None
        self._start_admitted()

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
        self.limiter.release(call.key)
        if not cancelled:
            self.kv.release([], 0, call.kv_hashes(self.block, call.tokens))
            result = CallResult(call.prompt_tokens, cached, call.tokens, queued_s)
            call.done(result, times[reported:])
        self._start_admitted()


_NO_TIMES = np.empty(0)
