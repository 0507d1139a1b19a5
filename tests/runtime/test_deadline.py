"""Issue 14, point 4: a deadline fires on time even while other Python threads keep the GIL busy.

The epoch ticker used to be a Python thread: every tick needed the GIL, so with busy threads a 500 ms deadline
fired hundreds of milliseconds late (seconds, with two threads hogging it). The bounds below are generous on purpose:
they tell a deadline that does not depend on the GIL from one that does, never a fast machine from a slow one.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from edged.runtime import Plugin, PluginTimeout
from edged.runtime._engine import TICKER
from tests.runtime.wats import KITCHEN


def _hog(stop: threading.Event) -> None:
    n = 0
    while not stop.is_set():  # pure bytecode: holds the GIL except at forced switches
        for _ in range(10_000):
            n += 1


def test_a_deadline_fires_while_two_threads_hog_the_gil() -> None:
    assert TICKER.kind == "native", "Linux glibc has POSIX timers: the GIL-free ticker must be in use"
    plugin = Plugin(KITCHEN, timeout_ms=500)
    stop = threading.Event()
    hogs = [threading.Thread(target=_hog, args=(stop,)) for _ in range(2)]
    for t in hogs:
        t.start()
    try:
        elapsed = []
        for _ in range(3):
            start = time.monotonic()
            with pytest.raises(PluginTimeout, match="^timeout$"):
                plugin.call("spin")
            elapsed.append(time.monotonic() - start)
    finally:
        stop.set()
        for t in hogs:
            t.join()
    assert min(elapsed) >= 0.5  # never early
    assert max(elapsed) < 0.5 + 2.0, elapsed  # the old Python-thread ticker took several seconds here
    assert plugin.call("echo", "ok") == b"ok"


def test_the_thread_ticker_fallback_still_enforces_deadlines() -> None:
    """Where there are no POSIX timers (or EDGED_EPOCH_TICKER=thread), a Python thread ticks instead."""
    code = (
        "import time\n"
        "from edged.runtime import Plugin, PluginTimeout\n"
        "from edged.runtime._engine import TICKER\n"
        "from tests.runtime.wats import KITCHEN\n"
        "assert TICKER.kind == 'thread'\n"
        "t = time.monotonic()\n"
        "try:\n"
        "    Plugin(KITCHEN, timeout_ms=100).call('spin')\n"
        "except PluginTimeout:\n"
        "    print('timeout', time.monotonic() - t >= 0.1)\n"
    )
    env = {**__import__("os").environ, "EDGED_EPOCH_TICKER": "thread"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "timeout True"


def test_a_forked_child_gets_its_own_timers() -> None:
    import os

    Plugin(KITCHEN, timeout_ms=20).call("echo", "x")  # timers exist in the parent
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            Plugin(KITCHEN, timeout_ms=50).call("spin")
        except PluginTimeout:
            code = 0
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
