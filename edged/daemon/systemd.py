"""Running under systemd: readiness, a frame-driven watchdog, status lines and journal-friendly logs.

The notification protocol is sd_notify(3): newline-separated ``KEY=value`` datagrams sent to the AF_UNIX socket named
by ``$NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace). Without that variable (not a ``Type=notify``
service) everything here is a no-op.

- ``READY=1`` once the whole service has started (the deploy agent, web and control socket too) and every display
  has drawn its first frame (on a device without displays: once the service has started).
- ``WATCHDOG=1`` only while the frame loops keep their pace: a ping goes out (from a frame or from the main loop)
  only when every display drew a frame within its own frame interval plus a third of ``WatchdogSec=``; on a device
  with sensor plugins only, while the sensor loop is not stuck in one round. A stalled loop stops the pings and
  systemd restarts the service. There is no thread that pings regardless, and a slow display (a clock at 0.05 fps)
  is not mistaken for a stalled one.
- ``STATUS=`` every few seconds: each display's measured fps, the quarantined plugins, whether MQTT is connected.
- ``STOPPING=1`` when shutdown begins.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .logs import _STANDARD

log = logging.getLogger("edged.daemon")


class SdNotify:
    """Sends sd_notify(3) messages to ``$NOTIFY_SOCKET``; ``enabled`` is False when there is none."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr = "\0" + addr[1:] if addr.startswith("@") else addr
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        if self._addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=value`` lines; False (logged once at debug) if it could not be delivered."""
        if self._sock is None:
            return False
        data = "\n".join(lines).encode()
        with self._lock:
            try:
                self._sock.sendto(data, self._addr)
            except OSError as exc:
                log.debug("sd_notify failed: %s", exc, extra={"socket": self._addr})
                return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The ``WatchdogSec=`` systemd gave this process, in seconds (None when there is no watchdog for it)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1e6


class _Runner(Protocol):
    name: str
    fps: float


class _Daemon(Protocol):
    @property
    def displays(self) -> Mapping[str, Any]: ...

    def list_plugins(self) -> list[dict[str, Any]]: ...

    def sensor_loop_busy_s(self) -> float | None: ...


class ServiceHealth:
    """Readiness, watchdog and status for a running daemon. Call :meth:`frame` after each frame of each display
    (the daemon's ``on_frame`` hook), :meth:`poll` regularly from the main loop, :meth:`service_started` once every
    part of the service runs, and :meth:`stopping` on shutdown."""

    def __init__(
        self,
        daemon: _Daemon,
        notify: SdNotify,
        *,
        mqtt_connected: Callable[[], bool] | None = None,
        watchdog_s: float | None = None,
        status_every_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.daemon = daemon
        self.notify = notify
        self.mqtt_connected = mqtt_connected
        self.watchdog_s = watchdog_s
        self.status_every_s = status_every_s
        self.clock = clock
        self.ready = False
        self.pings = 0
        self._service_started = False
        self._lock = threading.Lock()
        self._ticks: dict[str, float] = {}  # display -> time of its latest frame
        self._frames: dict[str, tuple[float, int]] = {}  # display -> (time, frames) at the previous status
        self._counts: dict[str, int] = {}
        self._first: dict[str, float] = {}  # display -> time of its first frame
        self._interval: dict[str, float] = {}  # display -> its frame interval (1 / fps)
        self._last_ping = clock()
        self._last_status = float("-inf")

    def _displays(self) -> set[str]:
        try:
            return set(self.daemon.displays)
        except RuntimeError:  # changed size while a reload swapped a display in: use what we saw before
            return set(self._ticks)

    def frame(self, runner: _Runner) -> None:
        """A display drew a frame (called on its frame thread)."""
        now = self.clock()
        with self._lock:
            self._ticks[runner.name] = now
            self._interval[runner.name] = 1.0 / runner.fps if runner.fps > 0 else 0.0
            self._first.setdefault(runner.name, now)
            self._counts[runner.name] = self._counts.get(runner.name, 0) + 1
            if not self.ready:
                if self._service_started and self._displays() <= set(self._ticks):
                    self._ready()
                return
            self._maybe_ping(now)

    def service_started(self) -> None:
        """Every part of the service runs (called last in start-up): READY=1 now if the displays have drawn their
        first frames, else with the first frame that completes them."""
        with self._lock:
            self._service_started = True
            if not self.ready and self._displays() <= set(self._ticks):
                self._ready()

    def _maybe_ping(self, now: float) -> None:
        """Send WATCHDOG=1 if a third of the watchdog interval passed and nothing stalled (holding the lock)."""
        if self.watchdog_s is None or now - self._last_ping < self.watchdog_s / 3:
            return
        grace = self.watchdog_s / 3
        expected = self._displays()
        if expected:
            # each display drew within its own frame interval (plus the grace): one stalled display stops the pings
            if any(
                now - self._ticks.get(name, float("-inf")) > self._interval.get(name, 0.0) + grace for name in expected
            ):
                return
        else:
            busy = self.daemon.sensor_loop_busy_s()
            if busy is not None and busy > grace:  # the sensor loop is stuck in one round (or its thread died)
                return
        self._last_ping = now
        if self.notify.send("WATCHDOG=1"):
            self.pings += 1

    def _ready(self) -> None:
        # often on a frame thread: no status line here (it takes the daemon's lock, which a reload may hold while it
        # waits for this very thread); the main loop's poll sends one a second later, when the fps can be measured
        self.ready = True
        self._last_ping = self.clock()
        self._last_status = self._last_ping - self.status_every_s + 1.0  # a status with measured fps 1 s later
        self.notify.send("READY=1")
        log.info("ready: started, first frame drawn", extra={"displays": sorted(self._ticks)})

    def poll(self) -> None:
        """From the main loop: status lines every ``status_every_s``; readiness for a device without displays (it
        has no frame hook); watchdog pings while the frame and sensor loops keep their pace (a slow display draws
        less often than the watchdog needs pings)."""
        now = self.clock()
        with self._lock:
            if not self.ready:
                if self._service_started and not self._displays():
                    self._ready()
            else:
                self._maybe_ping(now)
        if now - self._last_status >= self.status_every_s:
            self._last_status = now
            self.notify.send(f"STATUS={self.status_line()}")

    def status_line(self) -> str:
        """``main 29.8 fps; 1 quarantined (fire); mqtt connected`` (what ``systemctl status`` shows)."""
        now = self.clock()
        parts = []
        with self._lock:
            counts = dict(self._counts)
            first = dict(self._first)
        for name in sorted(self._displays()):
            frames = counts.get(name, 0)
            # since the previous status line, else since the first frame (counted from the second one on)
            sampled = name in self._frames
            then, before = self._frames.get(name, (first.get(name), 1))
            self._frames[name] = (now, frames)
            if then is None or now <= then or (not sampled and frames <= before):
                parts.append(f"{name} starting")
            elif frames == before:
                parts.append(f"{name} stalled")
            else:
                parts.append(f"{name} {(frames - before) / (now - then):.1f} fps")
        if not parts:
            parts.append("no displays")
        try:
            quarantined = sorted({p["plugin"] for p in self.daemon.list_plugins() if p.get("quarantined")})
        except RuntimeError:
            quarantined = []
        parts.append(f"{len(quarantined)} quarantined" + (f" ({', '.join(quarantined)})" if quarantined else ""))
        if self.mqtt_connected is None:
            parts.append("no mqtt")
        else:
            parts.append("mqtt connected" if self.mqtt_connected() else "mqtt disconnected")
        return "; ".join(parts)

    def stopping(self) -> None:
        self.notify.send("STOPPING=1", "STATUS=stopping")


def under_journal(stream: Any) -> bool:
    """Is ``stream`` (stderr) connected to the systemd journal? (``$JOURNAL_STREAM`` names its device:inode.)"""
    want = os.environ.get("JOURNAL_STREAM", "")
    if not want:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return want == f"{st.st_dev}:{st.st_ino}"


_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """One line per record for the journal: a ``<N>`` syslog priority prefix (journald turns it into the record's
    priority), no timestamp (the journal has its own), the logger, the message and the ``extra`` context as
    ``key=value`` pairs (plugin, version, display, reason, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 5 if record.levelno > logging.INFO else 7)
        context = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_"))
        line = f"<{prio}>{record.name}: {record.getMessage()}" + (f" [{context}]" if context else "")
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return line
