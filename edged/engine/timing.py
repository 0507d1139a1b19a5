"""Fixed-rate frame timing: deadlines on a grid from a monotonic clock, late frames dropped, never queued."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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

    def mark(self, t: float) -> None:
        if self.last is not None and len(self.intervals) < self.limit:
            self.intervals.append(t - self.last)
        self.last = t

    def summary(self) -> dict[str, float]:
        if not self.intervals:
            return {"p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "count": 0}
        xs = sorted(self.intervals)
        pick = lambda q: xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]  # noqa: E731
        return {
            "p50_ms": pick(0.50) * 1e3,
            "p99_ms": pick(0.99) * 1e3,
            "max_ms": xs[-1] * 1e3,
            "count": len(xs),
        }
