"""Fixed-rate frame timing: deadlines on a grid from a monotonic clock, late frames dropped, never queued."""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

#: upper bounds (seconds) of the frame-interval histogram exported at ``/metrics``
INTERVAL_BOUNDS = (0.005, 0.010, 0.0125, 0.015, 0.0175, 0.020, 0.025, 0.030, 0.035, 0.040, 0.050, 0.075, 0.1, 0.25, 1.0)
#: upper bounds (seconds) of the render-time histogram
RENDER_BOUNDS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.012, 0.016, 0.025, 0.05, 0.1)


class Buckets:
    """Counts for a histogram (Prometheus's ``le`` buckets, not cumulative here): one bisect over a dozen bounds
    and two additions per observation, no allocation to speak of; read at scrape time."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


@dataclass
class FrameGrid:
    """Frame ``k`` is due at ``start + k * period``. There is no drift: deadlines never accumulate error.

    After a frame finishes, :meth:`next_after` gives the next grid point that is still in the future; every grid
    point skipped on the way is a dropped frame.
    """

    period: float
    start: float
    index: int = 0
    dropped: int = 0

    @classmethod
    def at_fps(cls, fps: float, start: float) -> FrameGrid:
        if not fps > 0:
            raise ValueError("fps must be positive")
        return cls(1.0 / fps, start)

    def deadline(self, index: int | None = None) -> float:
        return self.start + (self.index if index is None else index) * self.period

    def next_after(self, now: float) -> float:
        """Advance to the first grid point strictly after ``now`` (at least one step); returns its time."""
        nxt = self.index + 1
        due = self.start + nxt * self.period
        if now >= due:
            # late: skip the grid points that have already passed
            behind = math.floor((now - self.start) / self.period) + 1
            self.dropped += behind - nxt
            nxt = behind
        self.index = nxt
        return self.start + nxt * self.period


@dataclass
class IntervalStats:
    """Frame-to-frame intervals, for p50/p99/max in the stats file."""

    intervals: list[float] = field(default_factory=list)
    last: float | None = None
    limit: int = 200_000
    #: every interval, bucketed (kept past ``limit``): the ``/metrics`` histogram
    buckets: Buckets = field(default_factory=lambda: Buckets(INTERVAL_BOUNDS))

    def mark(self, t: float) -> None:
        if self.last is not None:
            if len(self.intervals) < self.limit:
                self.intervals.append(t - self.last)
            self.buckets.observe(t - self.last)
        self.last = t

    def summary(self) -> dict[str, float]:
        if not self.intervals:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "count": 0}
        xs = sorted(self.intervals)

        def pick(q: float) -> float:
            return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]

        return {
            "p50_ms": pick(0.50) * 1e3,
            "p99_ms": pick(0.99) * 1e3,
            "max_ms": xs[-1] * 1e3,
            "count": len(xs),
        }
