"""LED backends: where the pipeline's wire-order buffer goes.

A backend implements :class:`LedBackend`. It must provide ``open(leds, channels)``, ``write(buffer)`` (an
``leds × channels`` uint8 array already in wire order), ``blank()`` (all LEDs off) and ``close()`` (safe to call
twice). Which one is used is configured by a :data:`BackendConfig` (a union on ``type``). Hardware libraries are
imported lazily, inside the backend that needs them, so importing :mod:`edged.hardware` never imports
``rpi_ws281x`` or ``spidev``.
"""

from __future__ import annotations

from typing import Annotated, Protocol, runtime_checkable

import numpy as np
from pydantic import Field

from .emulated import EmulatedBackend, EmulatedBackendConfig, EmulatedFrame
from .spi import SpiBackend, SpiBackendConfig, encode_ws2812
from .ws281x import PI_MODEL_PATH, Ws281xBackend, Ws281xBackendConfig, read_pi_model


@runtime_checkable
class LedBackend(Protocol):
    """What every LED backend provides."""

    def open(self, leds: int, channels: int) -> None: ...

    def write(self, buffer: np.ndarray) -> None: ...

    def blank(self) -> None: ...

    def close(self) -> None: ...


BackendConfig = Annotated[
    EmulatedBackendConfig | Ws281xBackendConfig | SpiBackendConfig,
    Field(discriminator="type"),
]


def create_backend(cfg: EmulatedBackendConfig | Ws281xBackendConfig | SpiBackendConfig) -> LedBackend:
    """A backend for ``cfg`` (not yet opened). Real backends refuse here when this machine cannot run them."""
    if isinstance(cfg, EmulatedBackendConfig):
        return EmulatedBackend(history=cfg.history)
    if isinstance(cfg, Ws281xBackendConfig):
        return Ws281xBackend(cfg)
    return SpiBackend(cfg)


__all__ = [
    "PI_MODEL_PATH",
    "BackendConfig",
    "EmulatedBackend",
    "EmulatedBackendConfig",
    "EmulatedFrame",
    "LedBackend",
    "SpiBackend",
    "SpiBackendConfig",
    "Ws281xBackend",
    "Ws281xBackendConfig",
    "create_backend",
    "encode_ws2812",
    "read_pi_model",
]
