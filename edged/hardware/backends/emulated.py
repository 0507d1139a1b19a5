"""The emulated backend: keeps recent physical frames in memory with monotonic timestamps."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class EmulatedBackendConfig(BaseModel):
    """``type = "emulated"``: frames stay in memory (tests, the terminal renderer, ``edged preview``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["emulated"] = "emulated"
    history: int = Field(256, ge=1, le=100_000, description="how many recent frames to keep")


@dataclass(frozen=True, slots=True)
class EmulatedFrame:
    """One frame as it would have reached the LEDs: ``t`` from the backend's clock, ``data`` leds×channels."""

    t: float
    data: np.ndarray


class EmulatedBackend:
    """A real backend that records instead of lighting LEDs. Thread-safe: the engine writes from its thread while
    a renderer or test reads from another."""

    def __init__(self, history: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self._frames: deque[EmulatedFrame] = deque(maxlen=history)
        self._clock = clock
        self._lock = threading.Lock()
        self.frame_count = 0
        self.leds = 0
        self.channels = 0
        self.is_open = False
        self.closed = False

    def open(self, leds: int, channels: int) -> None:
        self.leds, self.channels = leds, channels
        self.is_open, self.closed = True, False

    def write(self, buffer: np.ndarray) -> None:
        if not self.is_open:
            raise RuntimeError("emulated backend is not open")
        if buffer.shape != (self.leds, self.channels):
            raise ValueError(f"expected a {self.leds}×{self.channels} buffer, got {buffer.shape}")
        frame = EmulatedFrame(self._clock(), np.array(buffer, dtype=np.uint8, copy=True))
        with self._lock:
            self._frames.append(frame)
            self.frame_count += 1

    def blank(self) -> None:
        self.write(np.zeros((self.leds, self.channels), dtype=np.uint8))

    def close(self) -> None:
        self.is_open, self.closed = False, True

    def latest(self) -> EmulatedFrame | None:
        """The most recent frame, or ``None`` before the first."""
        with self._lock:
            return self._frames[-1] if self._frames else None

    def frames(self) -> list[EmulatedFrame]:
        """A snapshot of the kept frames, oldest first."""
        with self._lock:
            return list(self._frames)
