"""A vLLM-like server: continuous batching over a finite KV cache with prefix caching.

Each engine step decodes one token for every running sequence and prefills prompt chunks
within the token budget; its duration comes from the profile's step-cost function. While
the batch does not change (no prefill, nothing admissible waiting, no unit boundary or
finish ahead) the steps are advanced together in one event, so the event count grows with
batch changes, not with tokens. The decoding sequences are kept in lockstep
(``sim/engines/lockstep.py``), so an event costs what changes in it, not the batch's size.
A multi-stream sequence (``mode: multistream``) is one batch entry that adds one token per
stream each step.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections import deque
from collections.abc import Generator, Hashable
from typing import Any

import numpy as np
import simpy

from sim.engines.base import CallResult, EngineCall
from sim.engines.lockstep import DecodingBatch, Seq
from sim.kv_cache import KvCache
from sim.profile import VllmProfile
from sim.scenario import VllmServer

MAX_STEPS_PER_EVENT = 100_000


class VllmEngine:
    def __init__(self, env: simpy.Environment, profile: VllmProfile, server: VllmServer) -> None:
        self.env = env
        self.cost = profile.step_pricer()
        self.block = profile.block_size
        capacity = server.kv_capacity_tokens or profile.kv_capacity_tokens
        self.kv = KvCache(capacity // self.block, caching=server.prefix_caching)
        self.max_seqs = server.max_num_seqs
        self.budget = server.max_num_batched_tokens
        self.policy = profile.scheduler
        self.padding = profile.prompt_padding
        self.by_priority = server.scheduling_policy == "priority"
        self.overhead_s = profile.request_overhead_s
        self.serial_api = profile.request_overhead_serial
        self._api_free_at = 0.0  # serial API server: when it can take the next request
        self._arriving: set[Hashable] = set()  # calls the API server is still preparing
        self.waiting: deque[Seq] = deque()
        # the running sequences in vLLM's order (admission order): the decoding batch's
        # members and, in order, those whose prompt is still being computed
        self.running: list[Seq] = []
        self.batch = DecodingBatch(self.block, track_longest=self.cost.prices_longest)
        self._prefilling: list[Seq] = []
        self._admissions = itertools.count(1)
        self._seqs: dict[Hashable, Seq] = {}
        self._cancelled: list[Seq] = []
        self._wake: simpy.Event | None = None
        self.steps = 0
        self.events = 0
        self.preemptions = 0
        env.process(self._loop())

    # --- the Engine interface -------------------------------------------------------------

    def submit(self, call: EngineCall) -> None:
        if self.overhead_s <= 0:
            self._enqueue(call)
            return
        delay_s = self.overhead_s
        if self.serial_api:  # after the requests the API server is still preparing
            self._api_free_at = max(self.env.now, self._api_free_at) + self.overhead_s
            delay_s = self._api_free_at - self.env.now
        self._arriving.add(call.key)
        # one timeout, not a process: a process costs three SimPy events per call
        self.env.timeout(delay_s).callbacks.append(lambda _event: self._arrive(call))

    def cancel(self, key: Hashable) -> None:
        if key in self._arriving:  # still in the API server: it never reaches the engine
            self._arriving.remove(key)
            return
        seq = self._seqs.get(key)
        if seq is not None:
            if not seq.cancelled:
                self._cancelled.append(seq)
            seq.cancelled = True
            self._poke()

    def load(self) -> int:
        return len(self._seqs) + len(self._arriving)

    # --- queueing -------------------------------------------------------------------------------

    def _arrive(self, call: EngineCall) -> None:
        """The API server hands the call to the engine, unless it was cancelled meanwhile."""
        if call.key in self._arriving:
            self._arriving.remove(call.key)
            self._enqueue(call)

    def _enqueue(self, call: EngineCall) -> None:
        watch = call.watch
        seq = Seq(
            call=call,
            arrived=self.env.now,
            prompt=call.prompt_tokens,
            target=call.prompt_tokens,
            context=call.prompt_tokens,
            next_stop=watch[0] if watch else call.tokens,
        )
        if call.streams is not None:
            seq.set_width(call.streams)
        self._seqs[call.key] = seq
        self._wait(seq)
        self._poke()

    def _wait(self, seq: Seq, preempted: bool = False) -> None:
        """Queue a sequence: FCFS (a preempted one goes first) or, under vLLM's priority
        policy, by (priority, arrival) — where a preempted sequence's own arrival puts it."""
        if not self.by_priority:
            if preempted:
                self.waiting.appendleft(seq)
            else:
                self.waiting.append(seq)
            return
        key = _priority_key(seq)
        index = next((i for i, s in enumerate(self.waiting) if _priority_key(s) > key), None)
        self.waiting.insert(len(self.waiting) if index is None else index, seq)

    def _victim(self) -> Seq:
        """The sequence a full cache preempts: the newest, or under the priority policy the
        least urgent (highest priority value, then latest arrival), as vLLM V1 picks it."""
        if not self.by_priority:
            victim = self.running.pop()
        else:
            victim = max(self.running, key=_priority_key)
            self.running.remove(victim)
        self._stop_running(victim)
        return victim

    def _stop_running(self, seq: Seq) -> None:
        """Take a sequence out of the batch or the prefilling ones (not out of ``running``)."""
        if seq.epoch:
            self.batch.leave(seq)
        else:
            self._prefilling.remove(seq)

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _hits(self, seq: Seq) -> tuple[list[int], int]:
        hashes = seq.call.kv_hashes(self.block, seq.context - seq.prompt)
        hits = min(self.kv.cached_prefix(hashes), (seq.context - 1) // self.block)
        return hashes, hits  # at least one token is always computed

    def _admit(self, seq: Seq, hashes: list[int], hits: int) -> bool:
        """Give the sequence KV blocks, reusing cached ones; False if the cache is full."""
        seq.target = seq.context
        needed = -(-(seq.target + 2) // self.block) - hits  # room for the prompt's next token
        if needed > self.kv.free():
            return False
        self.kv.acquire(hashes[:hits], needed)
        seq.shared, seq.private, seq.blocks = hashes[:hits], needed, hits + needed
        seq.computed = hits * self.block
        if seq.first_scheduled is None:
            seq.first_scheduled = self.env.now
            seq.cached = seq.computed
        return True

    def _publish_prompt(self, seq: Seq, tokens: int | None = None) -> None:
        """The prompt's full blocks up to ``tokens`` (default: those computed) serve other
        requests' prefixes from now on. vLLM V1 registers the blocks a step will compute when
        it schedules them, so a request scheduled in the same step already reuses them."""
        hashes = seq.call.kv_hashes(self.block, seq.context - seq.prompt)
        hashes = hashes[: (seq.computed if tokens is None else tokens) // self.block]
        fresh = hashes[len(seq.shared) :]
        published = self.kv.publish(fresh)
        seq.shared = seq.shared + fresh[:published]
        seq.private -= published

    def _release(self, seq: Seq) -> None:
        kv_tokens = seq.context - 1 if seq.decoding else seq.computed
        computed = seq.call.kv_hashes(self.block, seq.context - seq.prompt)
        computed = computed[: kv_tokens // self.block]
        self.kv.release(seq.shared, seq.private, computed[len(seq.shared) :])
        seq.shared, seq.private, seq.blocks = [], 0, 0

    def _drop_cancelled(self) -> None:
        cancelled, self._cancelled = self._cancelled, []
        running = [s for s in cancelled if s.epoch or s in self._prefilling]
        for seq in sorted(running, key=_serial):  # in the batch's order, as vLLM frees them
            self.running.remove(seq)
            self._stop_running(seq)
            self._release(seq)
            del self._seqs[seq.call.key]
        for seq in cancelled:
            if seq.call.key in self._seqs:
                self.waiting.remove(seq)
                del self._seqs[seq.call.key]

    def _preempt_for_growth(self) -> bool:
        """Preempt (recompute later) the newest sequences until one more token fits for every
        decoding one; whether any still decodes."""
        batch = self.batch
        while batch.size:
            if batch.fits(1, self.kv.free()):
                return True
            victim = self._victim()
            self.preemptions += 1
            self._release(victim)
            victim.computed = 0
            self._wait(victim, preempted=True)
        return False

    # --- scheduling -----------------------------------------------------------------------------

    def _schedule(self) -> tuple[bool, list[tuple[Seq, int]]]:
        """Whether the decoding batch takes a step, and the prompt chunks the step computes."""
        if self.policy == "prefill_first":
            admitted = self._admit_waiting(self.budget, whole_prompts=True)
            if admitted:
                return False, admitted
            return self._preempt_for_growth(), []
        # the budget goes to prompts in the batch's order, every decoding sequence ahead of
        # a prompt taking one token of it
        budget = self.budget - self.batch.size
        prefill: list[tuple[Seq, int]] = []
        spent = 0
        for index, seq in enumerate(self._prefilling):
            left = self.budget - (self.running.index(seq) - index) - spent
            if left > 0:
                chunk = min(seq.target - seq.computed, left)
                prefill.append((seq, chunk))
                self._publish_prompt(seq, seq.computed + chunk)
                spent += chunk
        budget -= spent
        decodes = self._preempt_for_growth()
        return decodes, prefill + self._admit_waiting(budget, whole_prompts=False)

    def _admit_waiting(self, budget: int, whole_prompts: bool) -> list[tuple[Seq, int]]:
        admitted: list[tuple[Seq, int]] = []
        while self.waiting and budget > 0 and len(self.running) < self.max_seqs:
            seq = self.waiting[0]
            hashes, hits = self._hits(seq)
            chunk = seq.context - hits * self.block
            if whole_prompts and admitted and not self._joins_prompt_batch(admitted, chunk):
                break  # prefill-first engines do not split prompts: wait for the next step
            if not self._admit(seq, hashes, hits):
                break
            self.waiting.popleft()
            seq.serial = next(self._admissions)
            self.running.append(seq)
            self._prefilling.append(seq)
            chunk = chunk if whole_prompts else min(chunk, budget)
            if not whole_prompts:
                self._publish_prompt(seq, seq.computed + chunk)
            admitted.append((seq, chunk))
            budget -= chunk
        return admitted

    def _joins_prompt_batch(self, admitted: list[tuple[Seq, int]], chunk: int) -> bool:
        """Whether a whole prompt of ``chunk`` tokens fits the prompt batch so far: its tokens
        within the budget, counted padded to the longest prompt (and the padding within its
        limit) when the engine pads prompt batches."""
        chunks = [c for _, c in admitted] + [chunk]
        if self.padding is None:
            return sum(chunks) <= self.budget
        padded = len(chunks) * max(chunks)
        return padded <= self.budget and padded - sum(chunks) <= self.padding

    def _prefill_work(self, prefill: list[tuple[Seq, int]]) -> tuple[int, float]:
        """The prompt tokens a step computes and its attention work Σ chunk·(context + chunk):
        as scheduled, or every chunk padded to the longest when the engine pads prompts."""
        chunks = prefill
        if self.padding is not None:
            longest = max(chunk for _, chunk in prefill)
            chunks = [(seq, longest) for seq, _ in prefill]
        tokens = sum(chunk for _, chunk in chunks)
        return tokens, float(sum(chunk * (seq.computed + chunk) for seq, chunk in chunks))

    # --- the loop ---------------------------------------------------------------------------

    def _loop(self) -> Generator[simpy.Event, Any, None]:
        while True:
            self.events += 1
            if self._cancelled:
                self._drop_cancelled()
            if not self.running and not self.waiting:
                self._wake = self.env.event()
                yield self._wake
                continue
            decodes, prefill = self._schedule()
            if not decodes and not prefill:
                self._reject_unservable()
                continue
            if prefill:
                yield from self._one_step(decodes, prefill)
            else:
                yield from self._decode_run()

    def _reject_unservable(self) -> None:
        """A prompt larger than the whole KV cache can never run; end it with no output."""
        seq = self.waiting.popleft()
        del self._seqs[seq.call.key]
        seq.call.done(CallResult(seq.call.prompt_tokens, 0, 0, 0.0, "rejected"), np.empty(0))

    def _one_step(
        self, decodes: bool, prefill: list[tuple[Seq, int]]
    ) -> Generator[simpy.Event, Any, None]:
        batch = self.batch
        prefill_tokens, attention = self._prefill_work(prefill)
        before = sum(seq.computed for seq, _ in prefill)
        decode_seqs, context, longest, stream_s = 0, 0, 0, 0.0
        if decodes:
            decode_seqs, context = batch.size, batch.context()
            longest = batch.longest() if batch.track_longest else 0
            stream_s = batch.stream_seconds()
        duration = self.cost.seconds(
            prefill_tokens, attention, decode_seqs, context, before, len(prefill), longest
        )
        duration += stream_s + sum(
            [s.stream_s for s, chunk in prefill if s.computed + chunk >= s.target]
        )  # the streams of multi-stream sequences that produce tokens in this step
        self._wake = None
        yield self.env.timeout(duration)
        self.steps += 1
        now = self.env.now
        if decodes:
            batch.advance([now])
        completed: list[Seq] = []
        for seq, chunk in prefill:
            seq.computed += chunk
            if seq.decoding:  # the step that completes a prompt samples its next token
                self._publish_prompt(seq)
                seq.produce(1)
                seq.pending.append(np.array([now]))
                completed.append(seq)
        self._after_tokens(decodes, completed)

    def _decode_run(self) -> Generator[simpy.Event, Any, None]:
        batch = self.batch
        steps = self._fit_kv_growth(batch.steps_to_stop(MAX_STEPS_PER_EVENT))
        longest = batch.longest() if batch.track_longest else 0
        durations = self.cost.decode_run(
            batch.size, batch.context(), steps, longest, batch.width_sum
        )
        start = self.env.now
        ends = _step_ends(start, durations, batch.stream_seconds())
        last = float(ends[-1])  # a Python float: SimPy's clock stays one
        self._wake = self.env.event()
        yield _first_of(self.env, self.env.timeout(last - start), self._wake)
        now = self.env.now
        if now < last:  # interrupted: finish the step in progress, then re-plan
            steps = bisect_left(ends, now) + 1
            yield self.env.timeout(float(ends[steps - 1]) - now)
        self._wake = None
        self.steps += steps
        batch.advance(ends[:steps])
        self._after_tokens(True, [])

    def _fit_kv_growth(self, steps: int) -> int:
        """The most steps (>= 1) whose new KV blocks fit in the free cache."""
        batch, free = self.batch, self.kv.free()
        if batch.fits(steps, free):
            return steps
        low, high = 1, steps
        while low < high:
            mid = (low + high + 1) // 2
            if batch.growth(mid) <= free:
                low = mid
            else:
                high = mid - 1
        return low

    def _after_tokens(self, decoded: bool, completed: list[Seq]) -> None:
        """Blocks for the sequences whose context filled theirs, then unit boundaries and
        ends: the batch's members that reached one (in its order) after it ``decoded``, then
        those whose prompt the step ``completed``, which join the batch."""
        if decoded:
            for seq in self.batch.due():
                self._produced(seq)
        for seq in completed:
            if seq in self._prefilling:  # not preempted while its last chunk was computed
                self._prefilling.remove(seq)
                self.batch.join(seq)
            self._produced(seq)

    def _produced(self, seq: Seq) -> None:
        block = self.block
        grow = (seq.context + block) // block - seq.blocks  # room for 1 more
        if grow > 0:
            self.kv.grow(grow)
            seq.private += grow
            seq.blocks += grow
            if seq.epoch:
                self.batch.grew(seq, grow)
        if seq.generated < seq.next_stop or seq.cancelled:
            return
        if seq.generated >= seq.call.tokens:
            self.running.remove(seq)
            if seq.epoch:
                self.batch.leave(seq)
            self._release(seq)
            del self._seqs[seq.call.key]
            times = self._take(seq)
            queued = (seq.first_scheduled or seq.arrived) - seq.arrived
            result = CallResult(seq.prompt, seq.cached, seq.generated, queued)
            seq.call.done(result, times)
            return
        if seq.epoch and seq.call.streams is not None:  # its width may change: rejoin
            self.batch.leave(seq)
            seq.advance_watch()
            self.batch.join(seq)
        else:
            seq.advance_watch()
            if seq.epoch:
                self.batch.restop(seq)
        seq.call.progress(self._take(seq))

    def _take(self, seq: Seq) -> np.ndarray:
        """The sequence's token times not reported yet (to be read, not written: a view of
        the batch's step times, which are written once)."""
        if seq.epoch:
            if not seq.pending:
                return self.batch.unreported(seq)
            seq.pending.append(self.batch.unreported(seq))
        times = np.concatenate(seq.pending) if seq.pending else np.empty(0)
        seq.pending = []
        return times


def _step_ends(
    start: float, durations: list[float] | np.ndarray, stream_s: float
) -> list[float] | np.ndarray:
    """When each step of a run ends: ``start`` plus the running sum of the durations, each
    with the stream seconds added — by numpy for a long run, in plain floats for a short one
    (the same sums: ``cumsum`` adds in order). A long run's array gets its stream seconds in
    place: the pricers make it anew for each run, and nothing reads it afterwards."""
    if isinstance(durations, np.ndarray):
        if stream_s:
            durations += stream_s
        summed = durations.cumsum()
        summed += start  # in place: the same floats as start + summed, one array fewer
        return summed
    ends = []
    elapsed = 0.0
    for duration in durations:
        elapsed += (duration + stream_s) if stream_s else duration
        ends.append(start + elapsed)
    return ends


def _first_of(env: simpy.Environment, *events: simpy.Event) -> simpy.Event:
    """An event that happens one hop after the first of ``events``, as SimPy's ``a | b``
    does (so the order of events is the same), without a Condition's bookkeeping."""
    first = env.event()

    def relay(_event: simpy.Event) -> None:
        if not first.triggered:
            first.succeed()

    for event in events:
        event.callbacks.append(relay)
    return first


def _priority_key(seq: Seq) -> tuple[int, float]:
    return seq.call.priority, seq.arrived


def _serial(seq: Seq) -> int:
    return seq.serial
