"""The live view's frames: what each display's LEDs show, taken from the LED output as it is written.

While nobody watches, the LED outputs keep nothing (:attr:`~edged.hardware.output.LedOutput.keep_last` is off, one
attribute test per frame). From the first viewer on, each output keeps a reference to its latest wire buffer; the
hub turns it back into the logical image (:meth:`~edged.hardware.pipeline.PixelPipeline.inverse`: wiring and
colour order undone, brightness, limiter and power kept, gamma mapped back for a screen) once per frame shown,
however many viewers there are, on the web server's thread, never on a frame thread. The streams are woken by
the frame thread right after it showed a frame, so the web server works while the frame thread renders the next one
ahead (when the Python GIL changing hands costs nothing), not at a frame's deadline.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..daemon.daemon import Daemon
    from ..hardware.output import LedOutput


class LiveHub:
    """Counts viewers, switches the outputs' keeping on and off, and encodes each frame once for all."""

    def __init__(self, daemon: Daemon, fps_max: float) -> None:
        self.daemon = daemon
        self.fps_max = fps_max
        self.viewers = 0
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, str]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def _wake(self) -> None:  # on the event loop
        if self._event is not None:
            event, self._event = self._event, asyncio.Event()
            event.set()

    def _notify(self) -> None:  # on a frame thread
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._wake)

    async def next_frame(self, timeout: float) -> None:
        """Wait (on the event loop) until some display showed a frame, at most ``timeout`` seconds."""
        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)

    def _outputs(self) -> dict[str, LedOutput]:
        outs: dict[str, LedOutput] = {}
        for name in list(self.daemon.displays):
            try:
                out = self.daemon.led_output(name)
            except KeyError:  # removed by a reload in between
                continue
            if out is not None:
                outs[name] = out
        return outs

    def attach(self) -> None:
        """A viewer's stream starts (called on the event loop)."""
        if self._event is None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()
        with self._lock:
            self.viewers += 1
        self.keep()

    def keep(self) -> None:
        """Make every display's output keep its frames (again after a reload added or rebuilt one)."""
        if self.viewers > 0:
            for out in self._outputs().values():
                out.notify = self._notify
                out.keep_last = True

    def detach(self) -> None:
        with self._lock:
            self.viewers -= 1
            last = self.viewers == 0
        if last:
            for out in self._outputs().values():
                out.keep_last = False
                out.notify = None
                out.last = None
            self._cache.clear()

    def min_interval(self) -> float:
        """The shortest time between two frames sent to a viewer: the cap's period, less half a display period, so
        that frames a little late on the display's grid are not skipped."""
        rates: list[float] = [rd.runner.fps for rd in list(self.daemon.displays.values())] or [self.fps_max]
        return max(0.0, 1.0 / self.fps_max - 0.5 / max(rates))

    def frame(self, name: str) -> tuple[int, str] | None:
        """(frame number, the SSE data line) of a display's latest frame, or None before the first."""
        try:
            out: LedOutput | None = self.daemon.led_output(name)
        except KeyError:
            return None
        if out is None:
            return None
        last = out.last
        if last is None:
            return None
        seq, buffer = last
        cached = self._cache.get(name)
        if cached is not None and cached[0] == seq:
            return cached
        image = out.pipeline.inverse(buffer)
        doc = {
            "display": name,
            "seq": seq,
            "width": image.shape[1],
            "height": image.shape[0],
            "rgb": base64.b64encode(image.tobytes()).decode(),
        }
        item = (seq, json.dumps(doc, separators=(",", ":")))
        self._cache[name] = item
        return item
