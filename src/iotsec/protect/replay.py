"""Replay protection: a sliding acceptance window over a sender's sequence numbers.

The scheme is the anti-replay window of IPsec (RFC 4303, section 3.4.3) and DTLS: the
receiver remembers the highest sequence number it accepted and, in a bitmap, which of the
``size`` numbers below it it has seen. A number above the top is new; one inside the window
is new unless its bit is set; one below the window is refused as too old, because the
receiver can no longer tell whether it was seen. Messages may therefore arrive out of order
by up to ``size`` positions.

A receiver checks the number before it spends work on a message and marks it only after the
message authenticated (:meth:`ReplayWindow.accept` re-checks under a lock, so two threads
cannot both accept the same number). The state is a pair of integers that a server persists
(:meth:`ReplayWindow.state`); a fresh window accepts any first number, so a receiver that
forgets its state must restore it, or start from a known floor, to stay replay-safe.
"""

from __future__ import annotations

import threading
from typing import Any

from iotsec.errors import InvalidInputError, PayloadReplayError, PayloadTooOldError

__all__ = ["DEFAULT_WINDOW", "MAX_SEQ", "MAX_WINDOW", "ReplayWindow", "ReplayWindows"]

DEFAULT_WINDOW = 128
MAX_WINDOW = 65536
MAX_SEQ = (1 << 64) - 1


class ReplayWindow:
    """The acceptance window for one sender."""

    __slots__ = ("_bitmap", "_lock", "_mask", "_top", "size")

    def __init__(self, size: int = DEFAULT_WINDOW, *, top: int | None = None,
                 bitmap: int = 0) -> None:
        if not 1 <= size <= MAX_WINDOW:
            raise InvalidInputError(f"a replay window holds 1 to {MAX_WINDOW} numbers")
        if top is not None and not 0 <= top <= MAX_SEQ:
            raise InvalidInputError("the top of a replay window is a 64-bit sequence number")
        self.size = size
        self._mask = (1 << size) - 1
        self._top = top
        self._bitmap = (bitmap & self._mask) if top is not None else 0
        if top is not None:
            self._bitmap |= 1
        self._lock = threading.Lock()

    @classmethod
    def starting_after(cls, seq: int, size: int = DEFAULT_WINDOW) -> ReplayWindow:
        """A window that refuses ``seq`` and everything before it (a restored floor)."""
        return cls(size, top=seq, bitmap=(1 << size) - 1)

    @property
    def top(self) -> int | None:
        """The highest accepted sequence number, or ``None`` before the first."""
        return self._top

    def check(self, seq: int) -> None:
        """Raise :class:`PayloadReplayError` or :class:`PayloadTooOldError` unless ``seq``
        would be accepted now. Does not change the window."""
        top = self._top
        if top is None or seq > top:
            return
        behind = top - seq
        if behind >= self.size:
            raise PayloadTooOldError(
                f"sequence number {seq} is older than the acceptance window "
                f"({self.size} numbers below {top})")
        if (self._bitmap >> behind) & 1:
            raise PayloadReplayError(f"sequence number {seq} was already accepted")

    def accept(self, seq: int) -> None:
        """Mark ``seq`` as seen (after its message authenticated), or raise as :meth:`check`."""
        with self._lock:
            self.check(seq)
            top = self._top
            if top is None:
                self._top, self._bitmap = seq, 1
            elif seq > top:
                shift = seq - top
                self._bitmap = ((self._bitmap << shift) | 1) & self._mask if shift < self.size \
                    else 1
                self._top = seq
            else:
                self._bitmap |= 1 << (top - seq)

    def state(self) -> dict[str, Any]:
        """What to persist: ``{"size", "top", "bitmap"}`` (JSON-friendly integers)."""
        with self._lock:
            return {"size": self.size, "top": self._top, "bitmap": self._bitmap}

    @classmethod
    def from_state(cls, state: Any) -> ReplayWindow:
        """Restore a window from :meth:`state` (validated: it may come from a file)."""
        if not isinstance(state, dict):
            raise InvalidInputError("a replay window state is an object")
        size, top, bitmap = state.get("size"), state.get("top"), state.get("bitmap")
        if (type(size) is not int or (top is not None and type(top) is not int)
                or type(bitmap) is not int or bitmap < 0):
            raise InvalidInputError("a replay window state has integer size, top and bitmap")
        return cls(size, top=top, bitmap=bitmap)

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self.size}, top={self._top})"


class ReplayWindows:
    """One :class:`ReplayWindow` per sender, created on first use.

    Windows are only created for senders the receiver holds a key for (the caller looks a
    message's key up first), so the table cannot be grown by forged messages.
    """

    __slots__ = ("_lock", "_windows", "size")

    def __init__(self, size: int = DEFAULT_WINDOW) -> None:
        ReplayWindow(size)  # validates the size
        self.size = size
        self._windows: dict[str, ReplayWindow] = {}
        self._lock = threading.Lock()

    def for_sender(self, sender_id: str) -> ReplayWindow:
        window = self._windows.get(sender_id)
        if window is None:
            with self._lock:
                window = self._windows.setdefault(sender_id, ReplayWindow(self.size))
        return window

    def restore(self, sender_id: str, window: ReplayWindow) -> None:
        """Install a persisted window for ``sender_id``."""
        with self._lock:
            self._windows[sender_id] = window

    def states(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            items = list(self._windows.items())
        return {sender: window.state() for sender, window in items}
