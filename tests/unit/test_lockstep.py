"""The lockstep decoding batch answers what a walk over its members would, at every step."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engines.base import EngineCall
from sim.engines.lockstep import DecodingBatch, Seq

BLOCK = 16


def member(serial: int, context: int, width: int, spare: bool, stop: int) -> Seq:
    call = EngineCall(
        key=serial,
        prompt=[(("prompt", serial), 0, 8)],
        output=("output", serial),
        output_start=0,
        tokens=10_000,
        watch=(),
        progress=lambda times: None,
        done=lambda result, times: None,
    )
    blocks = context // BLOCK + 1 + spare  # room for one more token, maybe a spare block
    seq = Seq(call=call, arrived=0.0, prompt=8, context=context, blocks=blocks, width=width)
    seq.serial, seq.next_stop = serial, stop
    return seq


def walked_growth(members: list[Seq], steps: int) -> int:
    """The engine's rule, member by member: blocks needed after ``steps`` minus those held."""
    return sum((s.context + s.width * steps + BLOCK) // BLOCK - s.blocks for s in members)


operations = st.lists(
    st.tuples(
        st.sampled_from(["join", "leave", "advance"]),
        st.integers(1, 400),  # a context, or steps
        st.integers(1, 3),  # a width
        st.booleans(),  # a spare block
        st.integers(1, 300),  # tokens to the next stop
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_the_batch_agrees_with_a_walk_over_its_members(steps: list) -> None:
    batch = DecodingBatch(BLOCK)
    members: dict[int, Seq] = {}
    expected_times: dict[int, list[float]] = {}
    now = 0.0
    for serial, (op, number, width, spare, stop) in enumerate(steps, 1):
        if op == "join" or not members:
            seq = member(serial, number, width, spare, stop)
            batch.join(seq)
            members[serial], expected_times[serial] = seq, []
        elif op == "leave":
            seq = members.pop(min(members, key=lambda s: (s * number) % 7))
            batch.leave(seq)
            times = np.concatenate(seq.pending) if seq.pending else np.empty(0)
            assert times.tolist() == expected_times.pop(seq.serial)
        else:
            run = min(number, batch.steps_to_stop(10_000))
            ends = now + np.cumsum(np.full(run, 0.25))
            now = float(ends[-1])
            batch.advance(ends)
            for seq in members.values():
                expected_times[seq.serial] += ends.tolist()
            for seq in members.values():
                batch.settle(seq)
            reached = [
                s.serial
                for s in members.values()
                if s.generated >= s.next_stop or s.context >= s.blocks * BLOCK
            ]
            due = batch.due()
            assert [s.serial for s in due] == sorted(reached)
            for seq in due:  # as the engine does: blocks for one more token, the next stop
                grow = (seq.context + BLOCK) // BLOCK - seq.blocks
                if grow > 0:
                    seq.blocks += grow
                    batch.grew(seq, grow)
                if seq.generated >= seq.next_stop:
                    seq.next_stop += stop
                    batch.restop(seq)
                times = batch.unreported(seq).tolist()
                assert times == expected_times[seq.serial]
                expected_times[seq.serial] = []
        for seq in members.values():
            batch.settle(seq)
        walked = list(members.values())
        assert batch.size == len(walked)
        assert batch.context() == sum(s.context for s in walked)
        assert batch.longest() == max((s.context for s in walked), default=0)
        assert batch.steps_to_stop(10_000) == min(
            (s.next_stop - s.generated for s in walked), default=10_000
        )
        for ahead in (1, 2, 7, 16, 33, 200):
            assert batch.growth(ahead) == walked_growth(walked, ahead)
            for free in (0, 3, 50):
                assert batch.fits(ahead, free) == (walked_growth(walked, ahead) <= free)
