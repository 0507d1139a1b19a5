"""Time for the engine, injectable so that tests can drive it deterministically."""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds, and a way to wait until a moment (returning early if ``stop`` is set)."""

    def now(self) -> float: ...
    def sleep_until(self, t: float, stop: threading.Event | None = None) -> None: ...


class RealClock:
    """``time.monotonic`` with event-aware sleeping: idle time is slept, never spun."""

    def now(self) -> float:
        return time.monotonic()

    def sleep_until(self, t: float, stop: threading.Event | None = None) -> None:
        delay = t - time.monotonic()
        if delay <= 0:
            return
        if stop is not None:
            stop.wait(delay)
        else:
            time.sleep(delay)


class FakeClock:
    """A clock that only moves when told to; ``sleep_until`` jumps straight to the target."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt

    def sleep_until(self, t: float, stop: threading.Event | None = None) -> None:
        if t > self.t:
            self.slept.append(t - self.t)
            self.t = t
