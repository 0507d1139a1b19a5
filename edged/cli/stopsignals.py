"""SIGINT and SIGTERM for the commands that run until stopped: ``edged agent``, ``edged preview --serve`` and
``edged market serve`` (``edged run`` has its own, in :mod:`edged.service`)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT or SIGTERM while the block runs, then put the previous handlers back.

    Handlers of its own, not KeyboardInterrupt: a process started with SIGINT ignored (a shell's background job) has
    no KeyboardInterrupt, and SIGTERM must stop it too. Putting the previous ones back matters when the command runs
    in-process (``edged.cli.main`` called by a test or a script): after it returns, Ctrl-C and SIGTERM reach the caller
    again instead of setting an Event nobody waits for. Main thread only, as :func:`signal.signal` is."""
    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
    try:
        for s in STOP_SIGNALS:
            previous[s] = signal.signal(s, lambda _signum, _frame: stop.set())
        yield
    finally:
        for s, handler in previous.items():
            # None: the previous handler was not set from Python (nor can be restored from it); the default then
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
