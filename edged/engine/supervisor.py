"""Running one plugin under its budgets: strikes, quarantine with exponential back-off, last good frame.

A plugin that runs out of fuel, passes its deadline, traps or returns a bad frame gets a strike and its slot shows
its last good frame (or the fallback). After ``strikes`` strikes within ``window_s`` it is quarantined for
``backoff_s``, doubling with each quarantine up to ``backoff_max_s``; when that ends it restarts with a fresh
instance. Nothing a plugin does can stop the frame loop: every failure is a :class:`PluginError`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import PluginError
from ..host.frames import Tick
from ..host.plugin import DevicePlugin
from .clock import Clock

log = logging.getLogger("edged.engine")


class StrikePolicy(BaseModel):
    """When a misbehaving plugin is quarantined, and for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    strikes: int = Field(default=3, ge=1)
    window_s: float = Field(default=10.0, gt=0)
    backoff_s: float = Field(default=2.0, gt=0)
    backoff_max_s: float = Field(default=120.0, gt=0)


@dataclass(frozen=True)
class Budget:
    """Per-call limits: ``fuel`` (deterministic, calibrated from ``ms``) and an epoch ``deadline_ms`` backstop."""

    ms: float
    fuel: int | None
    deadline_ms: int

    @classmethod
    def from_ms(
        cls, ms: float, fuel_per_ms: float | None, deadline_factor: float = 2.0, deadline_ms: float | None = None
    ) -> Budget:
        """``ms`` of fuel at ``fuel_per_ms``, with a wall-clock deadline of ``deadline_ms`` (default
        ``deadline_factor × ms``, at least 2 ms)."""
        fuel = int(ms * fuel_per_ms) if fuel_per_ms else None
        # the wall-clock backstop sits above the fuel budget: fuel is the precise limit, the epoch catches
        # what fuel cannot (a slow host call, a machine under load)
        deadline = max(2, int((deadline_ms if deadline_ms is not None else ms * deadline_factor) + 0.999))
        return cls(ms, fuel, deadline)


#: Returned by :meth:`Supervised.frame` when the plugin says it is done (the playlist moves on).
DONE: Any = object()


@dataclass
class SlotStats:
    calls: int = 0
    failures: int = 0
    strikes: int = 0
    quarantines: int = 0
    restarts: int = 0
    fuel_used_max: int = 0
    fuel_used_total: int = 0
    ms_max: float = 0.0
    ms_total: float = 0.0
    last_error: str | None = None
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self, budget: Budget) -> dict[str, Any]:
        n = max(self.calls, 1)
        return {
            "calls": self.calls,
            "failures": self.failures,
            "strikes": self.strikes,
            "quarantines": self.quarantines,
            "restarts": self.restarts,
            "budget_ms": budget.ms,
            "budget_fuel": budget.fuel,
            "ms_mean": self.ms_total / n,
            "ms_max": self.ms_max,
            "fuel_mean": self.fuel_used_total / n if budget.fuel else None,
            "fuel_max": self.fuel_used_max if budget.fuel else None,
            "errors": dict(self.errors),
            "last_error": self.last_error,
        }


class Supervised:
    """One plugin in a slot, run under a budget. Use from one thread (the display's render thread)."""

    def __init__(
        self,
        plugin: DevicePlugin,
        budget: Budget,
        clock: Clock,
        policy: StrikePolicy | None = None,
        fallback: np.ndarray | None = None,
        hold_last: bool = True,
    ) -> None:
        self.plugin = plugin
        self.name = plugin.name
        self.clock = clock
        self.policy = policy or StrikePolicy()
        self.fallback = fallback
        #: show the last good frame while failing (else the fallback, or nothing)
        self.hold_last = hold_last
        self.last_good: np.ndarray | None = None
        self.stats = SlotStats()
        self._strike_times: deque[float] = deque()
        self.quarantined_until: float | None = None
        self._backoff = self.policy.backoff_s
        self.set_budget(budget)

    def set_budget(self, budget: Budget) -> None:
        self.budget = budget
        self.plugin.plugin.fuel = budget.fuel
        self.plugin.plugin.timeout_ms = budget.deadline_ms

    @property
    def quarantined(self) -> bool:
        return self.quarantined_until is not None

    def _held(self) -> np.ndarray | None:
        if self.hold_last and self.last_good is not None:
            return self.last_good
        return self.fallback

    def _available(self, now: float) -> bool:
        if self.quarantined_until is None:
            return True
        if now < self.quarantined_until:
            return False
        self.quarantined_until = None
        self.plugin.restart()  # a fresh instance after quarantine
        self.stats.restarts += 1
        log.info("plugin released from quarantine", extra={"plugin": self.name})
        return True

    def _strike(self, exc: PluginError, now: float) -> None:
        kind = type(exc).__name__
        self.stats.failures += 1
        self.stats.strikes += 1
        self.stats.errors[kind] = self.stats.errors.get(kind, 0) + 1
        self.stats.last_error = str(exc)
        self._strike_times.append(now)
        while self._strike_times and now - self._strike_times[0] > self.policy.window_s:
            self._strike_times.popleft()
        log.warning("plugin strike: %s", exc, extra={"plugin": self.name, "error": kind})
        if len(self._strike_times) >= self.policy.strikes:
            self.quarantined_until = now + self._backoff
            self.stats.quarantines += 1
            log.error(
                "plugin quarantined for %.1f s after %d strikes",
                self._backoff,
                len(self._strike_times),
                extra={"plugin": self.name},
            )
            self._backoff = min(self._backoff * 2, self.policy.backoff_max_s)
            self._strike_times.clear()

    def _measure(self, elapsed: float) -> None:
        ms = elapsed * 1e3
        st = self.stats
        st.calls += 1
        st.ms_total += ms
        st.ms_max = max(st.ms_max, ms)
        fuel = self.plugin.last_fuel_used
        if fuel is not None:
            st.fuel_used_total += fuel
            st.fuel_used_max = max(st.fuel_used_max, fuel)

    def frame(self, tick: Tick) -> np.ndarray | None:
        """This slot's frame: the plugin's, or its last good one while failing or quarantined; :data:`DONE` when
        the plugin says it has finished. ``None`` means nothing to show yet."""
        now = self.clock.now()
        if not self._available(now):
            return self._held()
        start = time.perf_counter()
        try:
            out = self.plugin.frame(tick)
        except PluginError as exc:
            self._measure(time.perf_counter() - start)
            self._strike(exc, now)
            return self._held()
        self._measure(time.perf_counter() - start)
        if out is None:
            return DONE
        self.last_good = out
        self._backoff = max(self.policy.backoff_s, self._backoff / 2)  # good behaviour earns back trust slowly
        return out

    def tick(self, tick: Tick) -> bool:
        """A sensor plugin's tick under the same rules; returns whether it ran cleanly."""
        now = self.clock.now()
        if not self._available(now):
            return False
        start = time.perf_counter()
        try:
            self.plugin.tick(tick)
        except PluginError as exc:
            self._measure(time.perf_counter() - start)
            self._strike(exc, now)
            return False
        self._measure(time.perf_counter() - start)
        return True

    def close(self) -> None:
        self.plugin.close()
