"""A vLLM-like server: continuous batching over a finite KV cache with prefix caching.

Each engine step decodes one token for every running sequence and prefills prompt chunks
within the token budget; its duration comes from the profile's step-cost function. While
the batch does not change (no prefill, nothing admissible waiting, no unit boundary or
finish ahead) the steps are advanced together in one event, so the event count grows with
batch changes, not with tokens. A multi-stream sequence (``mode: multistream``) is one batch
entry that adds one token per stream each step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from sim.engines.base import CallResult, EngineCall
from sim.kv_cache import KvCache
from sim.profile import VllmProfile
from sim.scenario import VllmServer

if TYPE_CHECKING:
    from sim.multistream import StreamSchedule

MAX_STEPS_PER_EVENT = 100_000


@dataclass(eq=False, slots=True)
class _Seq:
    call: EngineCall
    arrived: float
    prompt: int  # prompt tokens
    target: int = 0  # tokens whose KV must be computed before decoding resumes
    computed: int = 0
    generated: int = 0
    cached: int = 0  # prefix-cache hit at first admission
    first_scheduled: float | None = None
    shared: list[int] = field(default_factory=list)
    private: int = 0
    blocks: int = 0  # len(shared) + private
    pending: list[np.ndarray] = field(default_factory=list)  # token times not yet reported
    watch_index: int = 0
    next_stop: int = 0  # the token count of the next watch point or the end
    cancelled: bool = False
    # a multi-stream sequence adds ``width`` tokens per step (one per stream), its streams
    # beyond the first add ``stream_s`` seconds to the step
    width: int = 1
    stream_s: float = 0.0
    # prompt + every token generated so far: its KV once decoding. Kept up to date by
    # produce() rather than derived, as the scheduler reads it for every running sequence at
    # every event
    context: int = 0

    @property
    def decoding(self) -> bool:
        return self.computed >= self.target

    def produce(self, steps: int) -> None:
        self.generated += steps
        self.context += self.width * steps

    def advance_watch(self) -> None:
        watch = self.call.watch
        self.watch_index += 1
        i = self.watch_index
        self.next_stop = watch[i] if i < len(watch) else self.call.tokens
        if self.call.streams is not None:
            self.set_width(self.call.streams)

    def set_width(self, streams: StreamSchedule) -> None:
        """The streams of the coming steps (a stream's watch points are where they change)."""
        self.width = streams.width(self.generated)
        self.stream_s = (self.width - 1) * streams.token_s


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
        self.waiting: deque[_Seq] = deque()
        self.running: list[_Seq] = []
        self._seqs: dict[Hashable, _Seq] = {}
        self._wake: simpy.Event | None = None
        self.steps = 0
        self.events = 0
        self.preemptions = 0
        self._cancelled = 0
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
        self.env.process(self._enqueue_later(call, delay_s))

    def cancel(self, key: Hashable) -> None:
        seq = self._seqs.get(key)
        if seq is not None:
            seq.cancelled = True
            self._cancelled += 1
            self._poke()

    def load(self) -> int:
        return len(self._seqs)

    # --- queueing -------------------------------------------------------------------------------

    def _enqueue_later(self, call: EngineCall, delay_s: float) -> Generator[simpy.Event, Any, None]:
        yield self.env.timeout(delay_s)
        self._enqueue(call)

    def _enqueue(self, call: EngineCall) -> None:
        watch = call.watch
        seq = _Seq(
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

    def _wait(self, seq: _Seq, preempted: bool = False) -> None:
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

    def _victim(self) -> _Seq:
        """The sequence a full cache preempts: the newest, or under the priority policy the
        least urgent (highest priority value, then latest arrival), as vLLM V1 picks it."""
        if not self.by_priority:
            return self.running.pop()
        victim = max(self.running, key=_priority_key)
        self.running.remove(victim)
        return victim

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _hits(self, seq: _Seq) -> tuple[list[int], int]:
        hashes = seq.call.kv_hashes(self.block, seq.context - seq.prompt)
        hits = min(self.kv.cached_prefix(hashes), (seq.context - 1) // self.block)
        return hashes, hits  # at least one token is always computed

    def _admit(self, seq: _Seq, hashes: list[int], hits: int) -> bool:
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

    def _publish_prompt(self, seq: _Seq, tokens: int | None = None) -> None:
        """The prompt's full blocks up to ``tokens`` (default: those computed) serve other
        requests' prefixes from now on. vLLM V1 registers the blocks a step will compute when
        it schedules them, so a request scheduled in the same step already reuses them."""
        hashes = seq.call.kv_hashes(self.block, seq.context - seq.prompt)
        hashes = hashes[: (seq.computed if tokens is None else tokens) // self.block]
        fresh = hashes[len(seq.shared) :]
        published = self.kv.publish(fresh)
        seq.shared = seq.shared + fresh[:published]
        seq.private -= published

    def _release(self, seq: _Seq) -> None:
        kv_tokens = seq.context - 1 if seq.decoding else seq.computed
        computed = seq.call.kv_hashes(self.block, seq.context - seq.prompt)
        computed = computed[: kv_tokens // self.block]
        self.kv.release(seq.shared, seq.private, computed[len(seq.shared) :])
        seq.shared, seq.private, seq.blocks = [], 0, 0

    def _drop_cancelled(self) -> None:
        if not self._cancelled:
            return
        self._cancelled = 0
        for seq in [s for s in self.running if s.cancelled]:
            self.running.remove(seq)
            self._release(seq)
            del self._seqs[seq.call.key]
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
            del self._seqs[seq.call.key]

    def _preempt_for_growth(self, decode: list[_Seq]) -> list[_Seq]:
        """Preempt (recompute later) the newest sequences until one more token fits for all."""
        while decode:
            block = self.block
            growth = sum((s.context + s.width + block) // block - s.blocks for s in decode)
            if growth <= self.kv.free():
                return decode
            victim = self._victim()
            self.preemptions += 1
            self._release(victim)
            victim.computed = 0
            self._wait(victim, preempted=True)
            if victim in decode:
                decode.remove(victim)
        return decode

    # --- scheduling -----------------------------------------------------------------------------

    def _schedule(self) -> tuple[list[_Seq], list[tuple[_Seq, int]]]:
        if self.policy == "prefill_first":
            admitted = self._admit_waiting(self.budget, whole_prompts=True)
            if admitted:
                return [], admitted
            return self._preempt_for_growth(list(self.running)), []
        # usually every running sequence decodes: find that out with one comprehension, and
        # walk the batch step by step only when some prompt is still being prefilled
        decode = [seq for seq in self.running if seq.computed >= seq.target]
        budget = self.budget - len(decode)
        prefill: list[tuple[_Seq, int]] = []
        if len(decode) < len(self.running):
            budget, decode = self.budget, []
            for seq in self.running:  # the budget goes to prompts in the batch's order
                if seq.decoding:
                    decode.append(seq)
                    budget -= 1
                elif budget > 0:
                    chunk = min(seq.target - seq.computed, budget)
                    prefill.append((seq, chunk))
                    self._publish_prompt(seq, seq.computed + chunk)
                    budget -= chunk
        decode = self._preempt_for_growth(decode)
        return decode, prefill + self._admit_waiting(budget, whole_prompts=False)

    def _admit_waiting(self, budget: int, whole_prompts: bool) -> list[tuple[_Seq, int]]:
        admitted: list[tuple[_Seq, int]] = []
        while self.waiting and budget > 0 and len(self.running) < self.max_seqs:
            seq = self.waiting[0]
            hashes, hits = self._hits(seq)
            chunk = seq.context - hits * self.block
            if whole_prompts and admitted and not self._joins_prompt_batch(admitted, chunk):
                break  # prefill-first engines do not split prompts: wait for the next step
            if not self._admit(seq, hashes, hits):
                break
            self.waiting.popleft()
            self.running.append(seq)
            chunk = chunk if whole_prompts else min(chunk, budget)
            if not whole_prompts:
                self._publish_prompt(seq, seq.computed + chunk)
            admitted.append((seq, chunk))
            budget -= chunk
        return admitted

    def _joins_prompt_batch(self, admitted: list[tuple[_Seq, int]], chunk: int) -> bool:
        """Whether a whole prompt of ``chunk`` tokens fits the prompt batch so far: its tokens
        within the budget, counted padded to the longest prompt (and the padding within its
        limit) when the engine pads prompt batches."""
        chunks = [c for _, c in admitted] + [chunk]
        if self.padding is None:
            return sum(chunks) <= self.budget
        padded = len(chunks) * max(chunks)
        return padded <= self.budget and padded - sum(chunks) <= self.padding

    def _prefill_work(self, prefill: list[tuple[_Seq, int]]) -> tuple[int, float]:
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
            self._drop_cancelled()
            if not self.running and not self.waiting:
                self._wake = self.env.event()
                yield self._wake
                continue
            decode, prefill = self._schedule()
            if not decode and not prefill:
                self._reject_unservable()
                continue
            if prefill:
                yield from self._one_step(decode, prefill)
            else:
                yield from self._decode_run(decode)

    def _reject_unservable(self) -> None:
        """A prompt larger than the whole KV cache can never run; end it with no output."""
        seq = self.waiting.popleft()
        del self._seqs[seq.call.key]
        seq.call.done(CallResult(seq.call.prompt_tokens, 0, 0, 0.0, "rejected"), np.empty(0))

    def _one_step(
        self, decode: list[_Seq], prefill: list[tuple[_Seq, int]]
    ) -> Generator[simpy.Event, Any, None]:
        prefill_tokens, attention = self._prefill_work(prefill)
        before = sum(seq.computed for seq, _ in prefill)
        contexts = [s.context for s in decode]
        duration = self.cost.seconds(
            prefill_tokens,
            attention,
            len(decode),
            sum(contexts),
            before,
            len(prefill),
            max(contexts, default=0),
        )
        duration += sum([s.stream_s for s in decode]) + sum(
            [s.stream_s for s, chunk in prefill if s.computed + chunk >= s.target]
        )  # the streams of multi-stream sequences that produce tokens in this step
        self._wake = None
        yield self.env.timeout(duration)
        self.steps += 1
        end = np.array([self.env.now])
        produced: list[_Seq] = []
        for seq in decode:
            seq.produce(1)
            seq.pending.append(end)
            produced.append(seq)
        for seq, chunk in prefill:
            seq.computed += chunk
            if seq.decoding:  # the step that completes a prompt samples its next token
                self._publish_prompt(seq)
                seq.produce(1)
                seq.pending.append(end)
                produced.append(seq)
        self._after_tokens(produced)

    def _decode_run(self, decode: list[_Seq]) -> Generator[simpy.Event, Any, None]:
        # one pass over the batch for everything the run's length and price need: it runs at
        # almost every event, over every running sequence
        steps = MAX_STEPS_PER_EVENT
        context = longest = growth = 0  # Σ and max of the contexts, KV tokens per step
        stream_s = 0.0
        for s in decode:
            steps = min(steps, s.next_stop - s.generated)
            context += s.context
            if s.context > longest:
                longest = s.context
            growth += s.width
            stream_s += s.stream_s
        steps = self._fit_kv_growth(decode, steps)
        durations = self.cost.decode_run(len(decode), context, steps, longest, growth)
        durations += stream_s
        start = self.env.now
        ends = start + np.cumsum(durations)
        self._wake = self.env.event()
        yield self.env.timeout(ends[-1] - start) | self._wake
        now = self.env.now
        if now < ends[-1]:  # interrupted: finish the step in progress, then re-plan
            steps = int(np.searchsorted(ends, now, side="left")) + 1
            yield self.env.timeout(ends[steps - 1] - now)
        self._wake = None
        self.steps += steps
        times = ends[:steps]
        for seq in decode:  # seq.produce(steps), inlined: this loop runs at most events
            seq.generated += steps
            seq.context += seq.width * steps
            seq.pending.append(times)
        self._after_tokens(decode)

    def _fit_kv_growth(self, decode: list[_Seq], steps: int) -> int:
        """The most steps (>= 1) whose new KV blocks fit in the free cache."""

        block = self.block

        def growth(n: int) -> int:
            return sum((s.context + s.width * n + block) // block - s.blocks for s in decode)

        free = self.kv.free()
        if growth(steps) <= free:
            return steps
        low, high = 1, steps
        while low < high:
            mid = (low + high + 1) // 2
            if growth(mid) <= free:
                low = mid
            else:
                high = mid - 1
        return low

    def _after_tokens(self, produced: list[_Seq]) -> None:
        block = self.block
        for seq in produced:
            grow = (seq.context + block) // block - seq.blocks  # room for 1 more
            if grow > 0:
                self.kv.grow(grow)
                seq.private += grow
                seq.blocks += grow
            if seq.generated < seq.next_stop or seq.cancelled:
                continue
            if seq.generated >= seq.call.tokens:
                self.running.remove(seq)
                self._release(seq)
                del self._seqs[seq.call.key]
                times = _take(seq)
                queued = (seq.first_scheduled or seq.arrived) - seq.arrived
                result = CallResult(seq.prompt, seq.cached, seq.generated, queued)
                seq.call.done(result, times)
            else:
                seq.advance_watch()
                seq.call.progress(_take(seq))


def _priority_key(seq: _Seq) -> tuple[int, float]:
    return seq.call.priority, seq.arrived


def _take(seq: _Seq) -> np.ndarray:
    times = np.concatenate(seq.pending) if seq.pending else np.empty(0)
    seq.pending = []
    return times
