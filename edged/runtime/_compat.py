"""The rest of the official Extism Python SDK's public API, so that ``from edged import runtime as extism`` is a
drop-in replacement: ``Error``, ``extism_version()``, ``set_log_file()``, ``set_log_custom()`` and the
``CancelHandle`` that ``Plugin.cancel_handle()`` returns. The host-function half (``ValType``, ``Val``, ``Memory``,
``Codec``, ``Pickle``, ``Function``, ``CurrentPlugin``) lives in ``_host_fn``.
"""

from __future__ import annotations

import ctypes
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import wasmtime
from wasmtime import _ffi

from .. import __version__
from ..errors import PluginError
from ._engine import TICK_MS, TICKER
from ._env import TRACE

if TYPE_CHECKING:
    from ._plugin import Plugin

#: The SDK's exception type. Every edged failure is a :class:`~edged.errors.PluginError`, so ``except Error``
#: catches them all, and the subclasses (``OutOfFuel``, ``PluginTimeout``, ...) stay available.
Error = PluginError

#: The Extism runtime whose behaviour edged was checked against (extism-sys, side by side in the tests).
EXTISM_RUNTIME_VERSION = "1.41.0"

_LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
_LEVELS["error"] = logging.ERROR
#: the loggers Extism's log covers: plugins' own lines and the runtime's
_LOGGERS = ("edged.plugin", "edged.runtime")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_handler: logging.Handler | None = None

LogLevel = Literal["trace", "debug", "info", "warn", "error"]


def extism_version() -> str:
    """The Extism runtime version edged is compatible with, tagged with edged's own (``1.41.0+edged.0.1.0``)."""
    return f"{EXTISM_RUNTIME_VERSION}+edged.{__version__}"


def _level(level: str | None) -> int:
    if level is None:
        return logging.ERROR  # Extism's default filter
    try:
        return _LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}: use one of {', '.join(_LEVELS)}") from None


def _install(handler: logging.Handler, level: int) -> None:
    """Make ``handler`` the process's one Extism log destination (as the SDK's log setting is global)."""
    global _handler
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(_FORMAT))
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _handler is not None:
            logger.removeHandler(_handler)
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > level:
            logger.setLevel(level)
    if _handler is not None:
        _handler.close()
    _handler = handler


def set_log_file(file: str, level: LogLevel | None = None) -> None:
    """Send plugin and runtime log lines at ``level`` or above (default ``error``) to ``file``; the names
    ``stdout`` and ``stderr`` mean those streams. Global, as in the SDK. Plugins created afterwards see the level
    through ``get_log_level``."""
    import sys

    handler: logging.Handler
    if file in ("stdout", "stderr"):
        handler = logging.StreamHandler(sys.stdout if file == "stdout" else sys.stderr)
    else:
        handler = logging.FileHandler(file, encoding="utf-8")
    _install(handler, _level(level))


class CustomLogger:
    """Buffered log lines for :func:`set_log_custom`; :meth:`drain` hands each to the callback."""

    def __init__(self, f: Callable[[str], Any]) -> None:
        self.callback = f
        self._lines: deque[str] = deque(maxlen=100_000)  # bounded: an undrained buffer never eats the host
        self._lock = threading.Lock()

    def set_callback(self, f: Callable[[str], Any]) -> None:
        self.callback = f

    def _append(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def drain(self) -> None:
        """Call the callback with every buffered line, oldest first, and empty the buffer."""
        with self._lock:
            lines = list(self._lines)
            self._lines.clear()
        for line in lines:
            self.callback(line)


class _BufferHandler(logging.Handler):
    def __init__(self, sink: CustomLogger) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink._append(self.format(record))
        except Exception:  # a logging handler never raises into the code that logged
            self.handleError(record)


def set_log_custom(f: Callable[[str], Any], level: LogLevel | None = None) -> CustomLogger:
    """Buffer plugin and runtime log lines at ``level`` or above; the returned logger's ``drain()`` passes them
    to ``f``. Global, as in the SDK."""
    sink = CustomLogger(f)
    _install(_BufferHandler(sink), _level(level))
    return sink


# --- cancellation -------------------------------------------------------------------------------------------------

#: how often (in epoch ticks) a call of a plugin that handed out a cancel handle checks for cancellation
CANCEL_POLL_TICKS = 10

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ctypes.c_uint8),
)
#: the same library under a CDLL of our own, so the prototypes declared here never change wasmtime-py's
_lib = ctypes.CDLL(_ffi.dll._name)
_set_callback = _lib.wasmtime_store_epoch_deadline_callback
_set_callback.restype = None
_set_callback.argtypes = [ctypes.c_void_p, _CALLBACK, ctypes.c_void_p, ctypes.c_void_p]
_error_new = _lib.wasmtime_error_new
_error_new.restype = ctypes.c_void_p
_error_new.argtypes = [ctypes.c_char_p]


class CancelHandle:
    """Stops the plugin's running call from another thread (``Plugin.cancel_handle()``); the call fails with
    :class:`~edged.errors.PluginCancelled`. A cancel with no call running stops nothing."""

    def __init__(self, plugin: Plugin) -> None:
        self._cancellation = plugin._cancellation()

    def cancel(self) -> bool:
        return self._cancellation.cancel()


class Cancellation:
    """The per-plugin state behind :class:`CancelHandle`.

    Cancelling must reach wasm running on another thread, and only the epoch can: a plugin that handed out a
    cancel handle runs each call with an epoch deadline callback that checks, every :data:`CANCEL_POLL_TICKS`,
    whether it was cancelled (and enforces ``timeout_ms`` itself). Those checks run Python, so such a plugin's
    deadlines need the GIL as the old ticker did; plugins without a cancel handle are unaffected.
    """

    def __init__(self, engine: wasmtime.Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._running = False
        self._requested = False
        self._ticking = False
        self.reason: str | None = None
        self.deadline: float | None = None
        self._stores: weakref.WeakSet[wasmtime.Store] = weakref.WeakSet()
        self._callback = _CALLBACK(self._on_epoch)

    def _on_epoch(self, _ctx: Any, _data: Any, delta: Any, kind: Any) -> int:
        if self._requested:
            self.reason = "cancelled"
            return int(_error_new(b"cancelled") or 0)
        now = time.monotonic()
        if self.deadline is not None and now >= self.deadline:
            self.reason = "timeout"
            return int(_error_new(b"timeout") or 0)
        ticks = CANCEL_POLL_TICKS
        if self.deadline is not None:
            ticks = max(1, min(ticks, math.ceil((self.deadline - now) * 1000 / TICK_MS)))
        delta[0] = ticks
        kind[0] = 0  # continue
        return 0

    def begin(self, store: wasmtime.Store, deadline: float | None) -> None:
        """Before a call: install the callback on ``store`` (once) and poll from the next ticks on."""
        if store not in self._stores:
            _set_callback(ctypes.cast(store.ptr(), ctypes.c_void_p), self._callback, None, None)
            self._stores.add(store)
        self.deadline, self.reason = deadline, None
        store.set_epoch_deadline(1)
        with self._lock:
            self._running, self._requested = True, False
        TICKER.arm(self.engine)
        self._ticking = True

    def end(self) -> None:
        with self._lock:
            self._running = self._requested = False
            ticking, self._ticking = self._ticking, False
        if ticking:
            TICKER.disarm(self.engine)
        self.deadline = None

    def cancel(self) -> bool:
        with self._lock:
            if self._running:
                self._requested = True
        return True
