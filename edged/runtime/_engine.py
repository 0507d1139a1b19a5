"""The process-wide wasmtime engines and the shared epoch ticker that drives wall-clock deadlines.

Two engines, because fuel metering has a price (about a third more time in tight loops): :data:`ENGINE` meters
fuel and is what the frame engine and anything with a fuel limit runs on; :data:`UNMETERED_ENGINE` has only epoch
interruption, for plugins created without a fuel limit (as the official SDK runs them). A module is compiled for
one engine; both share the ticker.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import platform
import sys
import threading

import wasmtime
from wasmtime import _ffi

from ._gil import hold_gil_in_quick_calls

hold_gil_in_quick_calls()

log = logging.getLogger("edged.runtime")

#: Milliseconds per epoch tick. A deadline of N ms is armed as N + 1 ticks, so it never fires early.
TICK_MS = 1.0

#: Fuel and epoch values that mean "no limit" (far beyond anything a call can use).
UNLIMITED_FUEL = 2**62
UNLIMITED_TICKS = 2**60

#: Python's thread switch interval while a call with a deadline runs (Python's default is 5 ms; see SwitchInterval).
DEADLINE_SWITCH_INTERVAL_S = 0.0005


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


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Sigevent(ctypes.Structure):
    """Linux's ``struct sigevent`` (64 bytes) with the ``SIGEV_THREAD`` members of its union."""

    _fields_ = [
        ("sigev_value", ctypes.c_void_p),  # union sigval: an int or a pointer, pointer-sized
        ("sigev_signo", ctypes.c_int),
        ("sigev_notify", ctypes.c_int),
        ("notify_function", ctypes.c_void_p),  # void (*)(union sigval)
        ("notify_attributes", ctypes.c_void_p),  # pthread_attr_t *
        ("_pad", ctypes.c_int * 8),
    ]


_SIGEV_THREAD = 2
_CLOCK_MONOTONIC = 1


class _NativeTimer:
    """A POSIX timer whose every expiry calls ``wasmtime_engine_increment_epoch(engine)`` itself.

    glibc runs a ``SIGEV_THREAD`` notification on a helper thread of its own, passing ``sigev_value`` by value;
    ``union sigval`` is pointer-sized, so on the SysV x86-64 and AAPCS64 ABIs it arrives exactly as the function's
    one pointer argument (the engine). No Python code runs and the GIL is never needed, so a deadline fires on time
    however busy the interpreter is.
    """

    def __init__(self, libc: ctypes.CDLL, engine: wasmtime.Engine, tick_ms: float) -> None:
        self._libc = libc
        self.engine = engine  # the timer holds its raw pointer: keep the engine alive as long as the timer
        event = _Sigevent()
        event.sigev_notify = _SIGEV_THREAD
        event.notify_function = ctypes.cast(_ffi.dll.wasmtime_engine_increment_epoch, ctypes.c_void_p).value
        event.sigev_value = ctypes.cast(engine.ptr(), ctypes.c_void_p).value
        self._id = ctypes.c_void_p()
        if libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(self._id)) != 0:
            raise OSError(ctypes.get_errno(), "timer_create failed")
        ns = int(tick_ms * 1_000_000)
        tick = _Timespec(ns // 1_000_000_000, ns % 1_000_000_000)
        self._run = _Itimerspec(tick, tick)
        self._stop = _Itimerspec()
        self._deleted = False
        # arming and stopping is one quick system call on every call with a deadline: through PyDLL it keeps the
        # GIL (see _gil.py), instead of waiting to get it back behind busy threads twice per call
        settime = ctypes.PyDLL(libc._name, handle=libc._handle).timer_settime
        settime.argtypes = libc.timer_settime.argtypes
        settime.restype = libc.timer_settime.restype
        self._settime = settime

    def start(self) -> None:
        self._settime(self._id, 0, ctypes.byref(self._run), None)

    def stop(self) -> None:
        self._settime(self._id, 0, ctypes.byref(self._stop), None)

    def delete(self) -> None:
        if not self._deleted:
            self._deleted = True
            self._libc.timer_delete(self._id)


def _libc_timers() -> ctypes.CDLL | None:
    """libc with ``timer_create`` declared, on Linux x86-64/arm64 (whose ``struct sigevent`` layout is known)."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "aarch64", "arm64"):
        return None
    if os.environ.get("EDGED_EPOCH_TICKER") == "thread":  # for comparisons (bench/runtime.py) and debugging
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if not hasattr(libc, "timer_create"):  # glibc before 2.34 keeps it in librt
            libc = ctypes.CDLL(ctypes.util.find_library("rt") or "librt.so.1", use_errno=True)
        libc.timer_create.argtypes = [ctypes.c_int, ctypes.POINTER(_Sigevent), ctypes.POINTER(ctypes.c_void_p)]
        libc.timer_create.restype = ctypes.c_int
        libc.timer_settime.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        libc.timer_settime.restype = ctypes.c_int
        libc.timer_delete.argtypes = [ctypes.c_void_p]
        libc.timer_delete.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


class EpochTicker:
    """Increments each engine's epoch every :data:`TICK_MS` while any call on that engine has a deadline armed.

    On Linux each engine gets a POSIX timer that calls wasmtime's ``wasmtime_engine_increment_epoch`` directly on
    glibc's notification thread, so deadlines never wait for the GIL (a Python thread doing the same overshot a
    500 ms deadline by a median 324 ms while other threads kept the interpreter busy). Elsewhere, or when the
    timer cannot be created, one Python thread ticks instead. Calls wrap themselves in :meth:`arm`/:meth:`disarm`;
    when nothing is armed no timer runs and the thread sleeps, so an idle daemon costs nothing.
    """

    def __init__(self, engines: list[wasmtime.Engine], tick_ms: float = TICK_MS) -> None:
        self._engines = engines
        self._tick_ms = tick_ms
        self._tick = tick_ms / 1000.0
        self._armed = 0
        self._armed_by: dict[int, int] = {id(e): 0 for e in engines}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._timers: dict[int, _NativeTimer] | None = None
        libc = _libc_timers()
        if libc is not None:
            try:
                self._timers = {id(e): _NativeTimer(libc, e, tick_ms) for e in engines}
            except OSError as exc:
                log.warning("no POSIX timers (%s): deadlines tick on a Python thread", exc)
        #: "native" (POSIX timers, GIL-free) or "thread" (a Python thread)
        self.kind = "native" if self._timers is not None else "thread"
        if self._timers is not None:
            atexit.register(self._shutdown)
            os.register_at_fork(after_in_child=self._after_fork)

    def arm(self, engine: wasmtime.Engine | None = None) -> None:
        """Start ticking for a call on ``engine`` (None: every engine)."""
        with self._lock:
            self._armed += 1
            for e in self._engines if engine is None else (engine,):
                key = id(e)
                self._armed_by[key] += 1
                if self._timers is not None and self._armed_by[key] == 1:
                    self._timers[key].start()
            if self._timers is None:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="edged-epoch-ticker", daemon=True)
                    self._thread.start()
                elif self._armed == 1:
                    self._cond.notify()

    def disarm(self, engine: wasmtime.Engine | None = None) -> None:
        """The call armed with the same ``engine`` ended."""
        with self._lock:
            self._armed -= 1
            for e in self._engines if engine is None else (engine,):
                key = id(e)
                self._armed_by[key] -= 1
                if self._timers is not None and self._armed_by[key] == 0:
                    self._timers[key].stop()

    def _run(self) -> None:
        wait = threading.Event().wait
        while True:
            with self._cond:
                while self._armed <= 0:
                    self._cond.wait()
                engines = [e for e in self._engines if self._armed_by[id(e)] > 0]
            wait(self._tick)
            for engine in engines:
                engine.increment_epoch()

    def _shutdown(self) -> None:
        """At interpreter exit, before engines can be freed: no timer may call into a dead engine."""
        timers, self._timers = self._timers, None
        for timer in (timers or {}).values():
            timer.delete()

    def _after_fork(self) -> None:
        """A forked child inherits no POSIX timers (nor threads): start over with fresh ones."""
        libc = _libc_timers()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._thread = None
        self._armed = 0
        self._armed_by = {id(e): 0 for e in self._engines}
        try:
            self._timers = {id(e): _NativeTimer(libc, e, self._tick_ms) for e in self._engines} if libc else None
        except OSError:
            self._timers = None
        self.kind = "native" if self._timers is not None else "thread"


class SwitchInterval:
    """While entered (by any number of threads at once), Python's thread switch interval is at most ``seconds``.

    A call into wasm gives the GIL up, and so does every FFI call around it (creating the instance, arming the
    deadline, the trap and its code, dropping the instance). Getting the GIL back behind busy Python threads waits
    up to Python's switch interval, 5 ms by default, at each of them: that made a 100 ms deadline fail a median
    62 ms late with two busy threads, though the epoch stopped the wasm on time. Calls with a deadline run inside
    :data:`DEADLINE_SWITCH`. The interval is never raised, and is restored when the last thread leaves unless
    something else changed it meanwhile; other threads switch more often only while such calls run.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: float | None = None
        self._lowered_to = 0.0

    def __enter__(self) -> None:
        with self._lock:
            self._depth += 1
            if self._depth == 1 and (current := sys.getswitchinterval()) > self.seconds:
                self._saved = current
                sys.setswitchinterval(self.seconds)
                self._lowered_to = sys.getswitchinterval()  # as Python rounds it

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                saved, self._saved = self._saved, None
                if saved is not None and sys.getswitchinterval() == self._lowered_to:
                    sys.setswitchinterval(saved)

    def _after_fork(self) -> None:
        """A forked child has none of the parent's calls running: give it the interval back."""
        if self._saved is not None and sys.getswitchinterval() == self._lowered_to:
            sys.setswitchinterval(self._saved)
        self._lock = threading.Lock()
        self._depth = 0
        self._saved = None


DEADLINE_SWITCH = SwitchInterval(DEADLINE_SWITCH_INTERVAL_S)
os.register_at_fork(after_in_child=DEADLINE_SWITCH._after_fork)

ENGINE = wasmtime.Engine(_config(metered=True))
UNMETERED_ENGINE = wasmtime.Engine(_config(metered=False))
TICKER = EpochTicker([ENGINE, UNMETERED_ENGINE])


def fingerprint(engine: wasmtime.Engine) -> str:
    """The cache-key description of one of the two engines."""
    return UNMETERED_FINGERPRINT if engine is UNMETERED_ENGINE else ENGINE_FINGERPRINT
