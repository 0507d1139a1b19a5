"""An LED display as the engine sees it: pipeline plus backend, with a clean shutdown."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .backends import (
    BackendConfig,
    EmulatedBackend,
    EmulatedBackendConfig,
    LedBackend,
    SpiBackendConfig,
    create_backend,
)
from .geometry import DisplayConfig
from .pipeline import PixelPipeline, to_rgb

log = logging.getLogger("edged.hardware")


@dataclass
class OutputStats:
    frames: int = 0
    limited: int = 0  # frames the current limiter scaled down


class LedOutput:
    """A :class:`~edged.engine.display.FrameSink` that drives real (or emulated) LEDs.

    ``show`` takes H×W×3 RGB (or H×W×4 RGBA, composited over black) frames at the display's logical size. The
    daemon must call :meth:`close` on exit and on SIGTERM (``with LedOutput(...)`` does it too): it blanks the
    LEDs, then closes the backend. ``close`` is safe to call twice.
    """

    def __init__(self, display: DisplayConfig, backend: LedBackend) -> None:
        self.display = display
        self.backend = backend
        self.pipeline = PixelPipeline(display)
        self.stats = OutputStats()
        self._lock = threading.Lock()
        self._closed = False
        #: set while a live view (``edged.web``) watches: each frame's wire buffer is then kept in :attr:`last` as
        #: (frame number, buffer), a reference to the pipeline's fresh output (no copy); otherwise nothing is kept
        self.keep_last = False
        self.last: tuple[int, np.ndarray] | None = None
        #: called (on the frame thread) after a kept frame: the live view wakes then, in the frame's slack
        self.notify: Callable[[], object] | None = None
        backend.open(display.led_count, display.channels)

    def show(self, frame: np.ndarray) -> None:
        """Send one logical frame through the pipeline to the LEDs."""
        if frame.ndim == 3 and frame.shape[2] == 4:
            frame = to_rgb(frame)
        with self._lock:
            if self._closed:
                raise RuntimeError("LED output is closed")
            buffer = self.pipeline.process(frame)
            self.backend.write(buffer)
            self.stats.frames += 1
            if self.keep_last:
                self.last = (self.stats.frames, buffer)
                if self.notify is not None:
                    self.notify()
            if self.pipeline.last_scale < 1.0:
                self.stats.limited += 1

    def blank(self) -> None:
        """Turn every LED off."""
        with self._lock:
            if not self._closed:
                self.backend.blank()

    def close(self) -> None:
        """Blank the LEDs, then close the backend; safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.backend.blank()
            finally:
                self.backend.close()
        log.info("LED output closed", extra={"frames": self.stats.frames})

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_current_ma(self) -> float:
        return self.pipeline.last_current_ma

    def __enter__(self) -> LedOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_led_output(display: DisplayConfig, backend: BackendConfig | None = None, emulate: bool = False) -> LedOutput:
    """An opened :class:`LedOutput`; with ``emulate=True`` (or no backend config) always the emulated backend."""
    if emulate or backend is None:
        history = backend.history if isinstance(backend, EmulatedBackendConfig) else 256
        return LedOutput(display, EmulatedBackend(history=history))
    if isinstance(backend, SpiBackendConfig) and backend.mode == "leds0" and display.color_order not in ("RGB", "RGBW"):
        raise ConfigError(
            f"the leds0 device takes RGB(W) and orders the wire itself; set color_order to RGB or RGBW, not "
            f"{display.color_order}"
        )
    return LedOutput(display, create_backend(backend))
