"""A hosted endpoint's rate limits as one sans-IO rule: when may the next call start?

Hosted APIs limit requests per minute (``rpm``), tokens per minute (``tpm``) and often the
calls served at once; a staircase sends many short calls, so these limits, not the model,
can set its pace. The simulated ``api`` engine and the live client obey the same
:class:`RateLimiter` — the engine on its clock, the client on the wall clock — so a limit
delays the same calls by the same rule in both.

The rule: each per-minute limit is a bucket holding one minute's allowance, full at the
start and refilled continuously (``limit / 60`` per second); a call takes one request and
its prompt plus ``max_tokens`` tokens (what providers charge against the limit when the call
is made); calls start in arrival order (first in, first out: a call waiting for tokens holds
back the calls behind it) once every bucket holds what the call takes and fewer than
``max_concurrency`` calls are running.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass

SECONDS_PER_MINUTE = 60.0


class CallTooLarge(Exception):
    """The call takes more tokens than ``tpm`` allows in a minute: no wait admits it."""


@dataclass
class _Bucket:
    per_minute: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.per_minute / SECONDS_PER_MINUTE
        self.level = min(self.per_minute, self.level + (now - self.updated) * rate)
        self.updated = now

    def ready_at(self, amount: float, now: float) -> float:
        """When the bucket will hold ``amount`` (now if it does)."""
        self.refill(now)
        missing = amount - self.level
        if missing <= 1e-9 * self.per_minute:
            return now
        return now + missing * SECONDS_PER_MINUTE / self.per_minute


class RateLimiter:
    """Calls queue with :meth:`add`; :meth:`admit` starts those that may start now,
    :meth:`next_time` says when to ask again, :meth:`release` frees a running call's place.

    No clock and no I/O: the caller passes the time and acts on the answers.
    """

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        max_concurrency: int | None = None,
        now: float = 0.0,
    ) -> None:
        self.requests = _Bucket(rpm, rpm, now) if rpm is not None else None
        self.tokens = _Bucket(tpm, tpm, now) if tpm is not None else None
        self.max_concurrency = max_concurrency
        self.waiting: deque[tuple[Hashable, int]] = deque()
        self.running: set[Hashable] = set()

    @property
    def limited(self) -> bool:
        return (
            self.requests is not None or self.tokens is not None or self.max_concurrency is not None
        )

    def add(self, key: Hashable, tokens: int) -> None:
        """Queue a call that takes ``tokens`` (prompt + max_tokens) against ``tpm``."""
        if self.tokens is not None and tokens > self.tokens.per_minute:
            raise CallTooLarge(
                f"the call takes {tokens} tokens (prompt + max_tokens), more than the "
                f"endpoint's tpm ({self.tokens.per_minute:g})"
            )
        self.waiting.append((key, tokens))

    def admit(self, now: float) -> list[Hashable]:
        """The queued calls that start now, in order; they count as running."""
        started = []
        while self.waiting and self._head_ready_at(now) <= now:
            key, tokens = self.waiting.popleft()
            if self.requests is not None:
                self.requests.level -= 1
            if self.tokens is not None:
                self.tokens.level -= tokens
            self.running.add(key)
            started.append(key)
        return started

    def next_time(self, now: float) -> float | None:
        """When the first queued call may start, if only time holds it back; None when
        nothing waits or it waits for a running call to end (:meth:`release`)."""
        if not self.waiting or self._full():
            return None
        return self._head_ready_at(now)

    def release(self, key: Hashable) -> None:
        """A call ended or was cancelled: a running one no longer counts against
        ``max_concurrency`` (what it took of the per-minute budgets stays spent), a queued
        one leaves the queue."""
        self.running.discard(key)
        self.waiting = deque((k, t) for k, t in self.waiting if k != key)

    def _full(self) -> bool:
        return self.max_concurrency is not None and len(self.running) >= self.max_concurrency

    def _head_ready_at(self, now: float) -> float:
        if self._full():
            return float("inf")
        _, tokens = self.waiting[0]
        ready = now
        if self.requests is not None:
            ready = max(ready, self.requests.ready_at(1, now))
        if self.tokens is not None:
            ready = max(ready, self.tokens.ready_at(tokens, now))
        return ready
