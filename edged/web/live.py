"""The live view's frames: what each display's LEDs show, taken from the LED output as it is written.

While nobody watches, the LED outputs keep nothing (:attr:`~edged.hardware.output.LedOutput.keep_last` is off, one
attribute test per frame). From the first viewer on, each output keeps a reference to its latest wire buffer; the
hub turns it back into the logical image (:meth:`~edged.hardware.pipeline.PixelPipeline.inverse`: wiring and
colour order undone, brightness, limiter and power kept, gamma mapped back for a screen) once per frame shown,
however many viewers there are, on the web server's thread, never on a frame thread.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any


class LiveHub:
    """Counts viewers, switches the outputs' keeping on and off, and encodes each frame once for all."""

    def __init__(self, daemon: Any, fps_max: float) -> None:
        self.daemon = daemon
        self.fps_max = fps_max
        self.viewers = 0
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[int, str]] = {}

    def _outputs(self) -> dict[str, Any]:
        outs = {}
        for name in list(self.daemon.displays):
            try:
                out = self.daemon.led_output(name)
            except KeyError:  # removed by a reload in between
                continue
            if out is not None:
                outs[name] = out
        return outs

    def attach(self) -> None:
        with self._lock:
            self.viewers += 1
        self.keep()

    def keep(self) -> None:
        """Make every display's output keep its frames (again after a reload added or rebuilt one)."""
        if self.viewers > 0:
            for out in self._outputs().values():
                out.keep_last = True

    def detach(self) -> None:
        with self._lock:
            self.viewers -= 1
            last = self.viewers == 0
        if last:
            for out in self._outputs().values():
                out.keep_last = False
                out.last = None
            self._cache.clear()

    def period(self) -> float:
        """How often a viewer's stream looks for new frames: the fastest display's rate, capped."""
        rates = [rd.runner.fps for rd in list(self.daemon.displays.values())] or [1.0]
        return 1.0 / min(max(rates), self.fps_max)

    def frame(self, name: str) -> tuple[int, str] | None:
        """(frame number, the SSE data line) of a display's latest frame, or None before the first."""
        try:
            out = self.daemon.led_output(name)
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
