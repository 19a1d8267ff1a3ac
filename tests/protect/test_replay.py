"""The sliding acceptance window: in order, out of order, replayed, too old, persisted."""

from __future__ import annotations

import threading

import pytest

from iotsec.errors import InvalidInputError, PayloadReplayError, PayloadTooOldError
from iotsec.protect.replay import ReplayWindow, ReplayWindows


def test_in_order_out_of_order_replayed_and_too_old() -> None:
    w = ReplayWindow(8)
    w.check(100)
    w.accept(100)
    assert w.top == 100
    with pytest.raises(PayloadReplayError):
        w.accept(100)
    w.accept(97)  # late but inside the window
    with pytest.raises(PayloadReplayError):
        w.check(97)
    w.accept(93)  # the oldest number the window still covers (100 - 7)
    with pytest.raises(PayloadTooOldError):
        w.check(92)
    w.accept(101)
    with pytest.raises(PayloadTooOldError):
        w.check(93)  # now below the window
    with pytest.raises(PayloadReplayError):
        w.check(97)  # still remembered after the shift
    w.accept(1000)  # a jump clears the bitmap
    with pytest.raises(PayloadTooOldError):
        w.check(101)
    w.accept(999)
    with pytest.raises(PayloadReplayError):
        w.accept(999)


def test_first_number_may_be_anything_and_zero_works() -> None:
    w = ReplayWindow()
    w.accept(0)
    with pytest.raises(PayloadReplayError):
        w.accept(0)
    w.accept(1)


def test_state_round_trip_and_floor() -> None:
    w = ReplayWindow(16)
    for seq in (5, 7, 9):
        w.accept(seq)
    restored = ReplayWindow.from_state(w.state())
    for seq in (5, 7, 9):
        with pytest.raises(PayloadReplayError):
            restored.check(seq)
    restored.accept(8)
    floor = ReplayWindow.starting_after(41)
    with pytest.raises(PayloadReplayError):
        floor.check(41)
    with pytest.raises(PayloadReplayError):
        floor.check(40)
    with pytest.raises(PayloadTooOldError):
        floor.check(41 - floor.size)
    floor.accept(42)


@pytest.mark.parametrize("state", [None, [], {"size": 0, "top": 1, "bitmap": 0},
                                   {"size": 8, "top": "1", "bitmap": 0},
                                   {"size": 8, "top": -1, "bitmap": 0},
                                   {"size": 8, "top": 1, "bitmap": -1}, {"size": 8}])
def test_invalid_state_is_refused(state: object) -> None:
    with pytest.raises(InvalidInputError):
        ReplayWindow.from_state(state)


def test_accept_is_atomic_across_threads() -> None:
    w = ReplayWindow()
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def racer() -> None:
        barrier.wait()
        try:
            w.accept(7)
            wins.append(1)
        except PayloadReplayError:
            pass

    threads = [threading.Thread(target=racer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins == [1]


def test_windows_per_sender_are_independent() -> None:
    ws = ReplayWindows(32)
    ws.for_sender("a").accept(5)
    ws.for_sender("b").accept(5)
    with pytest.raises(PayloadReplayError):
        ws.for_sender("a").accept(5)
    assert set(ws.states()) == {"a", "b"}
    ws.restore("a", ReplayWindow.starting_after(100, 32))
    with pytest.raises(PayloadReplayError):
        ws.for_sender("a").check(99)
