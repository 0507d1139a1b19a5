"""Running one plugin under its budgets: strikes, quarantine with exponential back-off, last good frame.

A plugin that runs out of fuel, passes its deadline, traps or returns a bad frame gets a strike and its slot shows
its last good frame (or the fallback). After ``strikes`` strikes within ``window_s`` it is quarantined for
``backoff_s``, doubling with each quarantine up to ``backoff_max_s``; when that ends it restarts with a fresh
instance. Nothing a plugin does can stop the frame loop: every failure, whatever its type, is a strike.

Creating an instance (start functions, initialisation, Matricks ``setup``) runs under an init budget of its own.
In the daemon (``background_init``) the frame thread tries it within the plugin's frame budget, and one that needs
more is finished on one shared background thread while the slot shows its held frame, so a slow or spinning
initialisation costs the other layers nothing. A plugin that said "done" is replayed at most once per
``MIN_RESTART_S``, so one that says so at once in a one-item looping playlist cannot make the host re-initialise it
every frame.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import InternalFailure, OutOfFuel, PluginError, PluginTimeout
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


#: Default time budget for creating an instance (start functions, initialisation, Matricks ``setup``).
INIT_MS = 250.0
#: A plugin that said "done" is replayed (with a new instance) at most this often.
MIN_RESTART_S = 1.0


@dataclass(frozen=True)
class Budget:
    """Per-call limits: ``fuel`` (deterministic, calibrated from ``ms``) and an epoch ``deadline_ms`` backstop,
    and the same pair for creating an instance (``init_fuel``, ``init_deadline_ms``)."""

    ms: float
    fuel: int | None
    deadline_ms: int
    init_fuel: int | None = None
    init_deadline_ms: int = int(INIT_MS * 2)

    @classmethod
    def from_ms(
        cls,
        ms: float,
        fuel_per_ms: float | None,
        deadline_factor: float = 2.0,
        deadline_ms: float | None = None,
        init_ms: float = INIT_MS,
    ) -> Budget:
        """``ms`` of fuel at ``fuel_per_ms``, with a wall-clock deadline of ``deadline_ms`` (default
        ``deadline_factor × ms``, at least 2 ms); ``init_ms`` likewise for creating an instance."""
        fuel = int(ms * fuel_per_ms) if fuel_per_ms else None
        # the wall-clock backstop sits above the fuel budget: fuel is the precise limit, the epoch catches
        # what fuel cannot (a slow host call, a machine under load)
        deadline = max(2, int((deadline_ms if deadline_ms is not None else ms * deadline_factor) + 0.999))
        init_fuel = int(init_ms * fuel_per_ms) if fuel_per_ms else None
        return cls(ms, fuel, deadline, init_fuel, max(2, int(init_ms * deadline_factor + 0.999)))


_init_pool: ThreadPoolExecutor | None = None
_init_pool_lock = threading.Lock()


def _background(fn: Callable[[], None]) -> Future[None]:
    """Run ``fn`` on the one thread that creates instances for every slot in the process."""
    global _init_pool
    with _init_pool_lock:
        if _init_pool is None:
            _init_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edged-plugin-init")
        return _init_pool.submit(fn)


class _Done(enum.Enum):
    DONE = "done"


#: Returned by :meth:`Supervised.frame` when the plugin says it is done (the playlist moves on).
DONE: Final = _Done.DONE


@dataclass
class SlotStats:
    calls: int = 0
    failures: int = 0
    strikes: int = 0
    quarantines: int = 0
    restarts: int = 0
    inits: int = 0
    init_ms_max: float = 0.0
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
            "inits": self.inits,
            "init_ms_max": self.init_ms_max,
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
    """One plugin in a slot, run under a budget. Use from one thread (the display's render thread).

    ``background_init`` creates instances on the shared background thread instead of in the frame call.
    """

    def __init__(
        self,
        plugin: DevicePlugin,
        budget: Budget,
        clock: Clock,
        policy: StrikePolicy | None = None,
        fallback: np.ndarray | None = None,
        hold_last: bool = True,
        background_init: bool = False,
    ) -> None:
        self.plugin = plugin
        self.name = plugin.name
        self.clock = clock
        self.policy = policy or StrikePolicy()
        self.fallback = fallback
        #: show the last good frame while failing (else the fallback, or nothing)
        self.hold_last = hold_last
        self.background_init = background_init
        self.last_good: np.ndarray | None = None
        self.stats = SlotStats()
        self._strike_times: deque[float] = deque()
        self.quarantined_until: float | None = None
        self._backoff = self.policy.backoff_s
        #: the instance being created on the background thread; the slot must not touch the plugin meanwhile
        self._preparing: Future[None] | None = None
        #: when the slot last started creating an instance, whether that instance has run since, and until when a
        #: replay has to wait (so a plugin that is "done" at once cannot be re-initialised every frame)
        self._started_at: float | None = None
        self._ran = False
        self._said_done = False
        self._replay_at = float("-inf")
        self.set_budget(budget)
        if background_init:  # start now, off the frame path
            self._instance_ready(clock.now())

    def set_budget(self, budget: Budget) -> None:
        """Apply ``budget`` to the plugin (waits for an instance being created in the background first)."""
        self._settle()
        self.budget = budget
        p = self.plugin.plugin
        p.fuel = budget.fuel
        p.timeout_ms = budget.deadline_ms
        p.init_fuel = budget.init_fuel
        p.init_timeout_ms = budget.init_deadline_ms

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
        self._restart()  # a fresh instance after quarantine
        self.stats.restarts += 1
        log.info("plugin released from quarantine", extra={"plugin": self.name})
        return True

    def restart(self) -> None:
        """Give the plugin a fresh instance for its next frame (each playlist play starts clean). A no-op when the
        current instance has not run yet: it is as fresh as a new one."""
        if self._preparing is None and self._ran:
            self._restart()
            if self._said_done and self._started_at is not None:
                self._replay_at = self._started_at + MIN_RESTART_S
            self._said_done = False

    def _restart(self) -> None:
        self._settle()
        self.plugin.restart()
        self._ran = False

    def _settle(self) -> None:
        """Wait for a background initialisation to finish (bounded by the init deadline); its outcome is kept."""
        fut = self._preparing
        if fut is not None:
            fut.exception()  # waits; the error, if any, is reported by the next frame

    def _prepare(self, quick: bool = False) -> None:
        start = time.perf_counter()
        try:
            b = self.budget
            self.plugin.prepare((b.fuel, b.deadline_ms) if quick else None)
        finally:
            ms = (time.perf_counter() - start) * 1e3
            self.stats.inits += 1
            self.stats.init_ms_max = max(self.stats.init_ms_max, ms)

    def _instance_ready(self, now: float) -> bool:
        """True when the plugin may run now; else creates its instance first.

        With ``background_init`` the instance is first tried here within one frame budget (the usual case: a
        plugin's initialisation is tiny); one that needs more is created on the background thread under the full
        init budget while the slot shows its held frame.
        """
        fut = self._preparing
        if fut is not None:
            if not fut.done():
                return False
            self._preparing = None
            exc = fut.exception()
            if exc is not None:
                self._strike(_as_plugin_error(exc), now)
                return False
            return self.plugin.ready
        if self.plugin.ready:
            return True
        if now < self._replay_at:
            return False  # a plugin that said "done" is replayed at most once per MIN_RESTART_S
        self._started_at = now
        try:
            self._prepare(quick=self.background_init)
        except Exception as exc:
            if self.background_init and isinstance(exc, OutOfFuel | PluginTimeout):
                self._preparing = _background(self._prepare)
            else:
                self._strike(_as_plugin_error(exc), now)
            return False
        return self.plugin.ready

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

    def frame(self, tick: Tick) -> np.ndarray | Literal[_Done.DONE] | None:
        """This slot's frame: the plugin's, or its last good one while failing, quarantined or starting; :data:`DONE`
        when the plugin says it has finished. ``None`` means nothing to show yet."""
        now = self.clock.now()
        if not self._available(now) or not self._instance_ready(now):
            return self._held()
        self._ran = True
        start = time.perf_counter()
        try:
            out = self.plugin.frame(tick)
        except Exception as exc:
            self._measure(time.perf_counter() - start)
            self._strike(_as_plugin_error(exc), now)
            return self._held()
        self._measure(time.perf_counter() - start)
        if out is None:
            self._said_done = True
            return DONE
        self.last_good = out
        self._backoff = max(self.policy.backoff_s, self._backoff / 2)  # good behaviour earns back trust slowly
        return out

    def tick(self, tick: Tick) -> bool:
        """A sensor plugin's tick under the same rules; returns whether it ran cleanly."""
        now = self.clock.now()
        if not self._available(now) or not self._instance_ready(now):
            return False
        self._ran = True
        start = time.perf_counter()
        try:
            self.plugin.tick(tick)
        except Exception as exc:
            self._measure(time.perf_counter() - start)
            self._strike(_as_plugin_error(exc), now)
            return False
        self._measure(time.perf_counter() - start)
        return True

    def close(self) -> None:
        self._settle()
        self.plugin.close()


def _as_plugin_error(exc: BaseException) -> PluginError:
    """A plugin's failure as a strike-able error; anything else that escaped is logged with its traceback once, at
    debug level, and becomes an :class:`InternalFailure` with one clear line."""
    if isinstance(exc, PluginError):
        return exc
    log.debug("unexpected error in a plugin's call", exc_info=exc)
    if isinstance(exc, RecursionError):
        return InternalFailure("the host hit its recursion limit on the plugin's output")
    return InternalFailure(f"internal error ({type(exc).__name__}: {exc})")
