"""The process-wide wasmtime engines and the shared epoch ticker that drives wall-clock deadlines.

Two engines, because fuel metering has a price (about a third more time in tight loops): :data:`ENGINE` meters
fuel and is what the frame engine and anything with a fuel limit runs on; :data:`UNMETERED_ENGINE` has only epoch
interruption, for plugins created without a fuel limit (as the official SDK runs them). A module is compiled for
one engine; both share the ticker.
"""

from __future__ import annotations

import logging
import threading

import wasmtime

log = logging.getLogger("edged.runtime")

#: Milliseconds per epoch tick. A deadline of N ms is armed as N + 1 ticks, so it never fires early.
TICK_MS = 1.0

#: Fuel and epoch values that mean "no limit" (far beyond anything a call can use).
UNLIMITED_FUEL = 2**62
UNLIMITED_TICKS = 2**60


def _config(metered: bool) -> wasmtime.Config:
    cfg = wasmtime.Config()
    cfg.consume_fuel = metered  # fuel is armed per call only when a limit is set; otherwise UNLIMITED_FUEL
    cfg.epoch_interruption = True
    # The host caches raw pointers to kernel memory; with a full reservation memories never move.
    cfg.memory_may_move = False
    cfg.cranelift_opt_level = "speed"
    # one core for compiling: on a 2- or 4-core Pi, a parallel compile of a new plugin would take every core from
    # the frame threads (measured in bench/frame_timing); the AOT cache makes compiles rare anyway
    cfg.parallel_compilation = False
    # Proposals whose allocations no memory limit of the store can count: the GC heap (wasm GC structs and arrays)
    # and shared memories; plugins of every PDK are built without them
    cfg.wasm_gc = False
    cfg.wasm_threads = False
    return cfg


#: Describes the metered engine's configuration in AOT cache keys: a module compiled with other settings will not load.
ENGINE_FINGERPRINT = "fuel=1;epoch=1;may_move=0;opt=speed;gc=0;threads=0"
UNMETERED_FINGERPRINT = "fuel=0;epoch=1;may_move=0;opt=speed;gc=0;threads=0"


class EpochTicker:
    """One thread for all deadlines: increments the engine epoch every :data:`TICK_MS` while any call is armed.

    Calls wrap themselves in :meth:`arm`/:meth:`disarm`; when nothing is armed the thread sleeps on a condition,
    so an idle daemon costs nothing.
    """

    def __init__(self, engines: list[wasmtime.Engine], tick_ms: float = TICK_MS) -> None:
        self._engines = engines
        self._tick = tick_ms / 1000.0
        self._armed = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        with self._cond:
            self._armed += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="edged-epoch-ticker", daemon=True)
                self._thread.start()
            elif self._armed == 1:
                self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._armed -= 1

    def _run(self) -> None:
        wait = threading.Event().wait
        while True:
            with self._cond:
                while self._armed <= 0:
                    self._cond.wait()
            wait(self._tick)
            for engine in self._engines:
                engine.increment_epoch()


ENGINE = wasmtime.Engine(_config(metered=True))
UNMETERED_ENGINE = wasmtime.Engine(_config(metered=False))
TICKER = EpochTicker([ENGINE, UNMETERED_ENGINE])


def fingerprint(engine: wasmtime.Engine) -> str:
    """The cache-key description of one of the two engines."""
    return UNMETERED_FINGERPRINT if engine is UNMETERED_ENGINE else ENGINE_FINGERPRINT
