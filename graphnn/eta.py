"""Remaining-time estimates (ETA) for the command line's progress bar.

A step of a command (``load``, ``strength``, ``hypercore``, a rewired shard ...) reports
``done`` of ``total`` units as it goes. :class:`StepEta` turns those reports into seconds left
from the step's average rate so far::

    remaining = (total - done) * (t - t0) / (done - done0)

where ``(t0, done0)`` is the step's first report. No estimate is given (``None``) before
``min_seconds`` have passed or before a unit is done, since the first units are dominated by
start-up costs. The clock is injectable, so the arithmetic is testable without waiting.
"""

from __future__ import annotations

import math
import time
from typing import Callable

__all__ = ["StepEta", "format_eta"]


class StepEta:
    """ETA of one step. ``clock()`` returns seconds (default ``time.monotonic``); ``min_seconds``:
    the least elapsed time before an estimate is made."""

    def __init__(self, clock: Callable[[], float] | None = None, min_seconds: float = 1.0):
        self.clock = clock or time.monotonic
        self.min_seconds = float(min_seconds)
        self._start: tuple[float, int] | None = None  # (time, done) of the first report
        self._last: int | None = None

    def update(self, done: int, total: int) -> float | None:
        """Record that ``done`` of ``total`` units are finished; return the seconds left
        (``0.0`` when the step is complete), or ``None`` while no estimate can be made. A
        ``done`` lower than before restarts the estimate (the step began again)."""
        now = self.clock()
        last, self._last = self._last, done
        if total <= 0 or done >= total:
            return 0.0
        if self._start is None or (last is not None and done < last):
            self._start = (now, done)
            return None
        t0, d0 = self._start
        elapsed, progressed = now - t0, done - d0
        if progressed <= 0 or elapsed < self.min_seconds:
            return None
        return (total - done) * elapsed / progressed


def format_eta(seconds: float | None) -> str:
    """``"ETA 42 s"``, ``"ETA 3:05"`` (min:s), ``"ETA 1:02:03"`` (h:min:s); ``""`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"ETA {s} s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"ETA {h}:{m:02d}:{s:02d}" if h else f"ETA {m}:{s:02d}"
