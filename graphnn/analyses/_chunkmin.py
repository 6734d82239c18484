"""The position of the minimum of a float64 array that changes a few node ranges at a time.

Peeling removes the neuron of smallest current value again and again, and each removal changes
only the values of that neuron's neighbours: whole partitions of a dense block, one group of a
grouped one. :class:`SegmentMin` cuts the node space into *segments* (the partitions, longer
ones in pieces of at most ``SEGMENT`` neurons) and keeps the minimum of each, so a change of a
partition costs one pass over it, and finding the minimum one pass over the segment minima and
one over a segment: no pass over all neurons per removal, and few numpy calls (the peeling of a
graph with many small blocks is bound by their count). Ties go to the lowest index
(``numpy.argmin`` at both levels), so the order is the same on every machine.
"""

from __future__ import annotations

import numpy as np

#: Longest segment (neurons): bounds the cost of refreshing the segment of a removed neuron.
SEGMENT = 2048

_reduce_min = np.minimum.reduce
_reduceat_min = np.minimum.reduceat


def segment_cuts(n: int, ranges: list[tuple[int, int]]) -> np.ndarray:
    """Segment starts (and ``n`` last) covering ``[0, n)``: every range start is a cut, gaps
    between ranges are segments too, and no segment is longer than ``SEGMENT``."""
    cuts = {0, n}
    for lo, hi in ranges:
        cuts.update((lo, hi))
    bounds = sorted(c for c in cuts if 0 <= c <= n)
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        out.extend(range(lo, hi, SEGMENT))
    out.append(n)
    return np.asarray(out, dtype=np.int64)


class SegmentMin:
    """``values`` (copied into :attr:`v`) cut at ``cuts`` (from :func:`segment_cuts`): change
    entries of :attr:`v` in place, then call :meth:`refresh` (or :meth:`refresh_segment`) on
    what changed before the next :meth:`argmin`."""

    def __init__(self, values: np.ndarray, cuts: np.ndarray):
        self.v = np.array(values, dtype=np.float64)
        self.cuts = cuts
        self.lo = cuts[:-1].tolist()
        self.hi = cuts[1:].tolist()
        self.m = _reduceat_min(self.v, cuts[:-1]) if self.v.size else np.zeros(0)
        self.seg_of = np.repeat(np.arange(len(self.lo)), np.diff(cuts)).tolist()

    def argmin(self) -> tuple[int, int]:
        """``(index, segment)`` of the smallest entry (the lowest such index on ties)."""
        j = int(self.m.argmin())
        lo = self.lo[j]
        return lo + int(self.v[lo:self.hi[j]].argmin()), j

    def refresh_segment(self, j: int) -> None:
        self.m[j] = _reduce_min(self.v[self.lo[j]:self.hi[j]])

    def span(self, lo: int, hi: int) -> tuple[int, int, int, int, np.ndarray | None]:
        """What :meth:`refresh_span` needs for the node range ``[lo, hi)``, precomputed:
        ``(first segment, end segment, start, end, relative cuts or None for one segment)``."""
        j0, j1 = self.seg_of[lo], self.seg_of[hi - 1] + 1
        a, b = self.lo[j0], self.hi[j1 - 1]
        return j0, j1, a, b, (None if j1 - j0 == 1 else self.cuts[j0:j1] - a)

    def refresh_span(self, span) -> None:
        j0, j1, a, b, rel = span
        if rel is None:
            self.m[j0] = _reduce_min(self.v[a:b])
        else:
            self.m[j0:j1] = _reduceat_min(self.v[a:b], rel)

    def refresh(self, lo: int, hi: int) -> None:
        """Recompute the minima of the segments that overlap ``[lo, hi)``."""
        if hi > lo:
            self.refresh_span(self.span(lo, hi))
