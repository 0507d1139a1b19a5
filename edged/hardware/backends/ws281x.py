"""The rpi_ws281x backend (PWM, PCM or SPI on a Pi 3/4).

``rpi_ws281x`` is imported only inside :meth:`Ws281xBackend.open`, and the backend refuses to be created unless
``/proc/device-tree/model`` names a Raspberry Pi it supports: constructing a ``PixelStrip`` anywhere else
registers an exit handler that segfaults the interpreter, and on a Pi 5 the library reports "Hardware revision is
not supported".
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...errors import BackendUnavailable
from ..access import device_problem

log = logging.getLogger("edged.hardware")

PI_MODEL_PATH = Path("/proc/device-tree/model")

#: data pins rpi_ws281x can drive, and the PWM channel each needs (PCM on 21 and SPI on 10 use channel 0)
_PIN_CHANNEL = {10: 0, 12: 0, 18: 0, 21: 0, 13: 1, 19: 1}


class Ws281xBackendConfig(BaseModel):
    """``type = "ws281x"``: rpi_ws281x on GPIO 18/12 (PWM0), 13/19 (PWM1), 21 (PCM) or 10 (SPI)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["ws281x"] = "ws281x"
    gpio: Literal[10, 12, 13, 18, 19, 21] = 18
    dma: int = Field(10, ge=0, le=14, description="DMA channel; 10 is safe, 5 corrupted filesystems on a Pi 3")
    frequency: int = Field(800_000, ge=400_000, le=800_000)
    invert: bool = Field(False, description="true behind an inverting level shifter")

    @field_validator("dma")
    @classmethod
    def _not_dma5(cls, v: int) -> int:
        if v == 5:
            raise ValueError("DMA channel 5 has corrupted filesystems on a Pi 3; use 10")
        return v

    @property
    def channel(self) -> int:
        return _PIN_CHANNEL[self.gpio]


_SPI_ROUTE = 'type = "spi", mode = "spidev" (GPIO 10, /dev/spidev0.0; the user in the spi group)'
_ROUTES = f'on a Pi 5 use the spi backend: {_SPI_ROUTE}, or mode = "leds0" (the ws2812-pio overlay)'


class _Captured:
    text = ""


@contextmanager
def _c_stderr() -> Iterator[_Captured]:
    """Capture what C code writes to file descriptor 2 while the block runs."""
    captured = _Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read(4096).decode("utf-8", "replace")


def read_pi_model(path: Path = PI_MODEL_PATH) -> str | None:
    """The board's model string from the device tree, or ``None`` when there is none (not a Pi, or no access)."""
    try:
        return path.read_bytes().rstrip(b"\x00\n").decode("utf-8", "replace")
    except OSError:
        return None


def _is_pi5_family(model: str) -> bool:
    return any(k in model for k in ("Raspberry Pi 5", "Raspberry Pi 500", "Compute Module 5"))


class Ws281xBackend:
    """Drives WS2812/SK6812 LEDs through rpi_ws281x. The buffer arrives in wire order already, so the library is
    told the strip is plain RGB (or RGBW) and does no reordering of its own."""

    def __init__(self, cfg: Ws281xBackendConfig, *, model_path: Path = PI_MODEL_PATH) -> None:
        model = read_pi_model(model_path)
        if model is None or "Raspberry Pi" not in model:
            raise BackendUnavailable(
                f"the ws281x backend needs a Raspberry Pi 3/4 (this machine reports {model or 'no Pi model'} at "
                f"{model_path}); use the emulated backend (edged preview, --emulate) off a Pi"
            )
        if _is_pi5_family(model):
            raise BackendUnavailable(
                f'rpi_ws281x does not support the {model} ("Hardware revision is not supported"); on a Pi 5 use '
                'the spi backend: type = "spi" with mode = "spidev" (GPIO 10, /dev/spidev0.0) or mode = "leds0" '
                "(the ws2812-pio overlay's /dev/leds0)"
            )
        self.cfg = cfg
        self.model = model
        self._strip: Any = None
        self._channels = 3

    def open(self, leds: int, channels: int) -> None:
        try:
            import rpi_ws281x  # only here: constructing PixelStrip off a Pi segfaults at exit
        except ImportError:
            raise BackendUnavailable(
                "the ws281x backend needs rpi_ws281x, from the [pi] extra: pip install 'edged[pi]' (it builds from "
                "source: sudo apt install gcc python3-dev first; see README, Supported platforms)"
            ) from None

        strip_type = rpi_ws281x.SK6812_STRIP_RGBW if channels == 4 else rpi_ws281x.WS2811_STRIP_RGB
        self._channels = channels
        strip = rpi_ws281x.PixelStrip(
            leds, self.cfg.gpio, self.cfg.frequency, self.cfg.dma, self.cfg.invert, 255, self.cfg.channel, strip_type
        )
        try:
            with _c_stderr() as said:  # the C driver perror()s its own lines: they join the one message instead
                strip.begin()
        except RuntimeError as exc:
            # PixelStrip registered an exit handler that runs ws2811_fini on the half-initialised driver: that
            # segfaults the interpreter at exit (rc 139, and systemd restarts it forever). Drop the handler and free
            # only the struct, so the failure stays an ordinary error.
            atexit.unregister(strip._cleanup)
            leds_t, strip._leds = strip._leds, None
            if leds_t is not None:
                rpi_ws281x.rpi_ws281x.ws.delete_ws2811_t(leds_t)
            detail = " ".join(said.text.split())
            raise BackendUnavailable(self._explain(str(exc)) + (f" [driver: {detail}]" if detail else "")) from None
        self._strip = strip
        log.info("ws281x open", extra={"leds": leds, "gpio": self.cfg.gpio, "model": self.model})

    def _explain(self, error: str) -> str:
        """rpi_ws281x's ``begin()`` error, with what to do about it."""
        m = re.search(r"code (-?\d+)", error)
        code = int(m.group(1)) if m else None
        m2 = re.search(r"\((.*)\)$", error)
        said = f"rpi_ws281x could not start on GPIO {self.cfg.gpio}: {m2.group(1) if m2 else error}"
        if code is not None:
            said += f" (code {code})"
        if code == -3:
            return f"{said}: it does not support this board ({self.model}); {_ROUTES}"
        if code in (-4, -5, -6, -9, -10) or (code == -7 and os.geteuid() != 0):
            if os.geteuid() != 0:
                return (
                    f"{said}: PWM/PCM output needs root (/dev/mem and the VideoCore mailbox): install the root "
                    "drop-in (deploy/pi/install --ws281x-root, see docs/install-pi.md) or run edged with sudo; or "
                    f"wire the strip to GPIO 10 and use SPI (no root): {_SPI_ROUTE}"
                )
            return f"{said}: the driver could not map the hardware; is another LED driver or audio using it?"
        if code == -8:
            return f"{said}: PWM is taken by the onboard audio: blacklist snd_bcm2835 (or dtparam=audio=off)"
        if code in (-13, -14):
            problem = device_problem("/dev/spidev0.0")
            return f"{said}: {problem or 'SPI failed'}; raise spidev.bufsiz for long strips (docs/hardware.md)"
        if code == -11:
            return f"{said}: use GPIO 18/12 (PWM0), 13/19 (PWM1), 21 (PCM) or 10 (SPI)"
        return said

    def write(self, buffer: np.ndarray) -> None:
        if self._strip is None:
            raise RuntimeError("ws281x backend is not open")
        b = buffer.astype(np.uint32)
        packed = (b[:, 0] << 16) | (b[:, 1] << 8) | b[:, 2]
        if self._channels == 4:
            packed |= b[:, 3] << 24
        for i, value in enumerate(packed.tolist()):  # the library's own API is per LED
            self._strip.setPixelColor(i, value)
        self._strip.show()

    def blank(self) -> None:
        if self._strip is not None:
            for i in range(self._strip.numPixels()):
                self._strip.setPixelColor(i, 0)
            self._strip.show()

    def close(self) -> None:
        strip, self._strip = self._strip, None
        if strip is not None:
            strip._cleanup()
