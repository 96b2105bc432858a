"""A vLLM-like engine's running sequences, and its decoding batch kept in lockstep.

Every decoding sequence gains ``width`` tokens (one unless multi-stream) at every step the
batch decodes. So the batch keeps one step counter, ``clock``, and each member only the
offsets that turn it into its own counts — ``generated = clock - gen_base``, ``context =
ctx_base + width·clock`` — and what an engine step needs of the whole batch (its size,
Σ context, the longest context, the KV blocks the next steps need, the first member to reach
a unit boundary or fill its blocks) is kept in sums, heaps and counts that change only when a
member joins, leaves or gets a block. The end times of the batch's steps are kept once; a
member's token times are the slice since it last reported. An event then costs what changed
in it, not the batch's size: with ~100 sequences decoding, walking them all at every event
was four fifths of the simulator's time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush
from typing import TYPE_CHECKING

import numpy as np

from sim.engines.base import EngineCall

if TYPE_CHECKING:
    from sim.multistream import StreamSchedule

# (batch step, serial, epoch, member): a member's entry is current while its epoch (which
# join it belongs to) and the step it names are still the member's own
_Entry = tuple[int, int, int, "Seq"]


@dataclass(eq=False, slots=True)
class Seq:
    call: EngineCall
    arrived: float
    prompt: int  # prompt tokens
    target: int = 0  # tokens whose KV must be computed before decoding resumes
    computed: int = 0
    # generated and context are exact outside the decoding batch; inside it, as of the last
    # DecodingBatch.settle (the batch derives them from its clock)
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
    context: int = 0  # prompt + every token generated so far: its KV once decoding
    serial: int = 0  # its place in the running sequences' order (admissions before it + 1)
    # in the decoding batch (epoch > 0): its offsets, the batch step of its last reported
    # token, and the batch steps at which it reaches next_stop and fills its KV blocks
    epoch: int = 0
    gen_base: int = 0
    ctx_base: int = 0
    reported: int = 0
    stop_at: int = 0
    grow_at: int = 0

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


class DecodingBatch:
    """The running sequences whose prompt is computed, advanced together one step at a time.

    A member joins with its counts and KV blocks as they stand and leaves with them settled
    (``generated``, ``context`` and its unreported token times in ``pending``). Its blocks
    must cover its context plus one token whenever the engine asks :meth:`growth` or
    :meth:`fits` — the engine gives members their blocks as :meth:`due` names them.
    """

    def __init__(self, block_size: int, track_longest: bool = True) -> None:
        """``track_longest``: keep what :meth:`longest` needs (a step price that uses it)."""
        self.block = block_size
        self.track_longest = track_longest
        self.clock = 0  # steps the batch has decoded
        self.size = 0
        self.width_sum = 0  # tokens the batch's context gains per step
        self.blocks_sum = 0
        self._ctx_base_sum = 0
        self._members: dict[int, Seq] = {}  # by serial
        self._epochs = itertools.count(1)
        # per width: members by ctx_base mod block, Σ ctx_base // block and how many —
        # enough to count the blocks crossed in any number of steps without visiting one
        self._residues: dict[int, list[int]] = {}
        self._quotients: dict[int, int] = {}
        self._counts: dict[int, int] = {}
        self._stops: list[_Entry] = []  # when members reach their next stop, earliest first
        # by batch step: the members that fill their blocks then. Never asked for the
        # earliest, only for those due, so a dict of steps, not a heap (pushing and popping
        # one per KV block was a twentieth of a crowded run's time)
        self._grows: dict[int, list[_Entry]] = {}
        self._grows_seen = 0  # the batch step up to which _grows has been emptied
        self._longest: dict[int, list[_Entry]] = {}  # per width, largest ctx_base first
        self._wide: dict[int, Seq] = {}  # members whose steps cost stream seconds
        self._ends = np.empty(1024)  # end times of steps _first, _first + 1, ...
        self._first = 1

    # --- membership ---------------------------------------------------------------------

    def join(self, seq: Seq) -> None:
        clock, width = self.clock, seq.width
        seq.epoch = next(self._epochs)
        seq.gen_base = clock - seq.generated
        seq.ctx_base = seq.context - width * clock
        seq.reported = clock
        self._members[seq.serial] = seq
        self._count(seq, 1)
        if self.track_longest:
            longest = self._longest.setdefault(width, [])
            self._push(longest, (-seq.ctx_base, seq.serial, seq.epoch, seq))
        self.restop(seq)
        self._schedule_growth(seq)
        if seq.stream_s:
            self._wide[seq.serial] = seq

    def leave(self, seq: Seq) -> None:
        """Remove a member, its counts settled and its unreported token times pending."""
        self.settle(seq)
        if seq.reported < self.clock:
            seq.pending.append(self.unreported(seq))
        self._count(seq, -1)
        del self._members[seq.serial]
        self._wide.pop(seq.serial, None)
        seq.epoch = 0

    def _count(self, seq: Seq, sign: int) -> None:
        width, block = seq.width, self.block
        self.size += sign
        self.width_sum += sign * width
        self.blocks_sum += sign * seq.blocks
        self._ctx_base_sum += sign * seq.ctx_base
        residues = self._residues.get(width)
        if residues is None:
            residues = self._residues[width] = [0] * block
            self._quotients[width] = self._counts[width] = 0
        residues[seq.ctx_base % block] += sign
        self._quotients[width] += sign * (seq.ctx_base // block)
        self._counts[width] += sign

    def settle(self, seq: Seq) -> None:
        """Write a member's generated tokens and context as of now into its fields."""
        seq.generated = self.clock - seq.gen_base
        seq.context = seq.ctx_base + seq.width * self.clock

    def restop(self, seq: Seq) -> None:
        """A member's next stop changed (its width did not)."""
        seq.stop_at = seq.gen_base + seq.next_stop
        self._push(self._stops, (seq.stop_at, seq.serial, seq.epoch, seq))

    def grew(self, seq: Seq, blocks: int) -> None:
        """A member got ``blocks`` more KV blocks."""
        self.blocks_sum += blocks
        self._schedule_growth(seq)

    def _schedule_growth(self, seq: Seq) -> None:
        # the first step whose context fills its blocks: ctx_base + width·step >= blocks·block
        seq.grow_at = -((seq.ctx_base - seq.blocks * self.block) // seq.width)
        step = max(seq.grow_at, self._grows_seen + 1)  # one already due: at the next step
        entry = (seq.grow_at, seq.serial, seq.epoch, seq)
        bucket = self._grows.get(step)
        if bucket is None:
            self._grows[step] = [entry]
        else:
            bucket.append(entry)

    def _push(self, heap: list[_Entry], entry: _Entry) -> None:
        heappush(heap, entry)
        if len(heap) > 2 * self.size + 64:  # mostly outdated entries: keep the current ones
            heap[:] = [e for e in heap if _current(e, heap is self._stops)]
            heapify(heap)

    # --- what a step needs --------------------------------------------------------------

    def context(self) -> int:
        """Σ context of the members."""
        return self._ctx_base_sum + self.width_sum * self.clock

    def longest(self) -> int:
        """The longest member context (0 for an empty batch)."""
        assert self.track_longest, "a batch made with track_longest=False"
        longest = 0
        for width, heap in self._longest.items():
            while heap and heap[0][3].epoch != heap[0][2]:
                heappop(heap)
            if heap:
                longest = max(longest, -heap[0][0] + width * self.clock)
        return longest

    def stream_seconds(self) -> float:
        """Σ of the members' stream seconds, added in the batch's order (as a sum over the
        whole batch would be, so the float is the same)."""
        if not self._wide:
            return 0.0
        return sum([seq.stream_s for _, seq in sorted(self._wide.items())])

    def steps_to_stop(self, limit: int) -> int:
        """Steps until the first member reaches its next stop, at most ``limit``."""
        heap = self._stops
        while heap:
            step, _, epoch, seq = heap[0]
            if seq.epoch == epoch and seq.stop_at == step:
                return min(limit, step - self.clock)
            heappop(heap)
        return limit

    def growth(self, steps: int) -> int:
        """Σ over members of the blocks their context needs after ``steps`` more steps (one
        token of room) beyond those they hold — a member holding a spare block counts -1."""
        step, block = self.clock + steps, self.block
        total = self.size - self.blocks_sum
        for width, residues in self._residues.items():
            # a member with ctx_base = q·block + r holds q + (r + width·step) // block full
            # blocks then: every member gains (width·step) // block, and one more those
            # whose r reaches past the rest
            tokens = width * step
            total += self._quotients[width] + self._counts[width] * (tokens // block)
            total += sum(residues[block - tokens % block :])  # none when it divides
        return total

    def fits(self, steps: int, free: int) -> bool:
        """Whether ``growth(steps) <= free``; first against an upper bound (a member needs at
        most the ⌈width·steps / block⌉ blocks its context crosses), which settles it while
        the cache has room."""
        bound = self.width_sum * steps // self.block + self.size
        return bound <= free or self.growth(steps) <= free

    # --- after steps --------------------------------------------------------------------

    def advance(self, ends: list[float] | np.ndarray) -> None:
        """The batch decoded ``len(ends)`` steps that ended at ``ends``."""
        count = len(ends)
        start = self.clock + 1 - self._first
        if start + count > len(self._ends):
            self._make_room(count)
            start = self.clock + 1 - self._first
        self._ends[start : start + count] = ends
        self.clock += count

    def _make_room(self, count: int) -> None:
        """Keep only the step times some member has not reported, in an array with room."""
        first = min((seq.reported for seq in self._members.values()), default=self.clock) + 1
        kept = self._ends[first - self._first : self.clock + 1 - self._first]
        ends = np.empty(max(1024, 2 * (len(kept) + count)))
        ends[: len(kept)] = kept
        self._ends, self._first = ends, first

    def unreported(self, seq: Seq) -> np.ndarray:
        """A member's token times since it last reported (a view), now reported."""
        times = self._ends[seq.reported + 1 - self._first : self.clock + 1 - self._first]
        seq.reported = self.clock
        return times

    def due(self) -> list[Seq]:
        """Members that reached their next stop or filled their blocks by now, in the batch's
        order, settled. Their stops are consumed: each must leave, restop or be dropped."""
        clock = self.clock
        found: dict[int, Seq] = {}
        stops, grows = self._stops, self._grows
        while stops and stops[0][0] <= clock:
            step, serial, epoch, seq = heappop(stops)
            if seq.epoch == epoch and seq.stop_at == step:
                found[serial] = seq
        if clock - self._grows_seen <= len(grows):
            steps: Iterable[int] = range(self._grows_seen + 1, clock + 1)
        else:  # a long run: fewer buckets than steps
            steps = sorted(step for step in grows if step <= clock)
        for step in steps:
            for grow_at, serial, epoch, seq in grows.pop(step, ()):
                if seq.epoch == epoch and seq.grow_at == grow_at:
                    found[serial] = seq
        self._grows_seen = clock
        if not found:
            return []
        members = [found[serial] for serial in sorted(found)]
        for seq in members:
            self.settle(seq)
        return members


def _current(entry: _Entry, stop: bool) -> bool:
    step, _, epoch, seq = entry
    return seq.epoch == epoch and (not stop or seq.stop_at == step)
